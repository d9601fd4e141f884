"""Latency of one artifact on its own runtime, measured in a fresh Python process with pinned threads.

A fresh process per candidate because (1) thread counts of OpenMP/oneDNN are read once, at import, so they can only
be pinned before torch/ONNX Runtime/OpenVINO load; (2) earlier candidates' allocations and caches do not colour
later ones. Memory is not measured here: this process holds PyTorch and Ultralytics (~700 MB, the same for every
candidate); `tasks/runtime/memory.py` measures the engine alone. `measure_in_subprocess` runs
`python -m tasks.runtime.latency` and reads back its JSON.

The price of a process per candidate is drift: two candidates timed a minute apart see a different machine, by more
than each one's own spread. So candidates whose latencies come out close are timed again together, interleaved in one
process (`measure_interleaved`), and the promotion reads their ratio and its noise from that (`interleaved_stats`).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tasks.support.errors import AlprError
from tasks.support.machine import cpu_model, gpu_name

log = logging.getLogger(__name__)

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


class LatencyError(AlprError):
    """The measuring subprocess failed; the message carries its stderr."""


def pin_threads(autobackend: Any, artifact: Path, threads: int) -> int:
    """Rebuild the runtime session of an Ultralytics `AutoBackend` with `threads` intra-op threads.

    Ultralytics creates the ONNX Runtime session / OpenVINO compiled model itself with default threading (one thread
    per core); neither honours OMP_NUM_THREADS, so the session is recreated with explicit options. Returns the thread
    count the runtime reports back (0 when the runtime does not report it).
    """
    import torch

    torch.set_num_threads(threads)  # pre/post-processing tensors
    backend = autobackend.backend
    if hasattr(backend, "session"):  # ONNX Runtime
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        backend.session = ort.InferenceSession(str(artifact), options, providers=backend.session.get_providers())
        return int(backend.session.get_session_options().intra_op_num_threads)
    if hasattr(backend, "ov_compiled_model"):  # OpenVINO
        from functools import partial

        import openvino as ov

        core = ov.Core()
        from tasks.support.candidate import openvino_xml

        xml = openvino_xml(artifact)
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
        backend.compile_model = partial(core.compile_model, device_name="CPU", config=config)
        backend.ov_compiled_model = backend.compile_model(core.read_model(str(xml)))
        return int(backend.ov_compiled_model.get_property("INFERENCE_NUM_THREADS"))
    return 0


def _percentiles(values: list[float], prefix: str) -> dict[str, float]:
    import numpy as np

    return {
        f"{prefix}_p50_ms": round(float(np.percentile(values, 50)), 3),
        f"{prefix}_p95_ms": round(float(np.percentile(values, 95)), 3),
        f"{prefix}_p99_ms": round(float(np.percentile(values, 99)), 3),
        f"{prefix}_mean_ms": round(statistics.fmean(values), 3),
    }


@dataclass(frozen=True)
class LatencyRequest:
    """What to time: the artifact, the frame it runs on, and how (`validate:` settings)."""

    artifact: str
    frame_path: str
    imgsz: int
    conf: float
    iou: float
    warmup: int
    runs: int
    threads: int
    batch_sizes: tuple[int, ...]
    # the timed runs stop once they took this long, after at least `min_runs` of them (None: always `runs`)
    budget_s: float | None = None
    min_runs: int = 1


def _read_frame(frame_path: str) -> Any:
    """The BGR frame every timed run predicts on."""
    import cv2

    frame = cv2.imread(frame_path)
    if frame is None:
        raise LatencyError(f"{frame_path}: cannot be read as an image")
    return frame


def _framed(artifact: Path, frame: Any) -> Any:
    """The part of `frame` the artifact looks at: its embedded crop (an engine built for a region of interest; the
    detector crops the same way, `tasks.edge.preprocess.crop_frame`), else the whole frame."""
    from tasks.edge.metadata import read_embedded_metadata
    from tasks.edge.preprocess import crop_frame

    ours = read_embedded_metadata(artifact)
    return crop_frame(frame, ours.get("crop") or (), ours.get("frame_shape") or (), str(artifact))[0]


def _open_pinned(artifact: Path, frame: Any, kwargs: dict[str, Any], threads: int, warmup: int) -> tuple[Any, int]:
    """The artifact loaded with Ultralytics' loader for its format, its runtime session rebuilt with `threads`
    threads (`pin_threads`) and warmed up on `frame`; returns (model, the thread count the runtime reports)."""
    from ultralytics import YOLO

    from tasks.edge.tensorrt import ensure_runnable

    ensure_runnable(artifact)
    model = YOLO(str(artifact), task="detect")
    model.predict(frame, **kwargs)  # creates the predictor and its AutoBackend
    effective = pin_threads(model.predictor.model, artifact, threads)
    for _ in range(warmup):
        model.predict(frame, **kwargs)
    return model, effective


def measure(req: LatencyRequest) -> dict[str, Any]:
    """Warm up, then `runs` timed single-frame predictions (fewer, never below `min_runs`, once they took
    `budget_s`: a slow reference needs no 200 runs for its p50); throughput per batch size where the artifact allows.

    Returns metrics (floats), strings (hardware, batch note) and the per-run samples for the CDF plot.
    """
    artifact, threads, runs = Path(req.artifact), req.threads, req.runs
    frame = _framed(artifact, _read_frame(req.frame_path))
    kwargs = {"imgsz": req.imgsz, "conf": req.conf, "iou": req.iou, "device": "cpu", "verbose": False}
    model, effective = _open_pinned(artifact, frame, kwargs, threads, req.warmup)
    autobackend = model.predictor.model
    pre, inference, post, total = [], [], [], []
    started_all = time.perf_counter()
    deadline = started_all + req.budget_s if req.budget_s is not None else None
    for i in range(runs):
        started = time.perf_counter()
        speed = model.predict(frame, **kwargs)[0].speed
        total.append((time.perf_counter() - started) * 1000)
        pre.append(speed["preprocess"])
        inference.append(speed["inference"])
        post.append(speed["postprocess"])
        if deadline is not None and i + 1 >= req.min_runs and time.perf_counter() > deadline:
            break
    runs = len(inference)
    batch1_fps = runs / (time.perf_counter() - started_all)

    fixed_batch = int(getattr(autobackend, "batch", 1) or 1)
    dynamic = bool(autobackend.metadata.get("dynamic")) if getattr(autobackend, "metadata", None) else False
    throughput = {1: batch1_fps}
    if dynamic or fixed_batch > 1:
        usable = [b for b in req.batch_sizes if b > 1 and (dynamic or b == fixed_batch)]
        note = f"dynamic batch: measured {[1, *usable]}" if dynamic else f"fixed batch {fixed_batch}"
        for b in usable:
            frames = [frame] * b
            model.predict(frames, batch=b, **kwargs)
            reps = max(2, runs // (4 * b))
            t0 = time.perf_counter()
            for _ in range(reps):
                model.predict(frames, batch=b, **kwargs)
            throughput[b] = reps * b / (time.perf_counter() - t0)
    else:
        note = (
            "artifact has a fixed batch of 1 (static export): larger batches run as repeated batch-1 calls, "
            "so best-batch throughput is the batch-1 throughput"
        )
    best = max(throughput, key=lambda b: throughput[b])
    metrics: dict[str, Any] = {
        **_percentiles(inference, "latency"),
        **_percentiles(total, "e2e"),
        "pre_ms": round(statistics.fmean(pre), 3),
        "inference_ms": round(statistics.fmean(inference), 3),
        "post_ms": round(statistics.fmean(post), 3),
        "throughput_batch1_fps": round(batch1_fps, 3),
        "throughput_best_fps": round(throughput[best], 3),
        "best_batch": float(best),
        "artifact_batch": float(fixed_batch),
        "threads": float(threads),
        "threads_effective": float(effective),
        "latency_runs": float(runs),
        "batch_note": note,
        "cpu_model": cpu_model(),
        "gpu_name": gpu_name(),
    }
    return {"metrics": metrics, "samples": {"inference_ms": inference, "e2e_ms": total}}


@dataclass(frozen=True)
class InterleavedRequest:
    """Re-time several artifacts together in one process: `rounds` rounds of `runs` runs each, the order reversed
    every other round (A B B A ...), so a drift of the machine (thermal, other load) falls on all of them alike."""

    artifacts: tuple[str, ...]
    frame_path: str
    imgsz: int
    conf: float
    iou: float
    warmup: int
    threads: int
    rounds: int
    runs: int


def measure_interleaved(req: InterleavedRequest) -> dict[str, list[float]]:
    """Each artifact's median inference time (ms) in each round, by artifact path."""
    full = _read_frame(req.frame_path)
    frames = {a: _framed(Path(a), full) for a in req.artifacts}  # each as its detector crops it
    kwargs = {"imgsz": req.imgsz, "conf": req.conf, "iou": req.iou, "device": "cpu", "verbose": False}
    models = {a: _open_pinned(Path(a), frames[a], kwargs, req.threads, req.warmup)[0] for a in req.artifacts}
    rounds: dict[str, list[float]] = {a: [] for a in req.artifacts}
    order = list(req.artifacts)
    for r in range(req.rounds):
        for artifact in order if r % 2 == 0 else reversed(order):
            frame = frames[artifact]
            times = [models[artifact].predict(frame, **kwargs)[0].speed["inference"] for _ in range(req.runs)]
            rounds[artifact].append(round(statistics.median(times), 4))
    return rounds


