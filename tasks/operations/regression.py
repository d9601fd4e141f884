"""The nightly regression check: re-validate the deployed champion on frames of the newest videos.

Gate videos have no labels, so every signal is label-free:
- agreement (mAP50-95) of the champion with FP32 at the champion's geometry (input shape and crop) from the rebuild
  it came from, on the newest frames plus the labelled holdout's images (as validation measures it, so the number
  compares with the promotion-time one);
- the footage itself: mean brightness of the newest frames against the frames of the videos the champion was built
  from. Measured with the plate model and a real INT8 champion: on frames darkened to 12% of their brightness the
  INT8 model still agrees with FP32 (agreement .82 vs .75 on the originals, 24 frames at imgsz 320), so agreement
  alone does not say the cameras now send footage the champion was not calibrated or validated on; brightness does;
- plates the FP32 reference still finds on the newest frames: none means there is nothing to re-validate on;
- where they are: the champion is built for a region of interest (its `crop`, tasks/support/roi.py) and sees only
  that part of the frame. The FP32 reference runs on full frames, so a plate it finds outside the crop, on more
  frames than one stray false box explains, says the camera's view has changed (moved, re-aimed, a new lane in
  use): the champion is blind there until a rebuild learns the new region.

Besides the MLflow run (and the frame cache's hash memo, as any extraction), nothing here writes outside its scratch
folder: the DVC outputs (calibration, holdout frames), the frame cache's entries and the gate folder are only read.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.operations.policy import GateCheck
from tasks.operations.provenance import fetch_verified, recorded
from tasks.runtime.gate import crop_text
from tasks.runtime.releases import MANIFEST, current_release, gate_id, gate_paths, read_manifest, verify_release
from tasks.support.candidate import Candidate
from tasks.support.config import ExtractConfig, NightlyConfig, TrackingConfig, ValidateConfig
from tasks.support.errors import AlprError, Remedy
from tasks.support.registry import Aliases, aliases_for, version_by_alias
from tasks.support.tracking import (
    ARTIFACT_PATH,
    KIND_TAG,
    LINEAGE_JSON,
    PRUNED_TAG,
    REUSED_RUN_TAG,
    client,
    gate_outcome,
    gate_tag,
    small_run,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tasks.edge.agreement import Detections

log = logging.getLogger(__name__)


# what to do when a gate breaks, and the params key that sets its threshold
DIAGNOSIS = {
    "agreement": (
        "nightly.min_agreement",
        "the INT8 champion no longer agrees with the FP32 reference on the newest footage: rebuild with the new "
        "videos so the INT8 calibration covers them; if nothing passes, roll back",
    ),
    "agreement_drop": (
        "nightly.max_agreement_drop",
        "the champion agrees with FP32 much less than when it was promoted: rebuild with the new videos; "
        "if nothing passes, roll back",
    ),
    "brightness_change": (
        "nightly.max_brightness_change",
        "the newest footage is much {direction} than the footage the champion was calibrated and validated on: "
        "check the cameras (exposure, IR lighting, a covered or dirty lens), then rebuild with the new videos "
        "so the INT8 calibration covers them",
    ),
    "reference_boxes": (
        "nightly.min_reference_boxes",
        "the FP32 reference finds (almost) no plate on the newest frames, so the champion cannot be re-validated on "
        "them: check the cameras (aim, focus, lighting) and that the newest videos show vehicles",
    ),
    "roi": (
        "nightly.max_frames_outside_roi",
        "plates appear where the champion never looks: the camera's view has changed (moved, re-aimed, or traffic "
        "in another part of the frame). The next rebuild learns the new region from the newest videos: "
        "alpr-ops rebuild",
    ),
}


MAX_NAMED_FRAMES = 10  # frames named in a verdict (all of them are in the verdict file and nightly/verdict.json)


class RegressionError(AlprError):
    """The check cannot run (no champion, no reference, no frames); the message says what to do."""


class RegressionFailed(AlprError):
    """A nightly gate is broken; carries the report (the message is its explanation)."""

    remedy = Remedy.REBUILD_OR_ROLLBACK

    def __init__(self, report: RegressionReport) -> None:
        super().__init__(report.explain())
        self.report = report

    def __reduce__(self) -> tuple[type, tuple[RegressionReport]]:  # pickled with its report (Prefect results)
        return (type(self), (self.report,))


@dataclass(frozen=True)
class Champion:
    """The deployed release (`current`): what the gate runs, and what its manifest says about its promotion."""

    release: Path
    version: str
    candidate: str
    run_id: str
    metrics: dict[str, float]
    registry_version: str | None  # the version the registry's `champion` alias points at (None: no alias)
    pending: PendingChallenger | None = None  # a rebuild's winner kept out of the gate for a person, if any


@dataclass(frozen=True)
class PendingChallenger:
    """The gate's pending decision (`tasks/operations/pending.py`): what the check measures beside the champion, so
    a failed night says whether approving it would fix it."""

    version: str
    candidate: str
    source: str  # its artifact in the store
    sha256: str  # recorded when it was built: the download is verified against it
    where: str  # where that record is (for messages)
    tracking_uri: str
    promoted_metrics: dict[str, float]  # its validation numbers (the promotion-time values of the champion's)


@dataclass(frozen=True)
class Reference:
    """The FP32 reference the champion is compared with, and where it came from."""

    candidate: Candidate
    run_id: str
    note: str
    # the square FP32 reference on full frames, when `candidate` (FP32 at the champion's geometry) is cropped to a
    # region of interest: a cropped model cannot see the plates outside its region, which the nightly counts
    full_frame: Candidate | None = None

    @property
    def on_full_frames(self) -> Candidate:
        """The FP32 model that looks at the whole frame: the plates outside the champion's region are counted on it."""
        return self.full_frame or self.candidate


