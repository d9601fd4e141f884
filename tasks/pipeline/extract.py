"""Sample calibration frames from gate videos by presentation time, with a manifest and an Ultralytics dataset YAML.

Ultralytics' INT8 export reads the `val:` split of the dataset YAML for calibration, so `calibration.yaml` points
both splits at the extracted images.

Incremental and DVC-truthful: each video's frames are extracted once into a frame cache (`paths.frame_cache`, outside
every DVC output) under the video's content hash and a key of the extraction params and code, then the output
folders (`paths.calibration`, `paths.holdout_frames`) are assembled from that cache (hard links) and replaced
atomically. `dvc repro` deletes the outputs before running the stage, but not the cache, so it re-decodes only new
or changed videos; since the cache key covers everything the frames depend on, the outputs are always exactly what a
from-scratch run would write, which is what DVC's lock records.

Both output folders are replaced only when they are this project's (`tasks.support.fsutil.check_output_folder`:
marked `.alpr-ops-output`, empty, or a frame set an older version wrote: manifest.csv with nothing but images/ and
report.json beside it), checked before anything is read; a frame cache that cannot be written stops the run before
any video is read, as a cache error (`CacheUnwritable`), never as videos that "cannot be read".
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Collection
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import av
import cv2
import pandas as pd
import yaml

from tasks.pipeline import decode, extract_worker
from tasks.pipeline.extract_worker import ENTRY_NAME, FrameParams, Job, extract_one, init_worker
from tasks.pipeline.labels import holdout_videos, read_holdout_info
from tasks.support.cache import CacheStore, CacheUnwritable
from tasks.support.config import ExtractConfig, LabelConfig
from tasks.support.errors import AlprError, Remedy
from tasks.support.fsutil import OutputFolder, atomic_dir, check_output_folder
from tasks.support.hashing import content_key, sha256_bytes, sha256_file
from tasks.support.images import write_dataset_yaml
from tasks.support.progress import VideoBars
from tasks.support.videos import VideoInput, file_sha256, hash_memos, list_videos, snapshot_videos

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.csv"
IMAGES_NAME = "images"
REPORT_NAME = "report.json"
COLUMNS = [
    "image", "video", "frame_index", "timestamp_s", "width", "height", "sha256", "video_sha256", "brightness", "split",
]  # fmt: skip
REPORT_KEYS = ("video_sha256", "status", "reason", "mode", "rotation", "duration_s", "decoded_frames", "samples",
               "dropped", "notes")  # fmt: skip
# extraction params that change a video's frames (not the split, not the number of workers)
# Starting a worker process (spawn: a fresh interpreter importing PyAV, OpenCV, numpy) costs about a second; below
# about a minute of 720p video in total, decoding in this process is faster than starting the pool.
POOL_MIN_WORK = 1280 * 720 * 60.0
FRAME_PARAMS = tuple(f.name for f in fields(FrameParams))
ENTRIES = "entries"  # the frame cache's folder of entries (beside the memoised video hashes)
# the two frame sets; one without the marker (written before it existed) is ours when it holds a manifest and
# nothing but images/ and report.json beside it
CALIBRATION_OUTPUT = OutputFolder("paths.calibration", MANIFEST_NAME, frozenset({IMAGES_NAME, REPORT_NAME}))
HOLDOUT_FRAMES_OUTPUT = dataclasses.replace(CALIBRATION_OUTPUT, setting="paths.holdout_frames")


class ExtractError(AlprError):
    """No usable frame could be extracted; the message says which files and what to do."""


@dataclass(frozen=True)
class ExtractResult:
    """What `extract_frames` produced, and what it skipped and why."""

    out_dir: Path
    manifest: Path
    dataset_yaml: Path
    frames: int
    frames_hash: str
    per_video: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    holdout_dir: Path | None = None
    holdout_frames: int = 0
    report: dict[str, Any] = field(default_factory=dict)
    inputs: tuple[VideoInput, ...] = ()  # every video file listed at the start (reserved ones included)


@lru_cache(maxsize=1)
def _code_version() -> str:
    """Hash of the code and decoders that turn a video into frames: a change there invalidates the frame cache."""
    sources = [Path(m) for m in (__file__, decode.__file__, extract_worker.__file__)]
    decoders = {"av": av.__version__, "ffmpeg": av.ffmpeg_version_info, "cv2": cv2.__version__}
    return content_key({"decoders": decoders, "sources": [sha256_file(f) for f in sources]})


def params_key(cfg: ExtractConfig) -> str:
    """Key of everything a video's extracted frames depend on besides the video itself."""
    doc = {k: getattr(cfg, k) for k in FRAME_PARAMS} | {"code": _code_version()}
    return content_key(doc)[:16]