ROUNDS_KEY = "latency_rounds_ms"  # a candidate's per-round medians of the interleaved re-timing, space-separated


def pair_ratio(x: list[float], f: list[float]) -> tuple[float, float]:
    """How much slower `x` is than `f`, timed in the same rounds: the mean of the per-round ratios x_r / f_r, and
    the half-width of its 95% interval (Student's t over the rounds; 0 with one round, where no spread is known)."""
    from scipy import stats

    ratios = [a / b for a, b in zip(x, f, strict=True)]
    mean = statistics.fmean(ratios)
    if len(ratios) < 2:
        return mean, 0.0
    t = float(stats.t.ppf(0.975, len(ratios) - 1))
    return mean, t * statistics.stdev(ratios) / len(ratios) ** 0.5


def interleaved_stats(rounds: dict[str, list[float]]) -> dict[str, dict[str, float | str]]:
    """Per name: the median of its round medians, its ratio to the fastest of the group and that ratio's noise
    (`pair_ratio`), and the round medians themselves (`ROUNDS_KEY`), from which the promotion's tie rule computes
    the ratio of any two candidates that were re-timed together (`tasks/operations/policy.py` `choose`)."""
    p50 = {name: statistics.median(values) for name, values in rounds.items()}
    fastest = min(p50, key=lambda n: (p50[n], n))
    stats: dict[str, dict[str, float | str]] = {}
    for name, values in rounds.items():
        ratio, noise = pair_ratio(values, rounds[fastest])
        stats[name] = {
            "latency_interleaved_p50_ms": round(p50[name], 3),
            "latency_vs_fastest": round(ratio, 4),
            "latency_vs_fastest_noise": round(noise, 4),
            ROUNDS_KEY: " ".join(f"{v:g}" for v in values),
        }
    return stats


