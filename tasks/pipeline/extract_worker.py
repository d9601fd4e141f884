"""The part of extraction that runs in worker processes: decode one video, pick its frames, write its cache entry.

Kept apart from `tasks.pipeline.extract` so a spawned worker imports only what decoding needs (PyAV, OpenCV, numpy), not
pandas or the config models: process start-up is paid once per worker per run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tasks.pipeline.decode import FrameSampler, Sample, VideoError
from tasks.support.cache import CacheStore
from tasks.support.hashing import sha256_bytes

log = logging.getLogger(__name__)

ENTRY_NAME = "entry.json"
THUMB = 32  # side of the grayscale thumbnail compared for near-duplicates


@dataclass(frozen=True)
class FrameParams:
    """The extraction params that shape one video's frames (a plain copy of `ExtractConfig`'s fields)."""

    interval_s: float
    max_frames_per_video: int
    jpeg_quality: int
    keyframe_tolerance_s: float
    dedup_threshold: float
    brightness_bins: int


@dataclass
class _Candidate:
    t: float
    index: int
    jpeg: bytes
    thumb: np.ndarray
    brightness: float
    width: int
    height: int


class Selector:
    """Near-duplicate rejection, brightness strata and the per-video cap, in bounded memory.

    Each stratum keeps at most 2 x cap JPEG-encoded candidates: when it overflows every other one is dropped and only
    every 2^k-th later candidate is taken, so what is left stays spread evenly over the whole video.
    """

    def __init__(self, cfg: FrameParams) -> None:
        self.cfg = cfg
        bins = cfg.brightness_bins
        self.bins: list[list[_Candidate]] = [[] for _ in range(bins)]
        self.stride, self.seen = [1] * bins, [0] * bins
        self.dropped = {"duplicate": 0, "cap": 0}
        self.offered = 0

    def offer(self, sample: Sample) -> None:
        self.offered += 1
        gray = cv2.cvtColor(sample.image, cv2.COLOR_BGR2GRAY)
        thumb = cv2.resize(gray, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        threshold = self.cfg.dedup_threshold
        if threshold > 0 and any(float(np.abs(thumb - c.thumb).mean()) < threshold for b in self.bins for c in b):
            self.dropped["duplicate"] += 1
            return
        brightness = float(gray.mean())
        b = min(int(brightness / 256.0 * len(self.bins)), len(self.bins) - 1)
        self.seen[b] += 1
        if (self.seen[b] - 1) % self.stride[b]:
            self.dropped["cap"] += 1
            return
        ok, jpeg = cv2.imencode(".jpg", sample.image, [cv2.IMWRITE_JPEG_QUALITY, self.cfg.jpeg_quality])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for the frame at {sample.t:.3f} s")
        h, w = sample.image.shape[:2]
        stratum = self.bins[b]
        stratum.append(_Candidate(sample.t, sample.index, jpeg.tobytes(), thumb, round(brightness, 2), w, h))
        if len(stratum) > 2 * self.cfg.max_frames_per_video:
            self.dropped["cap"] += len(stratum) - len(stratum[::2])
            stratum[:] = stratum[::2]
            self.stride[b] *= 2

    def select(self) -> list[_Candidate]:
        """Up to `max_frames_per_video` frames, shared evenly between the brightness strata, in time order."""
        cap, quota = self.cfg.max_frames_per_video, [0] * len(self.bins)
        while sum(quota) < cap and any(q < len(b) for q, b in zip(quota, self.bins, strict=True)):
            for i, stratum in enumerate(self.bins):
                if quota[i] < len(stratum) and sum(quota) < cap:
                    quota[i] += 1
        kept: list[_Candidate] = []
        for q, stratum in zip(quota, self.bins, strict=True):
            if q:
                idx = np.floor(np.linspace(0, len(stratum) - 1, q) + 0.5).astype(int)
                kept.extend(stratum[i] for i in idx)
        self.dropped["cap"] += sum(len(b) for b in self.bins) - len(kept)
        return sorted(kept, key=lambda c: c.t)


@dataclass(frozen=True)
class Job:
    video: Path
    sha256: str
    store: CacheStore  # the frame cache's entries
    key: str
    cfg: FrameParams

    @property
    def entry(self) -> Path:
        return self.store.path(self.key)


_progress_queue: Any = None  # set in pool workers by `init_worker`


def init_worker(queue: Any) -> None:
    global _progress_queue
    _progress_queue = queue


def extract_one(job: Job, progress: Callable[[str, float, float], None] | None = None) -> dict[str, Any]:
    """Decode one video into its cache entry (written atomically) and return the entry.

    Content problems (empty, not a video, no decodable frame) are cached as failed entries: the same bytes fail the
    same way. Anything else (a bug, running out of memory) is returned as a failure but not cached. A cache entry
    that cannot be written raises `CacheUnwritable` (from the store): the cache's error, never the video's.
    """
    name = job.video.name
    report = progress or (lambda n, t, total: _progress_queue.put((n, t, total)) if _progress_queue else None)
    sampler = FrameSampler(job.video, job.cfg.interval_s, job.cfg.keyframe_tolerance_s)
    sampler.progress = lambda t: report(name, t, sampler.stats.duration_s)
    selector = Selector(job.cfg)
    reason, cache_it = None, True
    try:
        for sample in sampler:
            selector.offer(sample)
    except VideoError as e:
        reason = str(e)
    except Exception as e:  # keep the other videos going; the report names the file and the error
        log.exception("%s: extraction failed", job.video)
        reason, cache_it = f"extraction failed: {type(e).__name__}: {e}", False
    kept = [] if reason else selector.select()
    st = sampler.stats
    entry = {
        "video_sha256": job.sha256,
        "status": "failed" if reason else "ok",
        "reason": reason,
        "mode": st.mode,
        "rotation": st.rotation,
        "duration_s": round(st.duration_s, 3),
        "notes": [*st.notes, *([f"demuxing stopped early: {st.error}"] if st.error else [])],
        "decoded_frames": st.decoded,
        "packets": st.packets,
        "samples": selector.offered,
        "dropped": {**selector.dropped, "unreadable": st.unreadable + st.missed},
        "rows": [
            {"frame_index": c.index, "timestamp_s": c.t, "width": c.width, "height": c.height,
             "sha256": sha256_bytes(c.jpeg), "brightness": c.brightness}
            for c in kept
        ],
    }  # fmt: skip
    report(name, st.duration_s, st.duration_s)
    if cache_it:
        with job.store.put(job.key) as tmp:
            for c in kept:
                (tmp / f"{c.index:06d}.jpg").write_bytes(c.jpeg)
            (tmp / ENTRY_NAME).write_text(json.dumps(entry, indent=1))
    return entry
