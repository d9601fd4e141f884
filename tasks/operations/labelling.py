"""The holdout proposal a reviewer corrects: frames of the videos reserved for labelling, pre-labelled by the base
detector at a low confidence, so labelling a holdout is mostly deleting and nudging boxes rather than drawing them.

Frames are sampled by time (`extract.interval_s`, every sample of every video: no per-video cap) and near-duplicates
are dropped with extraction's rule (32x32 grayscale thumbnails, `extract.dedup_threshold`). Every candidate left is
pre-labelled, then `label.frames` of them are chosen (see `select_frames`) so the reviewer sees every video, dark and
bright footage, and both frames with plates and empty-lane frames (a holdout without empty frames cannot measure
false alarms).

Memory stays flat whatever the video length: a candidate is JPEG-encoded and written to a scratch folder inside the
proposal's temp folder as soon as it is decoded, and only its time, brightness, thumbnail (4 KB) and pre-labels stay in
memory; the chosen ones are renamed into `images/`, the rest deleted before the temp folder replaces `out_dir`.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tasks.pipeline.decode import FrameSampler, VideoError
from tasks.pipeline.extract_worker import THUMB
from tasks.pipeline.labels import Box, yolo_text
from tasks.support.config import ExtractConfig, LabelConfig
from tasks.support.errors import AlprError, Remedy
from tasks.support.fsutil import atomic_dir
from tasks.support.hashing import sha256_file
from tasks.support.progress import VideoBars

log = logging.getLogger(__name__)

PROPOSAL_JSON = "proposal.json"
IMAGES, LABELS = "images", "labels"
SCRATCH = ".candidates"  # every candidate's JPEG, inside the temp folder; removed before it is renamed into place
STRATA = ("dark", "mid", "bright")  # mean gray in thirds of 0-255: extraction's `brightness_bins: 3`
JPEG_QUALITY = 95
BATCH = 8  # frames per predict call; measured as fast as 1 at a time on 2 CPU cores, and 8 1080p frames are ~50 MB


class ProposalError(AlprError):
    """No proposal can be made from the given videos or model; the message names the files and why."""


@dataclass(frozen=True)
class FrameCandidate:
    """One sampled, de-duplicated frame of a video and its pre-labels (YOLO lines)."""

    video: str
    t: float
    image: str  # file name: <video stem>_<time in ms, 8 digits>.jpg
    brightness: float  # mean gray 0-255
    stratum: int  # index into STRATA
    boxes: int = 0
    labels: str = ""


@dataclass(frozen=True)
class Proposal:
    """What `propose` wrote: `frames` images (`with_plate` + `without_plate`) holding `boxes` pre-labels."""

    out_dir: Path
    frames: int
    with_plate: int
    without_plate: int
    boxes: int
    videos: tuple[str, ...]  # the videos sampled (those that could be read), by name
    seconds: float  # wall time of the whole proposal
    skipped: dict[str, str] = field(default_factory=dict)  # unreadable videos and why


def propose(
    videos: Sequence[Path], out_dir: Path, model: Path, cfg: LabelConfig, extract: ExtractConfig, imgsz: int
) -> Proposal:
    """Sample, pre-label and choose `cfg.frames` frames of `videos` into `out_dir` (replaced only once complete):
    `images/<stem>_<ms>.jpg`, `labels/<stem>_<ms>.txt` (YOLO, empty when nothing was found) and `proposal.json`.

    An unreadable video is skipped (logged, named in `proposal.json`); no readable frame at all is a ProposalError.
    One proposal per `out_dir` at a time: temp folders a killed run left beside it are removed.
    """
    started = time.perf_counter()
    paths = sorted({Path(v) for v in videos}, key=lambda p: (p.name, str(p)))
    if not paths:
        raise ProposalError("no videos given to propose frames from", remedy=Remedy.SAMPLE_VIDEOS)
    stems: dict[str, Path] = {}
    for path in paths:
        if path.stem in stems:
            raise ProposalError(
                f"{stems[path.stem]} and {path}: same name stem, their frame files would collide; rename one",
                remedy=Remedy.SAMPLE_VIDEOS,
            )
        stems[path.stem] = path
    if not model.is_file():
        raise ProposalError(f"{model}: model not found", remedy=Remedy.FETCH_MODEL)
    if imgsz < 32 or imgsz % 32:
        raise ProposalError(f"imgsz {imgsz}: must be a positive multiple of 32", remedy=Remedy.PARAMS)
    for stale in out_dir.parent.glob(f".{out_dir.name}-*-tmp") if out_dir.parent.is_dir() else ():
        shutil.rmtree(stale, ignore_errors=True)

    labeller = _Labeller(model, cfg.prelabel_conf, imgsz)
    with atomic_dir(out_dir) as tmp:
        scratch = tmp / SCRATCH
        scratch.mkdir()
        pools: dict[str, list[FrameCandidate]] = {}
        hashes: dict[str, str] = {}
        skipped: dict[str, str] = {}
        where: dict[str, Path] = {}  # each video's scratch folder
        with VideoBars(len(paths), "propose: sampling and pre-labelling") as bars:
            for i, path in enumerate(paths):
                where[path.name] = scratch / str(i)
                where[path.name].mkdir()
                try:
                    hashes[path.name] = sha256_file(path)
                    pools[path.name] = _sample(path, where[path.name], extract, labeller, bars)
                except (VideoError, OSError) as e:
                    skipped[path.name] = str(e)
                    log.warning("skipping %s: %s", path, e)
                    hashes.pop(path.name, None)
                    shutil.rmtree(where.pop(path.name))
                bars.finish(path.name)
        if not any(pools.values()):
            detail = "; ".join(f"{name}: {why}" for name, why in skipped.items())
            raise ProposalError(f"no frame could be sampled from the videos given ({detail})",
                                remedy=Remedy.SAMPLE_VIDEOS, skipped=skipped)  # fmt: skip
        chosen = select_frames([c for pool in pools.values() for c in pool], list(pools), cfg.frames)
        _write(tmp, chosen, pools, where, hashes, skipped, model, cfg, extract, imgsz)
    with_plate = sum(1 for c in chosen if c.boxes)
    boxes = sum(c.boxes for c in chosen)
    seconds = round(time.perf_counter() - started, 3)
    log.info(
        "proposed %d frames (%d with plates, %d pre-labels) from %d videos in %.1f s: %s",
        len(chosen), with_plate, boxes, len(pools), seconds, out_dir,
    )  # fmt: skip
    return Proposal(out_dir, len(chosen), with_plate, len(chosen) - with_plate, boxes, tuple(pools), seconds, skipped)


def _write(
    tmp: Path,
    chosen: list[FrameCandidate],
    pools: dict[str, list[FrameCandidate]],
    where: dict[str, Path],
    hashes: dict[str, str],
    skipped: dict[str, str],
    model: Path,
    cfg: LabelConfig,
    extract: ExtractConfig,
    imgsz: int,
) -> None:
    """Move the chosen frames from the scratch folders into `tmp/images`, write their labels and `proposal.json`,
    and drop the scratch folder (the candidates not chosen)."""
    (tmp / IMAGES).mkdir()
    (tmp / LABELS).mkdir()
    for c in chosen:
        (where[c.video] / c.image).rename(tmp / IMAGES / c.image)
        (tmp / LABELS / c.image).with_suffix(".txt").write_text(c.labels)
    shutil.rmtree(tmp / SCRATCH)
    with_plate = sum(1 for c in chosen if c.boxes)
    doc = {
        "videos": [{"name": name, "sha256": hashes[name], "candidates": len(pool),
                    "frames": sum(1 for c in chosen if c.video == name)} for name, pool in pools.items()],
        "skipped": skipped,
        "frames": [{"image": c.image, "video": c.video, "time_s": c.t, "brightness": c.brightness,
                    "prelabels": c.boxes, "stratum": STRATA[c.stratum]} for c in chosen],
        "model": {"name": model.name, "sha256": sha256_file(model)},
        "prelabel_conf": cfg.prelabel_conf,
        "imgsz": imgsz,
        "interval_s": extract.interval_s,
        "dedup_threshold": extract.dedup_threshold,
        "counts": {"candidates": sum(map(len, pools.values())),
                   "candidates_with_plate": sum(1 for pool in pools.values() for c in pool if c.boxes),
                   "frames": len(chosen), "with_plate": with_plate, "without_plate": len(chosen) - with_plate,
                   "prelabel_boxes": sum(c.boxes for c in chosen)},
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }  # fmt: skip
    (tmp / PROPOSAL_JSON).write_text(json.dumps(doc, indent=1) + "\n")


class _Labeller:
    """The base detector, loaded on first use (an all-unreadable input fails without paying for it), fed in batches."""

    def __init__(self, model: Path, conf: float, imgsz: int) -> None:
        self.path, self.conf, self.imgsz = model, conf, imgsz
        self._yolo: Any = None

    def __call__(self, images: list[np.ndarray]) -> list[tuple[int, str]]:
        """Number of boxes and YOLO label lines (`cls cx cy w h`, normalised, 6 decimals) for each image."""
        if self._yolo is None:
            from ultralytics import YOLO  # slow import, only when there is something to pre-label

            self._yolo = YOLO(str(self.path), task="detect")
        results = self._yolo.predict(images, imgsz=self.imgsz, conf=self.conf, device="cpu", verbose=False)
        out = []
        for r in results:
            rows = zip(r.boxes.cls.cpu().numpy(), r.boxes.xywhn.cpu().numpy(), strict=True)
            out.append((len(r.boxes), yolo_text([Box(int(k), *map(float, xywh)) for k, xywh in rows])))
        return out


def _sample(
    path: Path, scratch: Path, extract: ExtractConfig, labeller: _Labeller, bars: VideoBars
) -> list[FrameCandidate]:
    """Every de-duplicated sample of one video, written to `scratch` as JPEG and pre-labelled on that JPEG's pixels
    (what the reviewer and later validation see, not the decoder's)."""
    sampler = FrameSampler(path, extract.interval_s, extract.keyframe_tolerance_s)
    sampler.progress = lambda t: bars.update(path.name, t, sampler.stats.duration_s)
    kept = np.empty((64, THUMB * THUMB), np.float32)
    pool: list[FrameCandidate] = []
    batch: list[tuple[FrameCandidate, np.ndarray]] = []
    offered = 0

    def flush() -> None:
        for (c, _), (n, text) in zip(batch, labeller([image for _, image in batch]), strict=True):
            pool.append(replace(c, boxes=n, labels=text))
        batch.clear()

    names: set[str] = set()
    for sample in sampler:
        offered += 1
        name = f"{path.stem}_{round(sample.t * 1000):08d}.jpg"
        if name in names:  # two samples within the same millisecond (interval_s < 1 ms): one file name, keep one
            continue
        gray = cv2.cvtColor(sample.image, cv2.COLOR_BGR2GRAY)
        # extraction's near-duplicate rule, against every candidate kept so far. Not `Selector` itself: it caps and
        # decimates per video and holds every kept JPEG in memory, and its rule is inlined in `offer`; factoring it
        # out would change extract_worker.py, whose bytes key the frame cache (every video re-decoded once).
        # tests/integration/test_labelling.py checks both keep the same frames.
        thumb = cv2.resize(gray, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        n_kept = len(pool) + len(batch)
        threshold = extract.dedup_threshold
        if threshold > 0 and n_kept and bool((np.abs(kept[:n_kept] - thumb.ravel()).mean(axis=1) < threshold).any()):
            continue
        if n_kept == len(kept):
            kept = np.concatenate([kept, np.empty_like(kept)])
        kept[n_kept] = thumb.ravel()
        ok, jpeg = cv2.imencode(".jpg", sample.image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError(f"{path}: JPEG encoding failed for the frame at {sample.t:.3f} s")
        (scratch / name).write_bytes(jpeg.tobytes())
        names.add(name)
        brightness = float(gray.mean())
        stratum = min(int(brightness / 256.0 * len(STRATA)), len(STRATA) - 1)
        candidate = FrameCandidate(path.name, sample.t, name, round(brightness, 2), stratum)
        batch.append((candidate, cv2.imdecode(jpeg, cv2.IMREAD_COLOR)))
        if len(batch) == BATCH:
            flush()
    if batch:
        flush()
    st = sampler.stats
    log.info(
        "%s: %d samples (%s mode), %d near-duplicates dropped, %d candidates, %d with pre-labels",
        path.name, offered, st.mode, offered - len(pool), len(pool), sum(1 for c in pool if c.boxes),
    )  # fmt: skip
    return pool


def select_frames(candidates: Sequence[FrameCandidate], videos: Sequence[str], n: int) -> list[FrameCandidate]:
    """Choose `n` candidates (all when there are no more), deterministically, in (video, time) order.

    1. Plate / no plate: with P candidates with a pre-label and E without, `plate = min(P, n - min(E, n // 3))` and
       `empty = min(E, n - plate)`: a third empty-lane frames (n // 3) when both kinds suffice, the other kind fills
       in when one runs short.
    2. Videos: those frames are dealt one at a time to the video with the fewest frames so far (ties: the earlier in
       `videos`) among those that still have a candidate of a kind whose quota is not used up; it gets the kind with
       the larger share of its quota left (ties: plate). So videos share evenly, each video's frames keep about the 2:1
       ratio, and every video gets a frame when `n` >= the number of videos (unless step 1's quota of the only kind
       a video has is used up by earlier videos: e.g. n = 3, one video with plates, two with only empty frames).
    3. Brightness: a video's k frames of one kind are shared round-robin between the strata it has (dark first).
    4. Time: a stratum's m frames out of its c candidates (in time order) are those at the centres of m equal slices,
       indices floor((j + 0.5) * c / m).
    """
    order = {name: i for i, name in enumerate(videos)}
    cells: dict[tuple[int, bool], list[FrameCandidate]] = {}
    for c in sorted(candidates, key=lambda c: (order[c.video], c.t)):
        cells.setdefault((order[c.video], c.boxes > 0), []).append(c)
    total = {k: sum(len(v) for (_, p), v in cells.items() if p == k) for k in (True, False)}
    quota = {True: min(total[True], n - min(total[False], n // 3))}
    quota[False] = min(total[False], n - quota[True])
    left = dict(quota)
    taken = {key: 0 for key in cells}
    per_video = [0] * len(videos)

    def open_kinds(v: int) -> list[bool]:
        return [k for k in (True, False) if left[k] and taken.get((v, k), 0) < len(cells.get((v, k), ()))]

    while left[True] + left[False]:
        v = min((v for v in range(len(videos)) if open_kinds(v)), key=lambda v: (per_video[v], v))
        kind = max(open_kinds(v), key=lambda k: (left[k] / quota[k], k))
        taken[(v, kind)] += 1
        left[kind] -= 1
        per_video[v] += 1
    chosen: list[FrameCandidate] = []
    for key, pool in cells.items():
        strata = [[c for c in pool if c.stratum == s] for s in range(len(STRATA))]
        share = [0] * len(strata)
        while sum(share) < taken[key]:
            for s, members in enumerate(strata):
                if share[s] < len(members) and sum(share) < taken[key]:
                    share[s] += 1
        for m, members in zip(share, strata, strict=True):
            chosen.extend(members[int((j + 0.5) * len(members) / m)] for j in range(m))
    return sorted(chosen, key=lambda c: (order[c.video], c.t))