@dataclass(frozen=True)
class FrameSample:
    """Frames of the newest videos in a scratch folder, and the brightness of the champion's own footage."""

    frames_dir: Path  # images/ of the chosen frames
    videos: tuple[str, ...]  # the newest videos
    frames: int
    source: str  # which frames were chosen (holdout split or all frames of the newest videos)
    brightness: float  # mean (0-255) over the chosen frames
    baseline_brightness: float | None  # mean over the frames of the videos the champion was built from
    baseline_note: str
    videos_decoded: int = 0  # videos decoded for this check (the others came from the rebuilds' frame cache)
    videos_cached: int = 0


@dataclass(frozen=True)
class Measurement:
    """What `measure` found: the numbers, and the newest frames on which the FP32 reference finds a plate outside
    the champion's crop (named in the verdict)."""

    metrics: dict[str, float]
    crop: tuple[int, ...] = ()  # the champion's crop, frame pixels; () the full frame
    frame_shape: tuple[int, ...] = ()  # (height, width) the crop applies to
    outside_roi: tuple[str, ...] = ()  # frame file names


@dataclass(frozen=True)
class RegressionReport:
    """The verdict of one nightly check: every gate with its number and threshold, and what was measured on what."""

    passed: bool
    checks: tuple[GateCheck, ...]
    metrics: dict[str, float]
    champion_version: str
    champion_candidate: str
    reference_note: str
    videos: tuple[str, ...]
    frames: int
    frames_source: str
    notes: tuple[str, ...] = ()
    mlflow_run_id: str = ""
    pending: str = ""  # when the champion regressed: whether approving the pending challenger would fix it
    roi_crop: tuple[int, ...] = ()  # the champion's crop (frame pixels); () the full frame
    roi_frame_shape: tuple[int, ...] = ()
    outside_roi: tuple[str, ...] = ()  # the newest frames with an FP32 plate outside the crop
    checked_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def broken(self) -> tuple[GateCheck, ...]:
        return tuple(c for c in self.checks if not c.passed)

    def explain(self) -> str:
        """One line per gate; for each broken one, its parameter and what to do."""
        head = (
            f"nightly regression of champion version {self.champion_version} ({self.champion_candidate}) on "
            f"{self.frames} frames of the newest videos ({', '.join(self.videos)}): "
            f"{'PASS' if self.passed else 'FAIL'}"
        )
        lines = [head]
        for c in self.checks:
            key, advice = DIAGNOSIS.get(c.gate, ("", ""))
            if c.passed:
                lines.append(f"  pass: {c}")
                continue
            if c.gate == "brightness_change":
                new, old = self.metrics.get("brightness"), self.metrics.get("baseline_brightness")
                direction = "darker" if (new or 0) < (old or 0) else "brighter"
                advice = advice.format(direction=direction) + f" (mean brightness {new:.0f} vs {old:.0f} of 255)"
            if c.gate == "roi":
                advice += f". The champion's region: {crop_text(self.roi_crop, self.roi_frame_shape)}; "
                advice += f"frames: {', '.join(self.outside_roi[:MAX_NAMED_FRAMES])}"
                more = len(self.outside_roi) - MAX_NAMED_FRAMES
                advice += f" and {more} more" if more > 0 else ""
            lines.append(f"  FAIL: {c} ({key}): {advice}")
        lines += [f"  pending: {self.pending}"] if self.pending else []
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