def frame_store(cache_dir: Path) -> CacheStore:
    """The frame cache's entries (`<frame cache>/entries/`): one folder per video content and `params_key`."""
    return CacheStore(cache_dir / ENTRIES, setting="paths.frame_cache")


def frame_key(video_sha256: str, params: str) -> str:
    """The key of a video's frames: its content hash and the extraction's `params_key`."""
    return f"{video_sha256}-{params}"


def reserved_videos(videos_dir: Path, holdout_dir: Path, proposal_dir: Path, cfg: LabelConfig) -> tuple[str, ...]:
    """The videos kept for the labelled holdout: never calibration frames, never agreement frames.

    Labelled frames seconds away from frames the INT8 build calibrates on or is gated on would score it
    optimistically, so the split is by video. Reserved: `label.videos`, the videos the labelled holdout came from
    (`holdout.json`) and those a labelling proposal was made from (`proposal.json`), for good. Nothing else is
    inferred: a missing holdout or proposal reserves nothing (which videos to label is chosen by `label propose`).
    """
    present = {v.name for v in list_videos(videos_dir)[0]}
    reserved = set(_named_for_labels(videos_dir, present, cfg))
    for info in (read_holdout_info(holdout_dir), read_proposal_videos(proposal_dir)):
        if info is not None:
            reserved |= set(holdout_videos(info)) & present
    return tuple(sorted(reserved))


def videos_to_label(videos_dir: Path, holdout_dir: Path, cfg: LabelConfig, cache_dir: Path) -> tuple[str, ...]:
    """Which videos a labelling proposal samples: `label.videos`; else those of an existing labelled holdout (more
    frames of the same videos); else the `label.fraction` share with the highest content hashes (the agreement
    split takes the lowest), at least one and never all."""
    videos, _ = list_videos(videos_dir)
    if cfg.videos:
        return _named_for_labels(videos_dir, {v.name for v in videos}, cfg)
    info = read_holdout_info(holdout_dir)
    if info is not None and holdout_videos(info):
        return tuple(sorted(set(holdout_videos(info)) & {v.name for v in videos}))
    if cfg.fraction == 0 or len(videos) < 2:
        return ()
    k = min(len(videos) - 1, max(1, round(len(videos) * cfg.fraction)))
    ranked = sorted(videos, key=lambda v: int(file_sha256(v, cache_dir)[:16], 16), reverse=True)
    return tuple(sorted(v.name for v in ranked[:k]))


def _named_for_labels(videos_dir: Path, present: set[str], cfg: LabelConfig) -> tuple[str, ...]:
    """`label.videos`, every one of which must be in the folder (a typo would silently reserve nothing)."""
    unknown = sorted(set(cfg.videos) - present)
    if unknown:
        raise ExtractError(f"label.videos names {unknown}, which {videos_dir} does not hold", remedy=Remedy.PARAMS)
    return tuple(sorted(cfg.videos))


def read_proposal_videos(proposal_dir: Path) -> dict[str, Any] | None:
    """`proposal.json` of a labelling proposal (None when there is none): its `videos` are reserved."""
    path = proposal_dir / "proposal.json"
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as e:
        raise ExtractError(f"{path}: not valid JSON ({e}); remove the proposal or propose again") from e
    if not isinstance(info, dict):
        raise ExtractError(f"{path}: expected an object, got {type(info).__name__}")
    return info


def split_of(video_sha256: str, holdout_fraction: float) -> str:
    """Deterministic split by video content: the same video always lands on the same side, whatever else is there."""
    return "holdout" if int(video_sha256[:16], 16) / 2**64 < holdout_fraction else "calibration"


