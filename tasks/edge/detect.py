"""Frames in, detections out, on any runner: the gate's whole inference path without PyTorch."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.edge.agreement import Detections
from tasks.edge.postprocess import check_output, decode
from tasks.edge.preprocess import preprocess
from tasks.edge.runners import Runner, open_runner


@dataclass
class Detector:
    """A runner with Ultralytics-equivalent pre- and post-processing, at the runner's own input shape."""

    runner: Runner
    max_det: int = 300
    what: str = "model"

    def __post_init__(self) -> None:
        """Refuse a model whose output the decoder would misread (`check_output`), before any frame."""
        check_output(self.runner.output_shape, self.runner.metadata, self.what)

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

    def close(self) -> None:
        """Free what the runtime holds outside Python's heap (a TensorRT context and its GPU buffers)."""
        close = getattr(self.runner, "close", None)
        if close is not None:
            close()

    def __call__(self, frame: np.ndarray, conf: float = 0.25, iou: float = 0.7) -> Detections:
        """Detections on a BGR frame of any size (letterboxed to the model's input, boxes in frame pixels)."""
        batch, boxes = preprocess([frame], self.input_hw)
        return decode(self.runner(batch)[0], boxes[0], conf, iou, self.max_det)


def _batch(runner: Runner, frame: np.ndarray | None) -> np.ndarray:
    if frame is not None:
        return preprocess([frame], runner.input_hw)[0]
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