# --- the champion and its reference ---------------------------------------------------------------------------------


def find_champion(gate_dir: Path, tracking: TrackingConfig) -> Champion:
    """The release `current` points at, with its manifest; fails with what to run when nothing is deployed."""
    release = current_release(gate_dir)
    if release is None or not (release / MANIFEST).is_file():
        raise RegressionError(
            f"{gate_paths(gate_dir).current}: no champion is deployed, so there is nothing to re-validate",
            remedy=Remedy.PROMOTE,
        )
    manifest = read_manifest(release)  # unreadable: a VerificationError naming it, not a traceback
    mc = client(tracking)
    # the deployed artifact, against its manifest and the hash the store recorded when it was built
    verify_release(release, recorded(mc, tracking, str(manifest["run_id"]), str(manifest["version"])).sha256)
    gid = gate_id(gate_dir)  # this gate folder's champion, not another's (none before its first promotion here)
    mv = None if gid is None else version_by_alias(mc, tracking.registered_model, aliases_for(gid).champion)
    return Champion(
        release,
        str(manifest["version"]),
        str(manifest.get("candidate", "")),
        str(manifest["run_id"]),
        {k: float(v) for k, v in manifest.get("metrics", {}).items()},
        None if mv is None else str(mv.version),
        None if gid is None else _pending(mc, tracking, aliases_for(gid)),
    )


def _pending(mc: Any, tracking: TrackingConfig, names: Aliases) -> PendingChallenger | None:
    """The gate's pending challenger, with the hash its build recorded, or None."""
    from tasks.operations.pending import read_pending

    pend = read_pending(mc, tracking.registered_model, names)
    if pend is None or not pend["run_id"]:
        return None
    rec = recorded(mc, tracking, pend["run_id"], pend["version"])
    metrics = {k: float(v) for k, v in mc.get_run(pend["run_id"]).data.metrics.items()}
    return PendingChallenger(
        pend["version"], pend["candidate"], pend["source"], rec.sha256, rec.where, tracking.uri, metrics
    )


def _reference_run(mc: Any, parent_id: str, reference: str) -> Any | None:
    runs = mc.search_runs(
        [mc.get_run(parent_id).info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}' and tags.candidate = '{reference}'",
        max_results=1,
    )
    return runs[0] if runs else None


def fetch_reference(tracking: TrackingConfig, champion: Champion, reference: str, work: Path) -> Reference:
    """Download the FP32 model at the champion's geometry logged by the rebuild the champion came from (a child run
    of the same parent; its `geometry_reference`), the one validation measured the champion's agreement against.

    A champion at the square reference's geometry is compared with `reference` itself. When the rebuild logged no
    FP32 at the champion's geometry (older code), the square `reference` stands in and the report says so (its
    agreement then also counts what the geometry costs). When that rebuild has no reference at all, the reference
    of the newest finished rebuild made from the same base model is used instead, and the report says so.
    """
    mc = client(tracking)
    champ_run = mc.get_run(champion.run_id)
    parent = champ_run.data.tags.get("mlflow.parentRunId")
    run, note = None, ""
    geometry = champ_run.data.tags.get("geometry_reference") or reference
    if parent and geometry != reference:
        run = _reference_run(mc, parent, geometry)
        note = f"'{geometry}' (FP32 at the champion's geometry) of the champion's rebuild (run {parent})"
        if run is None:
            log.warning("nightly: the champion's rebuild %s logged no '%s'; using '%s'", parent, geometry, reference)
    if parent and run is None:
        run = _reference_run(mc, parent, reference)
        note = f"'{reference}' of the champion's rebuild (run {parent})"
        if geometry != reference or "geometry_reference" not in champ_run.data.tags:
            note += geometry_fallback(champion, geometry, reference)
    if run is None:
        base = champ_run.data.tags.get("base_model_sha256", "")
        found = mc.search_runs(
            [champ_run.info.experiment_id],
            filter_string=f"tags.`{KIND_TAG}` = 'candidate' and tags.candidate = '{reference}' "
            f"and tags.base_model_sha256 = '{base}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=20,
        )
        found = [r for r in found if PRUNED_TAG not in r.data.tags][:1]  # `alpr-ops gc` removed their artifacts
        if not found:
            raise RegressionError(
                f"no FP32 reference '{reference}' in {tracking.shown_uri} for champion version {champion.version} "
                f"(neither in its rebuild nor any rebuild of base model {base[:12]})",
                remedy=Remedy.REBUILD,
            )
        run = found[0]
        note = f"'{reference}' of rebuild {run.data.tags.get('mlflow.parentRunId')} (same base model; the champion's "
        note += "own rebuild logged no reference)"
        log.warning("nightly: using %s", note)
    if run.data.tags.get(REUSED_RUN_TAG):  # its bytes are a registered version's: that version's run holds them
        run = mc.get_run(run.data.tags[REUSED_RUN_TAG])
    source = f"{run.info.artifact_uri}/{ARTIFACT_PATH}"
    cand = fetch_verified(mc, tracking, source, run.info.run_id, None, work / "reference")
    if cand.precision != "fp32":
        raise RegressionError(f"reference '{reference}' (run {run.info.run_id}) is {cand.precision}, not fp32")
    full_frame = None
    if cand.crop:  # FP32 at a region's geometry: the square reference of the same rebuild counts the plates outside
        square = _reference_run(mc, parent, reference) if parent else None
        if square is None:
            raise RegressionError(
                f"the champion's rebuild (run {parent}) logged no square FP32 reference '{reference}', which the "
                "region-of-interest check runs on full frames",
                remedy=Remedy.REBUILD,
            )
        if square.data.tags.get(REUSED_RUN_TAG):
            square = mc.get_run(square.data.tags[REUSED_RUN_TAG])
        full_frame = fetch_verified(
            mc, tracking, f"{square.info.artifact_uri}/{ARTIFACT_PATH}", square.info.run_id, None, work / "full-frame"
        )
    return Reference(cand, run.info.run_id, note, full_frame)