def _pixel_seconds(video: Path) -> float:
    """Decoding work in a video (width x height x seconds) from its header; 0 when it cannot be opened."""
    try:
        with av.open(str(video), metadata_errors="ignore") as c:
            s = c.streams.video[0]
            seconds = float(s.duration * s.time_base) if s.duration else (c.duration or 0) / 1e6
            return s.codec_context.width * s.codec_context.height * seconds
    except (av.error.FFmpegError, IndexError, OSError, UnicodeDecodeError):
        return 0.0


def _run_jobs(jobs: list[Job], workers: int) -> tuple[dict[str, dict[str, Any]], int]:
    """Run the decode jobs, in `workers` processes when there is enough work to pay for starting them."""
    out: dict[str, dict[str, Any]] = {}
    if not jobs:
        return out, 0
    serial = workers == 1 or len(jobs) == 1 or sum(map(_pixel_seconds, (j.video for j in jobs))) < POOL_MIN_WORK
    with VideoBars(len(jobs), "extract: decoding videos") as bars:
        if serial:
            for job in jobs:
                out[job.video.name] = extract_one(job, bars.update)
                bars.finish(job.video.name)
            return out, 1
        ctx = multiprocessing.get_context("spawn")  # no fork of a process holding threads (progress, decoders)
        queue = ctx.Queue()
        with ProcessPoolExecutor(min(workers, len(jobs)), ctx, init_worker, (queue,)) as pool:
            futures: dict[Future[dict[str, Any]], Job] = {pool.submit(extract_one, job): job for job in jobs}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                while not queue.empty():
                    with contextlib.suppress(Exception):
                        bars.update(*queue.get_nowait())
                for fut in done:
                    job = futures[fut]
                    try:
                        out[job.video.name] = fut.result()
                    except CacheUnwritable:  # the cache's fault, not the video's: stop, naming the cache
                        pool.shutdown(wait=False, cancel_futures=True)
                        raise
                    except Exception as e:  # a worker died (killed, out of memory): report it, keep the rest
                        out[job.video.name] = {"status": "failed", "reason": f"worker failed: {e}", "rows": []}
                    bars.finish(job.video.name)
    return out, min(workers, len(jobs))


def _remove_temps(folder: Path, prefix: str) -> None:
    """Remove temp folders a killed run left behind (`atomic_dir` names them `.<name>-*-tmp`)."""
    if folder.is_dir():
        for tmp in folder.glob(f".{prefix}*-tmp"):
            shutil.rmtree(tmp, ignore_errors=True)