def rounds_of(row: dict[str, Any]) -> list[float] | None:
    """The round medians a metrics row carries (`ROUNDS_KEY`), or None when it was not re-timed."""
    text = row.get(ROUNDS_KEY)
    return [float(v) for v in str(text).split()] if text else None


def _run_child(mode: str, payload: dict[str, Any], threads: int, what: str) -> Any:
    """Run this module in a fresh interpreter with thread env vars pinned before any runtime loads; its JSON."""
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, **{k: str(threads) for k in THREAD_ENV}}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(prefix="alpr-latency-") as tmp:
        out = Path(tmp) / "latency.json"
        cmd = [sys.executable, "-m", "tasks.runtime.latency", mode, json.dumps(payload), str(out)]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0 or not out.is_file():
            tail = done.stderr[-3000:]
            raise LatencyError(f"latency measurement of {what} failed (exit {done.returncode}):\n{tail}")
        return json.loads(out.read_text())


def measure_in_subprocess(req: LatencyRequest) -> dict[str, Any]:
    """`measure` in a fresh interpreter with thread env vars pinned before any runtime loads."""
    return _run_child("single", asdict(req), req.threads, req.artifact)


def measure_interleaved_in_subprocess(req: InterleavedRequest) -> dict[str, list[float]]:
    """`measure_interleaved` in a fresh interpreter (threads pinned as for `measure_in_subprocess`)."""
    return _run_child("interleaved", asdict(req), req.threads, ", ".join(req.artifacts))


def _main(argv: list[str]) -> None:
    from tasks.support.offline import set_offline_env

    set_offline_env()
    mode, args = argv[0], json.loads(argv[1])
    if mode == "interleaved":
        result: Any = measure_interleaved(InterleavedRequest(**{**args, "artifacts": tuple(args["artifacts"])}))
    else:
        result = measure(LatencyRequest(**{**args, "batch_sizes": tuple(args["batch_sizes"])}))
    Path(argv[2]).write_text(json.dumps(result))


if __name__ == "__main__":
    _main(sys.argv[1:])
