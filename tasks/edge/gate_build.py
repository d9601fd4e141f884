"""The gate-side build: from a bundle the host logged to a candidate's MLflow run, build the TensorRT engine on
the gate's own GPU, time it, measure its agreement with the FP32 reference's detections, and log it all back.

The host (PyTorch, Ultralytics) exports the ONNX (Q/DQ or FP32), picks the agreement frames and runs the FP32
reference on them; the gate (Python 3.10, TensorRT, no PyTorch) does what only the gate's hardware can: an engine
only runs on the GPU model and TensorRT version it was built with, and its latency only means something there.

The bundle (`BUNDLE_PATH` in the run's artifacts) is one folder: `bundle.json` (what to build, the validation
settings, Ultralytics' export metadata for the engine header, the reference's detections by frame), the ONNX and
`frames/`. The gate logs metrics prefixed `gate.`, and the engine, its plain plan and the engine's record (what
`candidate.json` says about it) under `RESULT_PATH`, with its raw detections on every frame (`DETECTIONS_JSON`, at
the validation `conf`), from which the host scores agreement and labelled mAP with the code it scores every other
candidate with (`tasks/pipeline/gate_remote.py`).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.edge.agreement import Detections, above, agreement_counts, compare
from tasks.support.errors import AlprError, Remedy
from tasks.support.fsutil import atomic_dir
from tasks.support.tracking import gate_tag

log = logging.getLogger(__name__)

BUNDLE_PATH = "gate_bundle"  # artifact folder of the candidate's run that the host logs
BUNDLE_JSON = "bundle.json"
RESULT_PATH = "gate_build"  # artifact folder the gate logs engine, plan and record to
DETECTIONS_JSON = "detections.json"  # in RESULT_PATH: [{"name": frame file name, "detections": Detections}, ...]
BUNDLE_VERSION = 1


class BundleInvalid(AlprError):
    """The gate bundle is missing or does not say what the gate needs; the message names the file."""

    remedy = Remedy.BUILD


@dataclass(frozen=True)
class GateSettings:
    """The host's validation settings the gate applies (params.yaml `validate:`, passed in the bundle)."""

    agreement_conf: float
    iou: float
    warmup: int
    runs: int
    workspace_gb: float = 4.0
    conf: float | None = None  # validate.conf: the detections the gate reports for mAP (None: agreement_conf)


@dataclass(frozen=True)
class GateBundle:
    folder: Path
    candidate: str
    onnx: Path
    metadata: dict[str, Any]  # Ultralytics' export metadata (names, stride, imgsz...): the engine header
    frames: tuple[Path, ...]
    reference: tuple[Detections, ...]  # the FP32 reference's detections, one per frame
    settings: GateSettings


def write_bundle(
    out: Path,
    candidate: str,
    onnx: Path,
    metadata: dict[str, Any],
    frames: list[Path],
    reference: list[Detections],
    settings: GateSettings,
) -> Path:
    """Write the bundle folder `out` (atomically). Frames are copied under their own names, which must differ."""
    if len(frames) != len(reference) or not frames:
        raise BundleInvalid(f"{out}: {len(frames)} frames and {len(reference)} reference detections (need equal, > 0)")
    names = [f.name for f in frames]
    if len(set(names)) != len(names):
        raise BundleInvalid(f"{out}: frames with the same file name; the bundle keys frames by name")
    with atomic_dir(out) as tmp:
        shutil.copyfile(onnx, tmp / onnx.name)
        (tmp / "frames").mkdir()
        for f in frames:
            shutil.copyfile(f, tmp / "frames" / f.name)
        doc = {
            "version": BUNDLE_VERSION,
            "candidate": candidate,
            "onnx": onnx.name,
            "metadata": metadata,
            "settings": settings.__dict__,
            "frames": [{"name": n, "reference": d.to_json()} for n, d in zip(names, reference, strict=True)],
        }
        (tmp / BUNDLE_JSON).write_text(json.dumps(doc, indent=1))
    return out