def _link(src: Path, dst: Path) -> None:
    """Hard-link a cached frame into an output folder (copy across file systems); cache files are never edited."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _write_frame_set(
    target: Path,
    videos: list[tuple[str, dict[str, Any], Path]],
    split: str,
    report: dict[str, Any] | None,
    output: OutputFolder,
) -> pd.DataFrame:
    """Replace `target` atomically with images/ (linked from the cache), manifest.csv and optionally report.json;
    only when it is ours (`output`), and marked as ours."""
    rows: list[dict[str, Any]] = []
    with atomic_dir(target, output) as tmp:
        images = tmp / IMAGES_NAME
        images.mkdir()
        for name, entry, entry_dir in videos:
            stem = Path(name).stem
            for r in entry["rows"]:
                image = f"{stem}_{r['frame_index']:06d}.jpg"
                _link(entry_dir / f"{r['frame_index']:06d}.jpg", images / image)
                rows.append({"image": f"{IMAGES_NAME}/{image}", "video": name, **r,
                             "video_sha256": entry["video_sha256"], "split": split})  # fmt: skip
        table = pd.DataFrame(rows, columns=COLUMNS)
        table.to_csv(tmp / MANIFEST_NAME, index=False)
        if report is not None:
            (tmp / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
    return table


def frames_hash(manifest: pd.DataFrame) -> str:
    """Content hash of a frame set: independent of extraction order and of where the folder lives."""
    lines = sorted(f"{img}:{sha}" for img, sha in zip(manifest["image"], manifest["sha256"], strict=True))
    return sha256_bytes("\n".join(lines).encode())  # recorded on candidates and runs, keyed on by the build cache


def extract_frames(
    videos_dir: Path,
    out_dir: Path,
    dataset_yaml: Path,
    cfg: ExtractConfig,
    names: tuple[str, ...],
    holdout_dir: Path | None = None,
    cache_dir: Path | None = None,
    reserved: Collection[str] = (),
) -> ExtractResult:
    """Extract frames from every video in `videos_dir`: calibration videos into `out_dir`, holdout ones into
    `holdout_dir` (split by video hash), each folder replaced atomically; only videos not in `cache_dir` are decoded.
    Videos named in `reserved` (kept for the labelled holdout: `reserved_videos`) are not read at all.

    Without `cache_dir` every video is decoded (into a temp cache); without `holdout_dir` the holdout videos' frames
    are not written. `out_dir/report.json` says, per video, what was kept and dropped and why, and what was decoded.
    One extraction per output folder at a time: a run removes temp folders that a killed run left behind.
    Before anything is read: `NotOurFolder` when an output folder is not this project's, `CacheUnwritable` when
    the frame cache cannot be written.
    """
    check_output_folder(out_dir, CALIBRATION_OUTPUT)
    if holdout_dir is not None:
        check_output_folder(holdout_dir, HOLDOUT_FRAMES_OUTPUT)
    videos, skipped = list_videos(videos_dir)
    held_for_labels = sorted(v.name for v in videos if v.name in set(reserved))
    with contextlib.ExitStack() as stack:
        if cache_dir is None:
            cache_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="alpr-frames-")))
        store = frame_store(cache_dir)
        for cache in (store, hash_memos(cache_dir)):
            cache.check_writable()
        inputs = snapshot_videos(videos, cache_dir, skipped)
        videos = [v for v in videos if v.name not in set(reserved) and v.name not in skipped]
        store.remove_temps()
        for target in (out_dir, holdout_dir):
            if target is not None:
                _remove_temps(target.parent, f"{target.name}-")
        key = params_key(cfg)
        frame_params = FrameParams(**{k: getattr(cfg, k) for k in FRAME_PARAMS})
        entries: dict[str, tuple[dict[str, Any], Path]] = {}
        jobs: list[Job] = []
        for video in videos:
            try:
                sha = file_sha256(video, cache_dir)
            except OSError as e:
                skipped[video.name] = f"cannot be read: {e}"
                continue
            entry_dir = store.path(frame_key(sha, key))
            try:
                entries[video.name] = (json.loads((entry_dir / ENTRY_NAME).read_text()), entry_dir)
            except (OSError, ValueError):
                jobs.append(Job(video, sha, store, frame_key(sha, key), frame_params))
        decoded, processes = _run_jobs(jobs, cfg.workers)
        for job in jobs:
            entries[job.video.name] = (decoded[job.video.name], job.entry)
        if held_for_labels:
            log.info("%d videos reserved for the labelled holdout, not extracted: %s", len(held_for_labels),
                     held_for_labels)  # fmt: skip
        result = _assemble(
            videos_dir, out_dir, dataset_yaml, cfg, names, holdout_dir, entries, skipped, jobs, key, processes,
            held_for_labels,
        )  # fmt: skip
    return dataclasses.replace(result, inputs=inputs)


def _assemble(
    videos_dir: Path,
    out_dir: Path,
    dataset_yaml: Path,
    cfg: ExtractConfig,
    names: tuple[str, ...],
    holdout_dir: Path | None,
    entries: dict[str, tuple[dict[str, Any], Path]],
    skipped: dict[str, str],
    jobs: list[Job],
    key: str,
    processes: int,
    reserved: list[str],
) -> ExtractResult:
    """Split the usable videos, write both frame sets and the report; fail when no calibration frame remains."""
    usable: dict[str, tuple[dict[str, Any], Path]] = {}
    stems: dict[str, str] = {}
    for name, (entry, entry_dir) in sorted(entries.items()):
        if entry["status"] != "ok" or not entry["rows"]:
            skipped[name] = entry.get("reason") or "no frame kept"
        elif Path(name).stem in stems:
            skipped[name] = f"same name stem as {stems[Path(name).stem]}: its frames would collide; rename one"
        else:
            stems[Path(name).stem] = name
            usable[name] = (entry, entry_dir)
    for name, reason in skipped.items():
        log.warning("skipping %s: %s", videos_dir / name, reason)
    if not usable:
        detail = "; ".join(f"{k}: {v}" for k, v in skipped.items()) or "the folder is empty"
        raise ExtractError(f"no frames could be extracted from {videos_dir} ({detail})", remedy=Remedy.SAMPLE_VIDEOS)
    split = {name: split_of(e["video_sha256"], cfg.holdout_fraction) for name, (e, _) in usable.items()}
    score = {name: int(e["video_sha256"][:16], 16) for name, (e, _) in usable.items()}
    if all(s == "holdout" for s in split.values()):  # the calibration set must never be empty
        keep = max(usable, key=score.__getitem__)
        split[keep] = "calibration"
        log.warning("every video fell in the holdout split; %s is used for calibration instead", keep)
    elif cfg.holdout_fraction > 0 and len(usable) > 1 and "holdout" not in split.values():
        held = min(usable, key=score.__getitem__)  # a requested holdout is never empty (the nearest video by hash)
        split[held] = "holdout"
        log.info("no video fell in the holdout split by hash; %s is held out", held)
    decoded_names = {job.video.name for job in jobs}
    per_video_report = {
        name: {
            "split": split.get(name),
            "decoded": name in decoded_names,
            "kept": len(entry["rows"]) if name in usable else 0,
            **{k: entry.get(k) for k in REPORT_KEYS},
        }
        for name, (entry, _) in sorted(entries.items())
    }
    report = {
        "params_key": key,
        "videos": per_video_report,
        "skipped": dict(sorted(skipped.items())),
        "decoded_videos": len(jobs),
        "worker_processes": processes,
        "cached_videos": len(entries) - len(jobs),
        "reserved_for_labels": reserved,
        "decoded_frames": sum(int(e.get("decoded_frames") or 0) for name, (e, _) in entries.items()
                              if name in decoded_names),
    }  # fmt: skip
    sets = {s: [(n, *usable[n]) for n in sorted(usable) if split[n] == s] for s in ("calibration", "holdout")}
    report["calibration_frames"] = sum(len(e["rows"]) for _, e, _ in sets["calibration"])
    report["holdout_frames"] = sum(len(e["rows"]) for _, e, _ in sets["holdout"])
    holdout_count = 0
    if holdout_dir is not None:
        holdout_count = len(_write_frame_set(holdout_dir, sets["holdout"], "holdout", None, HOLDOUT_FRAMES_OUTPUT))
    elif sets["holdout"]:
        log.warning("no holdout folder given: frames of %d holdout videos are not written", len(sets["holdout"]))
    table = _write_frame_set(out_dir, sets["calibration"], "calibration", report, CALIBRATION_OUTPUT)
    note = "Written by extraction. Ultralytics INT8 export calibrates on the `val` images."
    write_dataset_yaml(dataset_yaml, out_dir / IMAGES_NAME, names, note)
    digest = frames_hash(table)
    log.info(
        "extracted %d calibration + %d holdout frames from %d videos (%d decoded, %d from cache, %d files skipped)",
        len(table), holdout_count, len(usable), len(jobs), len(entries) - len(jobs), len(skipped),
    )  # fmt: skip
    per_video = {name: len(e["rows"]) for name, (e, _) in usable.items()}
    return ExtractResult(
        out_dir, out_dir / MANIFEST_NAME, dataset_yaml, len(table), digest, per_video, dict(skipped),
        holdout_dir, holdout_count, report,
    )  # fmt: skip


def check_dataset_yaml(dataset_yaml: Path, out_dir: Path) -> Path:
    """Fail unless `dataset_yaml`'s `val` images are `out_dir`'s, so the recorded frames hash is the frames used."""
    if not dataset_yaml.is_file():
        raise ExtractError(f"{dataset_yaml}: not found", remedy=Remedy.EXTRACT)
    doc = yaml.safe_load(dataset_yaml.read_text()) or {}
    base = dataset_yaml.parent / doc["path"] if doc.get("path") else dataset_yaml.parent
    val = (base / str(doc.get("val", ""))).resolve()
    if val != (out_dir / IMAGES_NAME).resolve():
        raise ExtractError(
            f"{dataset_yaml}: `val` is {val}, not the frames in {out_dir / IMAGES_NAME}", remedy=Remedy.EXTRACT
        )
    return dataset_yaml


def read_frames_hash(out_dir: Path) -> str:
    """The content hash of an existing frame set, from its manifest."""
    manifest = out_dir / MANIFEST_NAME
    if not manifest.is_file():
        raise ExtractError(f"{manifest}: not found", remedy=Remedy.EXTRACT)
    return frames_hash(pd.read_csv(manifest))
