"""Frames in, detections out, on any runner: the gate's whole inference path without PyTorch.

An engine built for a camera's region of interest carries its crop in its embedded build metadata (`crop`, x1, y1,
x2, y2 frame pixels, and `frame_shape`, the frame size it applies to; tasks/support/roi.py): the detector crops each
full frame to it, letterboxes the crop and maps the boxes back to full-frame pixels, so every caller (validation,
the gate runtime, the TensorRT gate worker, the nightly check) hands it full frames and gets full-frame boxes. A
frame of another size is refused (`FrameSizeMismatch`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tasks.edge.agreement import Detections
from tasks.edge.postprocess import check_output, decode
from tasks.edge.preprocess import preprocess
from tasks.edge.runners import Runner, open_runner
from tasks.support.candidate import META_KEY


def crop_contract(runner: Runner) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(crop, frame_shape) the artifact was built for, from its embedded build metadata; ((), ()) for the full frame
    (no crop recorded, or metadata from before crops existed)."""
    ours = runner.metadata.get(META_KEY) or {}
    crop = tuple(int(v) for v in ours.get("crop") or ())
    frame_shape = tuple(int(v) for v in ours.get("frame_shape") or ())
    if crop and (len(crop) != 4 or len(frame_shape) != 2):
        raise ValueError(f"embedded crop {list(crop)} / frame_shape {list(frame_shape)}: not [x1, y1, x2, y2] / [h, w]")
    return crop, frame_shape


@dataclass
class Detector:
    """A runner with Ultralytics-equivalent pre- and post-processing, at the runner's own input shape."""

    runner: Runner
    max_det: int = 300
    what: str = "model"
    crop: tuple[int, ...] = field(init=False, default=())  # x1, y1, x2, y2 frame pixels; () the full frame
    frame_shape: tuple[int, ...] = field(init=False, default=())  # (height, width) the crop applies to

    def __post_init__(self) -> None:
        """Refuse a model whose output the decoder would misread (`check_output`), before any frame; read the crop
        the artifact was built for."""
        check_output(self.runner.output_shape, self.runner.metadata, self.what)
        self.crop, self.frame_shape = crop_contract(self.runner)

    @classmethod
    def open(cls, artifact: Path, threads: int = 0) -> Detector:
        runner = open_runner(artifact, threads)
        try:
            return cls(runner, what=str(artifact))
        except Exception:
            close = getattr(runner, "close", None)
            if close is not None:
                close()
            raise

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.runner.input_hw

    @property
    def frame_hw(self) -> tuple[int, ...]:
        """(height, width) of the frames it takes: the crop's frame size, or (any size) its input's."""
        return self.frame_shape or self.input_hw

    def close(self) -> None:
        """Free what the runtime holds outside Python's heap (a TensorRT context and its GPU buffers)."""
        close = getattr(self.runner, "close", None)
        if close is not None:
            close()

    def __call__(self, frame: np.ndarray, conf: float = 0.25, iou: float = 0.7) -> Detections:
        """Detections on a BGR frame (cropped to the artifact's crop, letterboxed to its input; boxes in full-frame
        pixels). Any size without a crop; with one, only the frame size it was built for (`FrameSizeMismatch`)."""
        batch, boxes = preprocess([frame], self.input_hw, self.crop, self.frame_shape, self.what)
        return decode(self.runner(batch)[0], boxes[0], conf, iou, self.max_det)


def _batch(runner: Runner, frame: np.ndarray | None) -> np.ndarray:
    if frame is not None:  # cropped as the detector crops it: the engine's input is the crop's letterbox
        crop, frame_shape = crop_contract(runner)
        return preprocess([frame], runner.input_hw, crop, frame_shape)[0]
    return np.zeros((1, 3, *runner.input_hw), dtype=np.float32)


def time_runner(runner: Runner, warmup: int, runs: int, frame: np.ndarray | None = None) -> list[float]:
    """Milliseconds of each of `runs` inferences after `warmup` runs, on `frame` (BGR, letterboxed as for detection)
    or, without one, on a blank input of the runner's shape: the end-to-end time of a call (copies in and out, and
    for a TensorRT runner the host's Python around the engine)."""
    batch = _batch(runner, frame)
    for _ in range(warmup):
        runner(batch)
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        runner(batch)
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


def percentiles(samples: list[float], prefix: str = "latency") -> dict[str, float]:
    """p50 and p95 of latency samples (NumPy's linear interpolation), in ms."""
    return {
        f"{prefix}_p50_ms": round(float(np.percentile(samples, 50)), 3),
        f"{prefix}_p95_ms": round(float(np.percentile(samples, 95)), 3),
    }


def time_model(
    runner: Runner, warmup: int, runs: int, frame: np.ndarray | None = None
) -> tuple[dict[str, float], list[float]]:
    """(latency metrics, the samples behind `latency_*`). A runner that can time its engine alone (`time_engine`:
    TensorRT, between CUDA events on buffers bound once) gives `latency_p50_ms`/`p95` from that, the figure the
    speed-up is computed from, and the end-to-end time of a call beside it (`e2e_latency_*`); other runners' call
    time is both."""
    e2e = time_runner(runner, warmup, runs, frame)
    time_engine = getattr(runner, "time_engine", None)
    if time_engine is None:
        return {**percentiles(e2e), **percentiles(e2e, "e2e_latency")}, e2e
    device = time_engine(_batch(runner, frame), warmup, runs)
    return {**percentiles(device), **percentiles(e2e, "e2e_latency")}, device