def read_bundle(folder: Path) -> GateBundle:
    """The bundle in `folder`, checked: every file it names is there."""
    path = folder / BUNDLE_JSON
    try:
        doc = json.loads(path.read_text())
        if doc.get("version") != BUNDLE_VERSION:
            raise BundleInvalid(f"{path}: bundle version {doc.get('version')!r}, this gate reads {BUNDLE_VERSION}")
        bundle = GateBundle(
            folder,
            str(doc["candidate"]),
            folder / doc["onnx"],
            dict(doc["metadata"]),
            tuple(folder / "frames" / f["name"] for f in doc["frames"]),
            tuple(Detections.from_json(f["reference"]) for f in doc["frames"]),
            GateSettings(**doc["settings"]),
        )
    except FileNotFoundError as e:
        raise BundleInvalid(f"{path}: no gate bundle here; the host logs it before it asks the gate") from e
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise BundleInvalid(f"{path}: not a gate bundle ({type(e).__name__}: {e}); log it again from the host") from e
    missing = [str(p) for p in (bundle.onnx, *bundle.frames) if not p.is_file()]
    if missing:
        raise BundleInvalid(f"{path}: names files that are not there: {missing[:3]}")
    return bundle


def _client(tracking_uri: str | None) -> Any:
    """The client of the host's store. The host passes its tracking URI with credentials redacted (a Prefect
    parameter is visible to anyone with access to Prefect): those come from this worker's environment
    (`resolve_uri`: its MLFLOW_TRACKING_URI, or MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD). None: the
    worker's MLFLOW_TRACKING_URI."""
    from mlflow import MlflowClient  # mlflow-skinny on the gate

    from tasks.support.tracking import resolve_uri

    return MlflowClient(tracking_uri=None if tracking_uri is None else resolve_uri(tracking_uri))


def download_bundle(run_id: str, tracking_uri: str | None = None, work_dir: str | None = None) -> GateBundle:
    """Download and read the bundle of the candidate run `run_id` (tracking URI: given, its redacted credentials from
    this machine's environment, or MLFLOW_TRACKING_URI)."""
    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
    dest = Path(tempfile.mkdtemp(prefix=f"alpr-gate-{run_id[:8]}-", dir=work_dir))  # `discard` removes it
    local = _client(tracking_uri).download_artifacts(run_id, BUNDLE_PATH, str(dest))
    return read_bundle(Path(local))


@dataclass(frozen=True)
class GateResult:
    candidate: str
    engine: Path
    record: dict[str, Any]  # tasks.edge.tensorrt.engine_record: plan, its sha256, the device it was built for
    metrics: dict[str, float] = field(default_factory=dict)
    latency_ms: tuple[float, ...] = ()
    detections: tuple[tuple[str, Detections], ...] = ()  # (frame name, raw detections at `conf`) per frame
    clocks: dict[str, Any] = field(default_factory=dict)  # clock_state() when it was timed


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def clock_state(root: Path = Path("/")) -> dict[str, Any]:
    """Whether the CPU and GPU clocks were pinned when the engine was timed (what `jetson_clocks` does: each
    cpufreq policy's and the GPU devfreq's minimum raised to its maximum), and the nvpmodel power mode; on a Jetson
    unpinned clocks scale with load and a latency is not reproducible. Read from sysfs under `root`; a machine
    without these files (not a Jetson) is recorded as not pinned, with why."""
    import subprocess

    cpus = sorted((root / "sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq"))
    cpu = [(_read(c / "scaling_min_freq"), _read(c / "scaling_max_freq")) for c in cpus]
    gpus = [
        d
        for d in sorted((root / "sys/class/devfreq").glob("*"))
        if any(k in d.name for k in ("gpu", "ga10b", "gv11b", "gp10b"))
    ]
    gpu = [(_read(d / "min_freq"), _read(d / "max_freq")) for d in gpus]
    cpu_pinned = bool(cpu) and all(a is not None and a == b for a, b in cpu)
    gpu_pinned = bool(gpu) and all(a is not None and a == b for a, b in gpu)
    mode = ""
    try:
        out = subprocess.run(["nvpmodel", "-q"], capture_output=True, text=True, timeout=10, check=False)
        mode = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""
    except (OSError, subprocess.SubprocessError):
        mode = ""
    detail = (
        f"CPU min=max on {sum(a == b for a, b in cpu)}/{len(cpu)} cpufreq policies, "
        f"GPU min=max on {sum(a == b for a, b in gpu)}/{len(gpu)} devfreq devices, "
        f"nvpmodel: {mode or 'not available'}"
    )
    return {"clocks_pinned": cpu_pinned and gpu_pinned, "cpu": cpu_pinned, "gpu": gpu_pinned, "nvpmodel": mode,
            "detail": detail}  # fmt: skip


