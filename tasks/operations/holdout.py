"""Your own labelled holdout, from proposal to `data/holdout/`: the steps behind `alpr-ops label ...`.

propose: frames of the videos reserved for labelling, pre-labelled by the base detector, as a folder any annotation
tool takes (images, YOLO pre-labels, a Label Studio import file). push/pull: the same through Label Studio's REST
API. import: a YOLO export from another tool. Every way in goes through the one label checker and writes the holdout
atomically, with `holdout.json` naming the videos it came from (they stay out of calibration for good).
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.operations import label_studio as ls
from tasks.operations.labelling import PROPOSAL_JSON, Proposal, propose
from tasks.pipeline.extract import videos_to_label
from tasks.pipeline.labels import (
    HoldoutItem,
    LabelError,
    LabelSet,
    check_labels,
    compare_to_prelabels,
    holdout_videos,
    import_yolo,
    read_label_file,
    read_small_text,
    write_holdout,
)
from tasks.support.config import Params
from tasks.support.errors import Remedy
from tasks.support.fsutil import atomic_write_text
from tasks.support.videos import list_videos

log = logging.getLogger(__name__)

LABEL_STUDIO_DIR = "label_studio"  # in the proposal: tasks.json, config.xml, instructions.html
MAX_PROPOSAL_BYTES = 16 * 2**20  # proposal.json: ~200 bytes a frame; an export's may be any file (/dev/zero)


def propose_holdout(params: Params) -> Proposal:
    """Sample and pre-label frames of the reserved videos into `paths.label_proposal`, with a Label Studio import
    file beside them."""
    p = params.paths
    reserved = videos_to_label(p.videos, p.holdout, params.label, p.frame_cache)
    if not reserved:
        raise LabelError(
            f"no video of {p.videos} to propose frames from (label.videos is empty, no labelled holdout names its "
            "videos, and label.fraction picks none: it needs two videos or more and a fraction above 0)",
            remedy=Remedy.PARAMS,
        )
    proposal = propose(
        [p.videos / name for name in reserved], p.label_proposal, p.model, params.label, params.extract,
        params.build.imgsz,  # the detector's boxes at the input size the gate runs
    )  # fmt: skip
    write_label_studio_import(p.label_proposal, params.model.names)
    return proposal


def write_label_studio_import(proposal_dir: Path, names: tuple[str, ...]) -> Path:
    """`label_studio/`: the labelling config, the instructions, and `tasks.json` (one task per frame with the
    pre-labels as predictions). The image URLs are Label Studio's local-file URLs relative to the proposal's parent
    folder (serve it with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT
    set to that folder); `alpr-ops label push` uploads the files instead and needs none of this."""
    from PIL import Image

    out = proposal_dir / LABEL_STUDIO_DIR
    out.mkdir(exist_ok=True)
    config = ls.label_config(names)
    from_name, to_name, labels = ls.interface(config)
    tasks = []
    for image in ls.proposal_images(proposal_dir):
        with Image.open(image) as im:
            size = im.size
        regions = [
            ls.yolo_to_region(box, labels[box.cls], size, (from_name, to_name))
            for box in ls.read_prelabels(proposal_dir / "labels" / f"{image.stem}.txt", labels)
        ]
        rel = image.relative_to(proposal_dir.parent).as_posix()
        tasks.append(
            {
                "data": {"image": f"/data/local-files/?d={rel}", "source_file": image.name},
                "predictions": [{"model_version": "prelabel", "result": regions}],
            }
        )
    atomic_write_text(out / "config.xml", config)
    atomic_write_text(out / "instructions.html", ls.instructions())
    atomic_write_text(out / "tasks.json", json.dumps(tasks, indent=1))
    return out


@dataclass(frozen=True)
class PulledHoldout:
    holdout: LabelSet
    project_url: str
    reviewed: int
    skipped: tuple[str, ...]
    unreviewed: tuple[str, ...]
    review: dict[str, Any]  # how the reviewed boxes differ from the pre-labels


def pull_holdout(client: ls.LabelStudio, params: Params) -> PulledHoldout:
    """The reviewed frames of the Label Studio project `label.project` become `paths.holdout` (checked, written
    atomically); unreviewed and skipped frames are left out and counted."""
    p, names = params.paths, params.model.names
    proposal = _proposal_info(p.label_proposal)
    pulled = ls.pull(client, params.label.project, names)
    if not pulled.reviewed:
        raise LabelError(
            f"no frame of the Label Studio project {params.label.project!r} is reviewed yet "
            f"({len(pulled.unreviewed)} unreviewed, {len(pulled.skipped)} skipped): {pulled.url}"
        )
    reviewed = dict(sorted(pulled.reviewed.items()))
    prelabels = {}
    for name in reviewed:
        label = p.label_proposal / "labels" / f"{Path(name).stem}.txt"
        boxes, problems = read_label_file(label, len(names), names, scores=True)
        if problems:
            raise LabelError(f"the pre-labels of {name} cannot be read", problems=problems)
        prelabels[name] = boxes
    review = compare_to_prelabels(reviewed, prelabels)
    info = {
        "source": "label-studio",
        "project": pulled.title,
        "project_id": pulled.project_id,
        "url": pulled.url,
        "videos": proposal.get("videos", []),
        "reviewed": len(reviewed),
        "skipped": sorted(pulled.skipped),
        "unreviewed": sorted(pulled.unreviewed),
        "review": review,
    }
    with tempfile.TemporaryDirectory(prefix="alpr-pull-") as tmp:
        files = ls.download_images(client, pulled, Path(tmp))
        items = [HoldoutItem(name, files[name], boxes) for name, boxes in reviewed.items()]
        holdout = write_holdout(p.holdout, items, info, names=names)
    log.info(
        "holdout %s: %d reviewed frames (%d boxes); %d unreviewed and %d skipped left out; review: %s",
        p.holdout, len(items), holdout.boxes, len(pulled.unreviewed), len(pulled.skipped), review,
    )  # fmt: skip
    return PulledHoldout(holdout, pulled.url, len(items), tuple(pulled.skipped), tuple(pulled.unreviewed), review)


def import_holdout(src: Path, params: Params, videos: tuple[str, ...] = ()) -> LabelSet:
    """A YOLO export from another annotation tool becomes `paths.holdout`. Its videos: `videos` (each a video in
    `paths.videos`, by file name), else those of the proposal the export came from (`proposal.json` in `src` or in
    `paths.label_proposal`)."""
    p = params.paths
    if videos:
        check_video_names(videos, p.videos)
    else:
        for folder in (src, p.label_proposal):
            if os.path.lexists(folder / PROPOSAL_JSON):  # a broken symlink too: named, not taken for "none here"
                videos = tuple(holdout_videos(_proposal_info(folder)))
                break
    if not videos:
        raise LabelError(
            f"{src}: which videos are these frames from? No proposal.json here or in {p.label_proposal}; name "
            "them (they stay out of calibration for good)",
            remedy=Remedy.PARAMS,
        )
    info: dict[str, Any] = {"source": "yolo-import", "videos": sorted(videos)}
    review = _review_against_proposal(src, p.label_proposal, params.model.names)
    if review is not None:
        info["review"] = review
    return import_yolo(src, p.holdout, params.model.names, info)


def check_video_names(names: tuple[str, ...], videos_dir: Path) -> None:
    """Each of `names` must be the file name of a video in `videos_dir` (`paths.videos`): the holdout's videos are
    kept out of calibration by name, so a typo would reserve nothing and let their frames into calibration."""
    present = {v.name for v in list_videos(videos_dir)[0]} if videos_dir.is_dir() else set()
    problems = []
    for name in sorted(set(names)):
        if not name or name in {".", ".."} or name != Path(name).name or "\\" in name:
            problems.append(f"{name!r}: not a plain file name; name a video of paths.videos by its file name")
        elif name not in present:
            close = difflib.get_close_matches(name, sorted(present), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"{name}: no such video in paths.videos{hint}")
    if problems:
        held = f"{len(present)} videos" if present else "no video" if videos_dir.is_dir() else "does not exist"
        raise LabelError(
            f"the videos the frames come from must be in paths.videos ({videos_dir}: {held}), named by file name "
            "(they are kept out of calibration by name):" + "".join(f"\n  {p}" for p in problems),
            problems,
            remedy=Remedy.PARAMS,
            videos_dir=str(videos_dir),
        )


def _review_against_proposal(src: Path, proposal_dir: Path, names: tuple[str, ...]) -> dict[str, Any] | None:
    """How an export's boxes differ from the proposal's pre-labels, when every exported frame is a proposal frame
    (None otherwise: frames from elsewhere have no pre-labels to compare with). A broken export is reported by the
    import's own check."""
    try:
        reviewed = check_labels(src, names).boxes_by_image
    except LabelError:
        return None
    prelabels = {}
    for name in reviewed:
        label = proposal_dir / "labels" / f"{Path(name).stem}.txt"
        if not label.is_file():
            return None
        boxes, problems = read_label_file(label, len(names), names, scores=True)
        if problems:
            return None
        prelabels[name] = boxes
    return compare_to_prelabels(reviewed, prelabels) if reviewed else None


def _proposal_info(folder: Path) -> dict[str, Any]:
    """`proposal.json` of `folder`, read within MAX_PROPOSAL_BYTES (it may be an export's: any file at all)."""
    path = folder / PROPOSAL_JSON
    if not os.path.lexists(path):
        raise LabelError(f"{path}: no proposal here; the pulled frames cannot be traced to their videos")
    text, problem = read_small_text(
        path, str(path), MAX_PROPOSAL_BYTES, "MAX_PROPOSAL_BYTES, tasks/operations/holdout.py"
    )
    if text is None:
        raise LabelError(problem or f"{path}: cannot be read", path=str(path))
    try:
        info = json.loads(text)
    except ValueError as e:
        raise LabelError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(info, dict):
        raise LabelError(f"{path}: expected a JSON object, got {type(info).__name__}", path=str(path))
    return info
