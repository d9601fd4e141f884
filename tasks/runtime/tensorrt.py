"""TensorRT engines from Q/DQ ONNX, built strongly typed (TensorRT 10 and 11), tied to the GPU they were built on.

TensorRT 10.1 deprecated and TensorRT 11 removed the implicit INT8 calibrators: explicit quantization (Q/DQ nodes in
the ONNX) built with `STRONGLY_TYPED` is the path that survives. An engine only runs on the GPU model and TensorRT
version it was built with, so each one records them and `check_engine` refuses a mismatch with a clear message.

Engine files use Ultralytics' layout (4-byte little-endian JSON length, JSON metadata, serialized engine) so that
`YOLO("x.engine")` loads them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from tasks.support.errors import AlprError, Remedy

log = logging.getLogger(__name__)


class EngineMismatch(AlprError):
    """The engine was built for another GPU or TensorRT version (or has no header); the message says which."""

    remedy = Remedy.BUILD


def device_info() -> dict[str, str]:
    """The GPU name, compute capability and TensorRT version an engine built here is tied to."""
    import tensorrt as trt
    import torch

    major, minor = torch.cuda.get_device_capability(0)
    return {
        "gpu": torch.cuda.get_device_name(0),
        "compute_capability": f"{major}.{minor}",
        "tensorrt": trt.__version__,
    }


def read_engine(path: Path) -> tuple[dict[str, Any], bytes]:
    """(header metadata, serialized engine) of an engine file in Ultralytics' layout."""
    data = path.read_bytes()
    n = int.from_bytes(data[:4], byteorder="little")
    try:
        header = json.loads(data[4 : 4 + n].decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EngineMismatch(f"{path}: no metadata header") from e
    return header, data[4 + n :]


def write_engine(path: Path, header: dict[str, Any], engine: bytes) -> Path:
    """Write an engine with its metadata header (temp file and rename: never a half-written engine)."""
    text = json.dumps(header).encode()
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(len(text).to_bytes(4, byteorder="little") + text + engine)
    tmp.replace(path)
    return path


def check_engine(path: Path) -> dict[str, str]:
    """Fail unless `path` was built for this machine's GPU and TensorRT version; returns what it was built for."""
    header, _ = read_engine(path)
    built_for = header.get("device")
    if not built_for:
        raise EngineMismatch(f"{path}: the engine does not record its GPU and TensorRT version; rebuild it here")
    try:
        here = device_info()
    except (ImportError, RuntimeError, AssertionError) as e:  # no tensorrt package, no CUDA GPU
        raise EngineMismatch(
            f"{path}: built for {built_for.get('gpu')!r} (compute capability {built_for.get('compute_capability')}, "
            f"TensorRT {built_for.get('tensorrt')}), but this machine cannot run TensorRT ({type(e).__name__}: {e}). "
            "Run it on the gate hardware it was built for."
        ) from e
    diff = {k: (built_for.get(k), here[k]) for k in here if built_for.get(k) != here[k]}
    if diff:
        detail = ", ".join(f"{k}: built for {a!r}, this machine has {b!r}" for k, (a, b) in diff.items())
        raise EngineMismatch(
            f"{path}: TensorRT engines only run where they were built ({detail}). Rebuild it on this machine "
            "with build.backend: tensorrt."
        )
    return built_for


def ensure_runnable(artifact: Path) -> None:
    """Before any loader touches `artifact`: an engine must have been built for this GPU and TensorRT version
    (other formats run anywhere their runtime does)."""
    if artifact.suffix == ".engine":
        check_engine(artifact)


def onnx_metadata(onnx_path: Path) -> dict[str, str]:
    """Ultralytics' metadata from an ONNX export's metadata_props (names, stride, imgsz...), for the engine header."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def build_strongly_typed_engine(qdq_onnx: Path, engine_path: Path, workspace_gb: float = 4.0) -> Path:
    """Build a strongly-typed engine from a Q/DQ ONNX: precisions come from the graph's Q/DQ nodes, not from
    builder flags or a calibrator (the only INT8 route in TensorRT 11)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(qdq_onnx)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{qdq_onnx}: TensorRT could not parse the Q/DQ ONNX: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"{qdq_onnx}: TensorRT failed to build a strongly-typed engine (see the log above)")
    header: dict[str, Any] = {**onnx_metadata(qdq_onnx), "device": device_info()}
    header.pop("alpr_ops", None)
    write_engine(engine_path, header, bytes(serialized))
    log.info("built strongly-typed TensorRT engine %s for %s", engine_path, header["device"])
    return engine_path


def stamp_device(engine_path: Path) -> Path:
    """Record this machine's GPU and TensorRT version in an engine Ultralytics exported here."""
    header, engine = read_engine(engine_path)
    return write_engine(engine_path, {**header, "device": device_info()}, engine)