def build_and_measure(bundle: GateBundle, out_dir: str | None = None) -> GateResult:
    """Build the strongly typed engine from the bundle's ONNX here (TensorRT 10+), time it (warmup, then runs: p50,
    p95 of the engine's device time between CUDA events, and the end-to-end time of a call beside it, with whether
    the clocks were pinned) and measure agreement with the reference on the bundle's frames, exactly as the host
    computes it."""
    import cv2

    from tasks.edge import tensorrt
    from tasks.edge.detect import Detector, time_model
    from tasks.edge.runners import TensorRTRunner

    out = Path(out_dir) if out_dir else bundle.folder.parent / "engine"
    out.mkdir(parents=True, exist_ok=True)
    s = bundle.settings
    raw_conf = s.agreement_conf if s.conf is None else min(s.conf, s.agreement_conf)
    engine = tensorrt.build_strongly_typed_engine(
        bundle.onnx, out / f"{bundle.onnx.stem}.engine", s.workspace_gb, metadata=bundle.metadata
    )
    runner = TensorRTRunner(tensorrt.plan_path(engine).read_bytes(), str(engine), bundle.metadata)
    try:
        detector = Detector(runner, what=str(engine))
        diffs, raw, first = [], [], None
        for frame_path, ref in zip(bundle.frames, bundle.reference, strict=True):
            frame = cv2.imread(str(frame_path))
            if frame is None:
                raise BundleInvalid(f"{frame_path}: cannot be read as an image")
            first = frame if first is None else first
            found = detector(frame, raw_conf, s.iou)
            raw.append((frame_path.name, found))
            diffs.append(compare(frame_path.name, ref, above(found, s.agreement_conf)))
        clocks = clock_state()
        if not clocks["clocks_pinned"]:
            log.warning(
                "gate: clocks are not pinned (%s): latency varies with DVFS; run `sudo nvpmodel -m 0 && sudo "
                "jetson_clocks` before timing",
                clocks["detail"],
            )
        timing, samples = time_model(runner, s.warmup, s.runs, first)  # a real frame, as the host's latency uses
    finally:
        runner.close()
    metrics = {**agreement_counts(diffs), **timing, "clocks_pinned": float(clocks["clocks_pinned"])}
    log.info("gate: built and measured %s: %s", bundle.candidate, metrics)
    record = tensorrt.engine_record(engine)
    return GateResult(bundle.candidate, engine, record, metrics, tuple(samples), tuple(raw), clocks)


def log_result(run_id: str, result: GateResult, tracking_uri: str | None = None) -> dict[str, float]:
    """Log the gate's metrics (`gate.` prefix), engine, plan and engine record to the candidate's run."""
    from tasks.edge.tensorrt import ENGINE_RECORD_JSON, plan_path

    client = _client(tracking_uri)
    metrics = {gate_tag(k): float(v) for k, v in result.metrics.items()}
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
    with tempfile.TemporaryDirectory(prefix="alpr-gate-result-") as tmp:
        folder = Path(tmp)
        shutil.copyfile(result.engine, folder / result.engine.name)
        shutil.copyfile(plan_path(result.engine), folder / plan_path(result.engine).name)
        (folder / ENGINE_RECORD_JSON).write_text(json.dumps(result.record, indent=1, sort_keys=True))
        (folder / "latency_ms.json").write_text(json.dumps(list(result.latency_ms)))  # the engine's device times
        (folder / "clocks.json").write_text(json.dumps(result.clocks, indent=1, sort_keys=True))
        frames = [{"name": n, "detections": d.to_json()} for n, d in result.detections]
        (folder / DETECTIONS_JSON).write_text(json.dumps(frames))
        client.log_artifacts(run_id, str(folder), RESULT_PATH)
    client.set_tag(run_id, "alpr.gate_build", "done")
    return metrics


def discard(bundle: GateBundle) -> None:
    """Remove the gate's working copy (bundle and engine) once the run holds them: a Jetson's storage is small. A
    failed run keeps its copy for inspection (the error names its path)."""
    shutil.rmtree(bundle.folder.parent, ignore_errors=True)
