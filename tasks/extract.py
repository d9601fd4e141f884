"""Sample calibration frames from gate videos by presentation time, with a manifest and an Ultralytics dataset YAML.

Ultralytics' INT8 export reads the `val:` split of the dataset YAML for calibration, so `calibration.yaml` points
both splits at the extracted images.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import pandas as pd
import yaml

from tasks.config import ExtractConfig
from tasks.fsutil import atomic_dir, atomic_write_text
from tasks.progress import steps

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm", ".mjpeg", ".mjpg", ".ts"})
MANIFEST_NAME = "manifest.csv"
IMAGES_NAME = "images"


class ExtractError(RuntimeError):
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


def list_videos(videos_dir: Path) -> tuple[list[Path], dict[str, str]]:
    """Video files in `videos_dir` (sorted) and the other files there with the reason they are not used."""
    if not videos_dir.is_dir():
        raise ExtractError(f"{videos_dir}: no such folder. Put gate videos there or pass --videos DIR.")
    videos, skipped = [], {}
    for path in sorted(p for p in videos_dir.iterdir() if p.is_file() and not p.name.startswith(".")):
        if path.suffix.lower() in VIDEO_SUFFIXES:
            videos.append(path)
        else:
            skipped[path.name] = f"not a video file ({path.suffix or 'no suffix'})"
    return videos, skipped


def sample_video(video: Path, images_dir: Path, cfg: ExtractConfig) -> list[dict[str, object]]:
    """Write one JPEG per `interval_s` of presentation time (at most `max_frames_per_video`); return manifest rows.

    Skipped frames are only grabbed (decoded, not converted to BGR), which is the cheap path in OpenCV.
    Raises ValueError when the file cannot be opened or yields no frame.
    """
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise ValueError("cannot be opened as a video (unreadable, empty or not a video)")
    try:
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        rows: list[dict[str, object]] = []
        next_t, index, half_frame = 0.0, -1, (0.5 / fps if fps > 0 else 0.0)
        while len(rows) < cfg.max_frames_per_video and cap.grab():
            index += 1
            msec = cap.get(cv2.CAP_PROP_POS_MSEC)
            t = msec / 1000.0 if msec > 0 or index == 0 else (index / fps if fps > 0 else float(index))
            if t + half_frame < next_t:
                continue
            ok, frame = cap.retrieve()
            if not ok or frame is None:
                continue
            ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality])
            if not ok:
                continue
            data = jpeg.tobytes()
            name = f"{video.stem}_{index:06d}.jpg"
            (images_dir / name).write_bytes(data)
            rows.append(
                {
                    "image": f"{IMAGES_NAME}/{name}",
                    "video": video.name,
                    "frame_index": index,
                    "timestamp_s": round(t, 4),
                    "width": frame.shape[1],
                    "height": frame.shape[0],
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
            )
            while next_t <= t + half_frame:
                next_t += cfg.interval_s
    finally:
        cap.release()
    if not rows:
        raise ValueError("has no decodable frame")
    return rows


def frames_hash(manifest: pd.DataFrame) -> str:
    """Content hash of a frame set: independent of extraction order and of where the folder lives."""
    lines = sorted(f"{img}:{sha}" for img, sha in zip(manifest["image"], manifest["sha256"], strict=True))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def write_dataset_yaml(path: Path, images_dir: Path, names: tuple[str, ...]) -> Path:
    """An Ultralytics dataset YAML whose `train`/`val` point at `images_dir`, relative to the YAML's folder."""
    rel = Path(os.path.relpath(images_dir, path.parent)).as_posix()
    doc = {"train": rel, "val": rel, "names": dict(enumerate(names))}
    header = "# Written by `alpr-ops extract`. Ultralytics INT8 export calibrates on the `val` images.\n"
    return atomic_write_text(path, header + yaml.safe_dump(doc, sort_keys=False))


def extract_frames(
    videos_dir: Path, out_dir: Path, dataset_yaml: Path, cfg: ExtractConfig, names: tuple[str, ...]
) -> ExtractResult:
    """Extract calibration frames from every video in `videos_dir` into `out_dir` (replaced atomically)."""
    videos, skipped = list_videos(videos_dir)
    rows: list[dict[str, object]] = []
    per_video: dict[str, int] = {}
    with atomic_dir(out_dir) as tmp:
        images = tmp / IMAGES_NAME
        images.mkdir()
        for video in steps(videos, "extract: sampling videos"):
            try:
                got = sample_video(video, images, cfg)
            except ValueError as e:
                skipped[video.name] = str(e)
                log.warning("skipping %s: %s", video, e)
                continue
            per_video[video.name] = len(got)
            rows.extend(got)
        if not rows:
            detail = "; ".join(f"{k}: {v}" for k, v in skipped.items()) or "the folder is empty"
            raise ExtractError(
                f"no frames could be extracted from {videos_dir} ({detail}). "
                "Add readable gate videos (e.g. `alpr-ops sample-videos data/videos`) and run again."
            )
        table = pd.DataFrame(rows)
        table.to_csv(tmp / MANIFEST_NAME, index=False)
    write_dataset_yaml(dataset_yaml, out_dir / IMAGES_NAME, names)
    digest = frames_hash(table)
    log.info("extracted %d frames from %d videos (%d files skipped)", len(table), len(per_video), len(skipped))
    return ExtractResult(out_dir, out_dir / MANIFEST_NAME, dataset_yaml, len(table), digest, per_video, skipped)


def check_dataset_yaml(dataset_yaml: Path, out_dir: Path) -> Path:
    """Fail unless `dataset_yaml`'s `val` images are `out_dir`'s, so the recorded frames hash is the frames used."""
    if not dataset_yaml.is_file():
        raise ExtractError(f"{dataset_yaml}: not found. Run `alpr-ops extract` first.")
    doc = yaml.safe_load(dataset_yaml.read_text()) or {}
    base = dataset_yaml.parent / doc["path"] if doc.get("path") else dataset_yaml.parent
    val = (base / str(doc.get("val", ""))).resolve()
    if val != (out_dir / IMAGES_NAME).resolve():
        raise ExtractError(
            f"{dataset_yaml}: `val` is {val}, not the frames in {out_dir / IMAGES_NAME}. "
            "Pass the matching --data and --frames, or run `alpr-ops extract` to rewrite it."
        )
    return dataset_yaml


def read_frames_hash(out_dir: Path) -> str:
    """The content hash of an existing frame set, from its manifest."""
    manifest = out_dir / MANIFEST_NAME
    if not manifest.is_file():
        raise ExtractError(f"{manifest}: not found. Run `alpr-ops extract` first.")
    return frames_hash(pd.read_csv(manifest))