def geometry_fallback(champion: Champion, geometry: str, reference: str) -> str:
    """What the note says when the square `reference` stands in for FP32 at the champion's geometry: nothing when
    the champion is square itself (read from its release's candidate.json), else that its agreement is measured
    across two geometries."""
    from tasks.support.candidate import CANDIDATE_JSON, read_candidate
    from tasks.support.shape import geometry_of

    try:
        champ = read_candidate(champion.release) if (champion.release / CANDIDATE_JSON).is_file() else None
    except (OSError, ValueError, TypeError):
        champ = None
    if champ is not None and not champ.crop and champ.input_shape == (champ.imgsz, champ.imgsz):
        return ""
    shown = geometry_of(champ).text if champ is not None else "unknown"
    logged = f"'{geometry}'" if geometry != reference else "an FP32 model at the champion's geometry"
    return (
        f"; the champion's rebuild logged no {logged} (champion input {shown}), so the square '{reference}' stands "
        "in: agreement across two geometries, which also counts what the geometry costs"
    )


def baseline_videos(tracking: TrackingConfig, champion: Champion) -> tuple[str, ...] | None:
    """sha256 of the videos the champion's rebuild was made from (its `lineage.json`); None when not recorded."""
    mc = client(tracking)
    parent = mc.get_run(champion.run_id).data.tags.get("mlflow.parentRunId")
    if not parent:
        return None
    if not any(f.path == LINEAGE_JSON for f in mc.list_artifacts(parent)):
        return None
    with tempfile.TemporaryDirectory(prefix="alpr-nightly-lineage-") as tmp:
        doc = json.loads(Path(mc.download_artifacts(parent, LINEAGE_JSON, tmp)).read_text())
    shas = tuple(str(v["sha256"]) for v in doc.get("videos") or [] if v.get("sha256"))
    return shas or None


# --- the frames -----------------------------------------------------------------------------------------------------


def make_scratch() -> Path:
    """A private scratch folder for one check's frames and downloads (never the DVC outputs)."""
    return Path(tempfile.mkdtemp(prefix="alpr-nightly-"))


