"""Build candidate artifacts (FP32 reference, FP16, INT8) from the base model through Ultralytics' exporters.

Each candidate gets its own folder: an Ultralytics INT8 ONNX export deletes the FP32 `.onnx` it started from, and
every export writes next to its `.pt`, so candidates built side by side in one folder would overwrite each other.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from tasks.config import EXPORT_FORMAT, BuildConfig, CandidateConfig
from tasks.fetch import sha256_file
from tasks.fsutil import atomic_dir
from tasks.progress import steps

log = logging.getLogger(__name__)

CANDIDATE_JSON = "candidate.json"
_QUANTIZE = {"fp32": None, "fp16": 16, "int8": 8}
_TOOLCHAIN = ("ultralytics", "torch", "onnx", "onnxruntime", "openvino", "nncf", "tensorrt")


class BackendUnavailable(RuntimeError):
    """The requested backend cannot build or run on this machine; the message says where it can."""


@dataclass(frozen=True)
class Candidate:
    """A built artifact and what it was built from (also written beside it as `candidate.json`)."""

    name: str
    backend: str
    precision: str
    folder: Path
    artifact: str  # relative to `folder`: a file (.onnx, .engine) or a folder (OpenVINO IR)
    sha256: str
    size_mb: float
    base_model_sha256: str
    frames_hash: str
    imgsz: int
    toolchain: dict[str, str]
    build_seconds: float
    built_at: str

    @property
    def path(self) -> Path:
        return self.folder / self.artifact

    def to_json(self) -> str:
        data = asdict(self)
        data["folder"] = "."
        return json.dumps(data, indent=2, sort_keys=True)


def toolchain_versions() -> dict[str, str]:
    """Versions of the packages that shape an artifact (recorded so numbers and artifacts compare)."""
    found = {}
    for name in _TOOLCHAIN:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def path_sha256(path: Path) -> str:
    """sha256 of a file, or of a folder's files (relative names and contents, in sorted order)."""
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(path).as_posix()}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def path_size_mb(path: Path) -> float:
    """Size on disk of a file or folder, in MB (10^6 bytes)."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return round(sum(f.stat().st_size for f in files) / 1e6, 3)


def check_tensorrt() -> None:
    """Fail with the reason when this machine cannot build TensorRT engines (they are built on the target GPU)."""
    missing = []
    if importlib.util.find_spec("tensorrt") is None:
        missing.append("the `tensorrt` Python package is not importable")
    import torch

    if not torch.cuda.is_available():
        missing.append("no CUDA GPU is visible (torch.cuda.is_available() is False)")
    if missing:
        raise BackendUnavailable(
            "TensorRT backend unavailable here: "
            + "; ".join(missing)
            + ". TensorRT engines are tied to the GPU and TensorRT version they are built on: build them on the "
            "gate's hardware (TensorRT 10 installed, GPU visible), or use build.backend: openvino for the CPU."
        )


def export_candidate(
    model: Path, candidate: CandidateConfig, backend: str, dataset_yaml: Path, imgsz: int, out: Path
) -> Path:
    """Export one candidate with Ultralytics and move the artifact into the folder `out`; return its path.

    The export runs in a scratch folder of its own: Ultralytics names outputs by replacing the text `.pt` anywhere
    in the model's path, so the path it sees must hold `.pt` only as the file's suffix.
    """
    from ultralytics import YOLO

    if backend == "openvino" and candidate.precision == "int8":
        import nncf  # NNCF resets its log level on import; its per-layer INFO lines would bury ours

        nncf.set_log_level(logging.WARNING)
    kwargs: dict[str, object] = {"format": EXPORT_FORMAT[backend], "imgsz": imgsz, "verbose": False}
    kwargs["device"] = 0 if backend == "tensorrt" else "cpu"
    quantize = _QUANTIZE[candidate.precision]
    if quantize is not None:
        kwargs["quantize"] = quantize
    if candidate.precision == "int8":
        kwargs["data"] = str(dataset_yaml)
    with tempfile.TemporaryDirectory(prefix="alpr-export-") as scratch:
        work = Path(scratch) / "model.pt"
        if str(work).count(".pt") != 1:
            raise RuntimeError(f"scratch path {work} holds '.pt' twice; set TMPDIR to a folder without '.pt'")
        shutil.copyfile(model, work)
        artifact = Path(YOLO(str(work), task="detect").export(**kwargs))
        target = out / artifact.name
        shutil.move(artifact, target)
    return target


def build_candidates(
    model: Path,
    dataset_yaml: Path,
    out_dir: Path,
    cfg: BuildConfig,
    base_model_sha256: str,
    frames_hash: str,
) -> list[Candidate]:
    """Build every candidate of `cfg` into `out_dir/<name>/`, each folder replaced atomically when complete."""
    if not dataset_yaml.is_file():
        raise FileNotFoundError(f"{dataset_yaml}: calibration dataset YAML not found. Run `alpr-ops extract` first.")
    if any(cfg.backend_of(c) == "tensorrt" for c in cfg.candidates):
        check_tensorrt()  # before any export: fail in seconds, not after the CPU candidates
    built = []
    for cand in steps(cfg.candidates, "build: exporting candidates"):
        backend = cfg.backend_of(cand)
        started = time.perf_counter()
        with atomic_dir(out_dir / cand.name) as tmp:
            artifact = export_candidate(model, cand, backend, dataset_yaml, cfg.imgsz, tmp)
            result = Candidate(
                name=cand.name,
                backend=backend,
                precision=cand.precision,
                folder=out_dir / cand.name,
                artifact=artifact.relative_to(tmp).as_posix(),
                sha256=path_sha256(artifact),
                size_mb=path_size_mb(artifact),
                base_model_sha256=base_model_sha256,
                frames_hash=frames_hash,
                imgsz=cfg.imgsz,
                toolchain=toolchain_versions(),
                build_seconds=round(time.perf_counter() - started, 2),
                built_at=datetime.now(UTC).isoformat(timespec="seconds"),
            )
            (tmp / CANDIDATE_JSON).write_text(result.to_json())
        log.info("built %s (%s %s): %s, %.1f MB", cand.name, backend, cand.precision, result.path, result.size_mb)
        built.append(result)
    return built


def load_candidates(out_dir: Path, names: list[str]) -> list[Candidate]:
    """Read back built candidates from their `candidate.json`, in the order given."""
    found = []
    for name in names:
        meta = out_dir / name / CANDIDATE_JSON
        if not meta.is_file():
            raise FileNotFoundError(f"{meta}: candidate '{name}' has not been built. Run `alpr-ops build` first.")
        data = json.loads(meta.read_text())
        data["folder"] = out_dir / name
        found.append(Candidate(**data))
    return found