def remove_scratch(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def newest_videos(videos_dir: Path, n: int) -> list[Path]:
    """The `n` newest video files (by modification time, newest first)."""
    from tasks.support.videos import list_videos

    videos, _ = list_videos(videos_dir)
    if not videos:
        raise RegressionError(f"{videos_dir}: no videos, so no newest footage to re-validate the champion on.")
    return sorted(videos, key=lambda v: (v.stat().st_mtime_ns, v.name), reverse=True)[:n]


def private_cache(shared: Path, work: Path) -> Path:
    """A frame cache in `work` that links every complete entry of the `shared` one (and its hash memo).

    Extraction clears the temp folders it finds in its cache, which in the shared cache may be a running rebuild's
    entries in progress; the nightly check reuses what rebuilds decoded without ever writing into their cache.
    """
    from tasks.pipeline.extract_worker import ENTRY_NAME

    own = work / "frame-cache"
    (own / "entries").mkdir(parents=True)
    if (shared / "hashes").is_dir():
        (own / "hashes").symlink_to((shared / "hashes").resolve(), target_is_directory=True)
    if (shared / "entries").is_dir():
        for entry in (shared / "entries").iterdir():
            if not entry.name.startswith(".") and (entry / ENTRY_NAME).is_file():
                (own / "entries" / entry.name).symlink_to(entry.resolve(), target_is_directory=True)
    return own


def sample_frames(
    videos_dir: Path,
    cfg: ExtractConfig,
    names: tuple[str, ...],
    cache_dir: Path,
    n_newest: int,
    baseline: tuple[str, ...] | None,
    work: Path,
) -> FrameSample:
    """Frames of the `n_newest` newest videos in `work/newest/images`, sampled with the extraction's own code and
    params (so the frame cache is reused), and the mean brightness of the champion's footage for comparison.

    Every video is extracted (from the frame cache, after a rebuild; see `private_cache`) into a scratch folder: its
    split is the one a rebuild of this folder gives. Frames of newest videos in the holdout split are preferred: they
    were never calibrated on.
    """
    import pandas as pd

    from tasks.pipeline.extract import MANIFEST_NAME, extract_frames
    from tasks.support.fsutil import atomic_dir

    newest = newest_videos(videos_dir, n_newest)
    out = work / "all"
    cache = private_cache(cache_dir, work)
    calibration, holdout = out / "calibration", out / "holdout"
    result = extract_frames(videos_dir, calibration, out / "calibration.yaml", cfg, names, holdout, cache)
    tables = [pd.read_csv(d / MANIFEST_NAME).assign(folder=str(d)) for d in (calibration, holdout)]
    frames = pd.concat([t for t in tables if len(t)], ignore_index=True)
    names_newest = [v.name for v in newest]
    chosen = frames[frames["video"].isin(names_newest)]
    if chosen.empty:
        skipped = {k: v for k, v in result.skipped.items() if k in names_newest}
        raise RegressionError(f"{videos_dir}: no frame could be extracted from the newest videos: {skipped}")
    held = chosen[chosen["split"] == "holdout"]
    if len(held):
        source = f"holdout-split frames of {held['video'].nunique()} of the {len(newest)} newest videos"
        chosen = held
    else:
        source = f"all frames of the {len(newest)} newest videos (none of them is in the holdout split)"
    with atomic_dir(work / "newest") as tmp:
        (tmp / "images").mkdir()
        for row in chosen.itertuples():
            os.link(Path(row.folder) / row.image, tmp / "images" / Path(row.image).name)
    if baseline is not None:
        base = frames[frames["video_sha256"].isin(baseline)]
        note = f"frames of the {base['video'].nunique()} videos of the champion's rebuild still in {videos_dir}"
    else:
        base = frames[~frames["video"].isin(names_newest)]
        note = "the rebuild recorded no video list: frames of the older videos in the folder"
    if base.empty:
        note = "no frame of the champion's own footage is available: brightness not compared"
    log.info("nightly: %d frames (%s); baseline: %s", len(chosen), source, note)
    return FrameSample(
        work / "newest" / "images",
        tuple(names_newest),
        len(chosen),
        source,
        round(float(chosen["brightness"].mean()), 3),
        None if base.empty else round(float(base["brightness"].mean()), 3),
        note,
        int(result.report.get("decoded_videos", 0)),
        int(result.report.get("cached_videos", 0)),
    )


# --- measuring and judging ------------------------------------------------------------------------------------------


def _mean_conf(dets: list[Any]) -> float:
    confs = [c for d in dets for c in d.conf]
    return round(sum(confs) / len(confs), 5) if confs else 0.0


def runnable_here(champ: Candidate, version: str) -> None:
    """The nightly check re-runs the champion on this machine; a TensorRT engine runs only on the GPU and TensorRT
    version it was built for (a gate-built engine: the gate's). Refused with what was not checked, never a pass."""
    from tasks.edge.tensorrt import EngineMismatch, ensure_runnable

    try:
        ensure_runnable(champ.path)
    except EngineMismatch as e:
        raise RegressionError(
            f"champion version {version} ({champ.name}) is a TensorRT engine this machine cannot run, so the nightly "
            f"check did NOT re-validate it (nothing was measured; this is not a pass): {e}. Run the nightly check on "
            "the gate's hardware, or rely on the gate runtime's own verification at load."
        ) from e


def outside_roi(
    found: Sequence[Detections], images: Sequence[Path], crop: Sequence[int], conf: float
) -> tuple[int, tuple[str, ...]]:
    """The plates (at `conf`) of full-frame detections `found` that do not lie inside `crop` (`inside`), and the
    names of the frames they are on (pure; an empty crop is the whole frame: nothing is outside)."""
    from tasks.edge.agreement import above
    from tasks.support.roi import inside

    plates, frames = 0, []
    for image, dets in zip(images, found, strict=True):
        out = sum(1 for box in above(dets, conf).xyxy if not inside(box, crop))
        if out:
            plates += out
            frames.append(Path(image).name)
    return plates, tuple(frames)


def measure(
    champion: Champion, reference: Reference, sample: FrameSample, holdout_dir: Path, cfg: ValidateConfig, work: Path
) -> Measurement:
    """Agreement of the champion with the FP32 reference, as validation measures it (both run through the gate's
    `Detector` path, scored with the one metric), on the newest frames plus the labelled holdout's images; the
    boxes and confidences of both models on the newest frames alone; and the FP32 plates on the newest frames that
    lie outside the champion's crop (and the pending challenger's)."""
    from tasks.edge.agreement import agreement_counts
    from tasks.pipeline.scoring import agreement
    from tasks.pipeline.validate import agreement_images, class_names, detect, holdout_images

    champ = verify_release(champion.release)  # checked again at this load: the release may have changed since
    runnable_here(champ, champion.version)
    full = reference.on_full_frames
    if full.crop:  # a cropped reference cannot see outside its own crop: the count would be blind
        raise RegressionError(
            f"reference '{full.name}' (run {reference.run_id}) is built for a crop {list(full.crop)}; the "
            "region-of-interest check needs an FP32 reference on full frames"
        )
    # label-free by design: without a labelled holdout the check runs on the newest frames alone
    names = class_names(reference.candidate)
    labelled = holdout_images(holdout_dir, list(names.values()), "optional")
    images, _ = agreement_images(sample.frames_dir.parent, labelled)
    ref_found = detect(reference.candidate, images, cfg)
    metrics, diffs = agreement(ref_found, detect(champ, images, cfg), images, names, cfg.agreement_conf)
    n = sample.frames  # agreement_images puts the unlabelled (newest) frames first
    newest = agreement_counts(diffs[:n])
    seen = ref_found[:n] if full is reference.candidate else detect(full, images[:n], cfg)  # whole newest frames
    plates_out, frames_out = outside_roi(seen, images[:n], champ.crop, cfg.agreement_conf)
    metrics |= {
        "frames_newest": float(n),
        "frames_holdout": float(len(images) - n),
        "newest_boxes_reference": newest["boxes_reference"],
        "newest_boxes_lost": newest["boxes_lost"],
        "newest_boxes_gained": newest["boxes_gained"],
        "newest_reference_boxes_per_frame": round(newest["boxes_reference"] / n, 4),
        "newest_reference_conf_mean": _mean_conf([d.reference for d in diffs[:n]]),
        "newest_champion_conf_mean": _mean_conf([d.candidate for d in diffs[:n]]),
        "roi_plates_outside": float(plates_out),
        "roi_frames_outside": float(len(frames_out)),
        "brightness": sample.brightness,
        "videos_decoded": float(sample.videos_decoded),
        "videos_cached": float(sample.videos_cached),
    }
    if sample.baseline_brightness is not None:
        metrics["baseline_brightness"] = sample.baseline_brightness
    if champion.pending is not None:  # the same frames, the same reference detections: would approving it help?
        from tasks.support.registry import download_version
        from tasks.support.verify import verify_artifact

        pend = champion.pending
        folder = download_version(pend.source, work / "pending", pend.tracking_uri)
        challenger = verify_artifact(folder, pend.sha256, pend.where)
        runnable_here(challenger, pend.version)
        found, _ = agreement(ref_found, detect(challenger, images, cfg), images, names, cfg.agreement_conf)
        metrics["pending_agreement_map50_95"] = found["agreement_map50_95"]
        pend_out = outside_roi(seen, images[:n], challenger.crop, cfg.agreement_conf)[1]
        metrics["pending_roi_frames_outside"] = float(len(pend_out))
    log.info(
        "nightly: agreement mAP50-95 %.4f on %d frames (%d newest); FP32 plates on the newest: %d (%d outside "
        "the champion's crop %s, on %d frames)",
        metrics["agreement_map50_95"], len(images), n, int(newest["boxes_reference"]), plates_out,
        crop_text(champ.crop, champ.frame_shape), len(frames_out),
    )  # fmt: skip
    return Measurement(metrics, champ.crop, champ.frame_shape, frames_out)


def judge(metrics: dict[str, float], promoted: dict[str, float], cfg: NightlyConfig) -> tuple[GateCheck, ...]:
    """The nightly gates (pure): agreement floor, agreement drop since promotion, brightness change of the footage,
    FP32 plates still found, frames with an FP32 plate outside the champion's region of interest. A gate without its
    inputs (no promotion-time agreement, no baseline footage) is left out rather than guessed; the report's notes
    say so."""
    agreement = metrics["agreement_map50_95"]
    floor = cfg.min_agreement
    checks = [GateCheck("agreement", agreement >= floor, agreement, floor, ">=")]
    if "agreement_map50_95" in promoted:
        drop = round(promoted["agreement_map50_95"] - agreement, 6)
        checks.append(GateCheck("agreement_drop", drop <= cfg.max_agreement_drop, drop, cfg.max_agreement_drop, "<="))
    base = metrics.get("baseline_brightness")
    if base:
        change = round(abs(metrics["brightness"] / base - 1.0), 4)
        checks.append(
            GateCheck("brightness_change", change <= cfg.max_brightness_change, change, cfg.max_brightness_change, "<=")
        )
    boxes = metrics["newest_boxes_reference"]
    checks.append(
        GateCheck("reference_boxes", boxes >= cfg.min_reference_boxes, boxes, float(cfg.min_reference_boxes), ">=")
    )
    if "roi_frames_outside" in metrics:  # a full-frame champion measures 0: it passes
        frames, limit = metrics["roi_frames_outside"], cfg.max_frames_outside_roi
        plates = int(metrics.get("roi_plates_outside", 0))
        note = "" if frames <= limit else f"{plates} FP32 plates outside the champion's crop"
        checks.append(GateCheck("roi", frames <= limit, frames, float(limit), "<=", note))
    return tuple(checks)


def make_report(
    champion: Champion,
    reference: Reference,
    sample: FrameSample,
    measured: Measurement,
    cfg: NightlyConfig,
) -> RegressionReport:
    """Judge the measured numbers against the gates and the champion's promotion-time values."""
    metrics = measured.metrics
    checks = judge(metrics, champion.metrics, cfg)
    full = dict(metrics)
    if "agreement_map50_95" in champion.metrics:
        full["promoted_agreement_map50_95"] = champion.metrics["agreement_map50_95"]
    if sample.baseline_brightness:
        full["brightness_change"] = round(sample.brightness / sample.baseline_brightness - 1.0, 4)
    notes = [f"frames: {sample.source}", f"reference: {reference.note}", f"brightness baseline: {sample.baseline_note}"]
    if "agreement_map50_95" not in champion.metrics:
        notes.append("the release manifest has no promotion-time agreement: agreement_drop not checked")
    if champion.registry_version != champion.version:
        notes.append(
            f"the registry's champion alias is version {champion.registry_version}, but {champion.version} is "
            "deployed: a promotion or rollback was interrupted; re-run it"
        )
    passed = all(c.passed for c in checks)
    return RegressionReport(
        passed,
        checks,
        full,
        champion.version,
        champion.candidate,
        reference.note,
        sample.videos,
        sample.frames,
        sample.source,
        tuple(notes),
        pending="" if passed else pending_line(champion, metrics, checks, cfg),
        roi_crop=measured.crop,
        roi_frame_shape=measured.frame_shape,
        outside_roi=measured.outside_roi,
    )


FOOTAGE_GATES = ("brightness_change", "reference_boxes")  # about the cameras' footage: no model change fixes them


def pending_line(
    champion: Champion, metrics: dict[str, float], checks: tuple[GateCheck, ...], cfg: NightlyConfig
) -> str:
    """Which pending challenger, if any, would fix a regressed champion: the challenger's agreement with the same
    FP32 reference on the same frames, against the same floor and its own promotion-time agreement, and the same FP32
    plates against its own crop (pure)."""
    pend = champion.pending
    if pend is None:
        return "no pending challenger: rebuild with the newest videos, or roll back"
    measured = metrics.get("pending_agreement_map50_95")
    if measured is None:
        return f"pending challenger version {pend.version} ({pend.candidate}) was not measured"
    ok = [GateCheck("agreement", measured >= cfg.min_agreement, measured, cfg.min_agreement, ">=")]
    if "agreement_map50_95" in pend.promoted_metrics:
        drop = round(pend.promoted_metrics["agreement_map50_95"] - measured, 6)
        ok.append(GateCheck("agreement_drop", drop <= cfg.max_agreement_drop, drop, cfg.max_agreement_drop, "<="))
    if "pending_roi_frames_outside" in metrics:  # its own crop, against the same FP32 plates
        out, limit = metrics["pending_roi_frames_outside"], cfg.max_frames_outside_roi
        ok.append(GateCheck("roi", out <= limit, out, float(limit), "<="))
    shown = "; ".join(str(c) for c in ok)
    head = f"pending challenger version {pend.version} ({pend.candidate}) on the same frames: {shown}"
    broken = [c.gate for c in checks if not c.passed]
    footage = [g for g in broken if g in FOOTAGE_GATES]
    rest = f"; {', '.join(footage)} concern the footage, which no model changes" if footage else ""
    if all(c.passed for c in ok) and len(footage) < len(broken):
        which = "agreement and roi gates" if "roi" in broken else "agreement gates"
        return f"{head}: approving it would fix the {which} (alpr-ops promote --approve {pend.version}){rest}"
    return f"{head}: approving it would NOT fix this{rest}"


def log_nightly(tracking: TrackingConfig, report: RegressionReport) -> RegressionReport:
    """An MLflow run of kind `nightly`: the champion version, every gate's verdict (tags), the numbers (metrics) and
    `nightly/verdict.json`. Returns the report with the run id."""
    from mlflow.entities import Metric

    mc = client(tracking)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M")
    tags = {
        "champion_version": report.champion_version,
        "candidate": report.champion_candidate,
        "nightly.passed": str(report.passed).lower(),
        "nightly.verdict": "pass" if report.passed else "fail",
        "nightly.videos": ", ".join(report.videos)[:4900],
        **({"nightly.pending": report.pending[:4900]} if report.pending else {}),
    }
    for c in report.checks:
        tags[gate_tag(c.gate)] = gate_outcome(c.passed, c.value, c.op, c.threshold)
    with small_run(mc, tracking, "nightly", f"nightly-v{report.champion_version}-{stamp}", tags) as run:
        rid, now = run.info.run_id, int(run.info.start_time)
        mc.log_batch(rid, metrics=[Metric(k, float(v), now, 0) for k, v in report.metrics.items()])
        done = replace(report, mlflow_run_id=rid)
        doc = {**asdict(done), "checks": [asdict(c) for c in report.checks], "explain": report.explain()}
        mc.log_text(rid, json.dumps(doc, indent=2, default=str), "nightly/verdict.json")
    log.info("nightly run %s logged to %s: %s", rid, tracking.shown_uri, "pass" if report.passed else "FAIL")
    return done


# --- the last verdict, in the project ------------------------------------------------------------------------------

VERDICTS = ("pass", "fail", "could not check")


def record_verdict(path: Path, report: RegressionReport | None = None, error: BaseException | None = None) -> dict:
    """Write the last nightly verdict to `path` (atomically; `alpr-ops status` reads it): "pass"/"fail" with the
    broken gates and the MLflow run, or "could not check" with the reason (a store that did not answer, no champion,
    a champion this machine cannot run). Written also when the store is down: it is the operator's one record then."""
    from tasks.support.config import redact_text
    from tasks.support.fsutil import atomic_write_text

    doc: dict[str, Any] = {"checked_at": datetime.now(UTC).isoformat(timespec="seconds")}
    if report is not None:
        doc |= {
            "verdict": "pass" if report.passed else "fail",
            "champion_version": report.champion_version,
            "broken": [c.gate for c in report.broken],
            "mlflow_run_id": report.mlflow_run_id,
            "reason": "" if report.passed else "; ".join(str(c) for c in report.broken),
        }
        if "roi_frames_outside" in report.metrics:  # where the FP32 plates were, against the champion's crop
            doc["roi"] = {
                "crop": list(report.roi_crop),
                "frame_shape": list(report.roi_frame_shape),
                "plates_outside": int(report.metrics.get("roi_plates_outside", 0)),
                "frames_outside": int(report.metrics["roi_frames_outside"]),
                "frames": list(report.outside_roi),
            }
    else:
        reason = redact_text(f"{type(error).__name__}: {error}" if error is not None else "unknown")
        doc |= {"verdict": "could not check", "champion_version": None, "broken": [], "mlflow_run_id": ""}
        doc["reason"] = reason.splitlines()[0][:500]
    try:
        atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    except OSError as e:  # the verdict itself stands; only its copy in the project is missing
        log.warning("nightly: could not write %s: %s", path, e)
    return doc


def last_verdict(path: Path) -> dict | None:
    """The last nightly verdict written to `path` (None: no nightly check has run in this project)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) and doc.get("verdict") in VERDICTS else None
