"""TensorRT engines from Q/DQ ONNX, built strongly typed (TensorRT 10 and 11), tied to the GPU they were built on.

TensorRT 10.1 deprecated and TensorRT 11 removed the implicit INT8 calibrators: explicit quantization (Q/DQ nodes in
the ONNX) built with `STRONGLY_TYPED` is the path that survives. An engine only runs on the GPU model and TensorRT
version it was built with, so each one records them and `check_engine` refuses a mismatch with a clear message.

Each engine is written twice, from the same serialized bytes:

- `<name>.engine`: Ultralytics' layout (4-byte little-endian JSON length, JSON metadata, serialized engine) so that
  `YOLO("x.engine")` loads it. Ultralytics' backend sets every header key as an attribute of itself
  (`BaseBackend.apply_metadata`), so the header holds Ultralytics' own export metadata (stride, names, imgsz...)
  and ours only under the one key `alpr_ops` (`META_KEY`), which no backend attribute uses: a top-level `device`
  key, as older builds wrote, replaced the backend's `torch.device` and no engine loaded.
- `<name>.plan`: the plain serialized plan, for tools that expect nothing in front of it (`trtexec --loadEngine`,
  DeepStream's nvinfer, C++ `deserializeCudaEngine`). The candidate's `candidate.json` records it and what the engine
  was built for (`engine_record`).

The host (its build, validation and promotion) and the gate (its engine build, its runtime) share this module, so
it runs on the gate's Python 3.10 without PyTorch or Ultralytics (`tests/unit/test_gate_side.py` checks both): it
imports only the standard library at module level, and TensorRT, Polygraphy or ONNX inside functions.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from tasks.support.candidate import META_KEY  # the only key of ours in an engine header
from tasks.support.errors import AlprError, Remedy
from tasks.support.hashing import sha256_bytes, sha256_file

log = logging.getLogger(__name__)

PLAN_SUFFIX = ".plan"
ENGINE_RECORD_JSON = "engine_record.json"  # the gate logs `engine_record` of the engine it built and measured
# what an engine's record must say, identically, wherever the engine is checked against it
RECORD_KEYS = ("engine", "engine_sha256", "plan", "plan_sha256", "plan_bytes", "device")
ENGINE_FILES = "engine: ultralytics header with our data under alpr_ops; plan beside it"  # in TensorRT cache keys


class EngineMismatch(AlprError):
    """The engine was built for another GPU or TensorRT version (or has no header); the message says which."""

    remedy = Remedy.BUILD


class TensorRTUnavailable(AlprError):
    """This machine cannot build or run TensorRT engines (no `tensorrt`, no CUDA runtime or GPU); the message says
    which. A gate-side build reports it as a failed candidate, never as a pass."""

    remedy = Remedy.BUILD


# cudaDeviceAttr values of the CUDA runtime API (stable since CUDA 5; cuda_runtime_api.h)
_CC_MAJOR, _CC_MINOR = 75, 76

_SM_COUNT = 16  # cudaDevAttrMultiProcessorCount
BOARD_MODEL = Path("/proc/device-tree/model")  # Jetsons (and other device-tree boards) name the board here
# what an engine is tied to; an engine whose header lacks any of them was built before it was recorded: rebuilt
DEVICE_KEYS = ("gpu", "compute_capability", "sm_count", "board", "tensorrt")

TENSORRT_MIN_MAJOR = 10  # STRONGLY_TYPED networks (our trt-qdq engines) and the named-tensor API start at 10.0


def major_version(version: str) -> int | None:
    """The major version of a version string ("10.3.0" -> 10); None when it does not start with a number."""
    head = str(version).split(".", 1)[0]
    return int(head) if head.isdigit() else None


def network_flags(trt: Any) -> int:
    """The creation flags of a strongly typed network for this `tensorrt` module, by its major version: TensorRT 10
    opts in with `NetworkDefinitionCreationFlag.STRONGLY_TYPED`; TensorRT 11 builds every network strongly typed and
    keeps the flag only as deprecated (accepted and ignored), so it is not passed there, and a later release that
    drops it still builds. Before 10 there are no strongly typed networks: refused."""
    version = str(getattr(trt, "__version__", "unknown"))
    major = major_version(version)
    if major is None or major < TENSORRT_MIN_MAJOR:
        raise TensorRTUnavailable(
            f"TensorRT {version}: strongly typed networks need TensorRT {TENSORRT_MIN_MAJOR} or later"
        )
    if major > TENSORRT_MIN_MAJOR:
        return 0  # strong typing is unconditional from 11 on
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if flag is None:
        raise TensorRTUnavailable(f"TensorRT {version} has no NetworkDefinitionCreationFlag.STRONGLY_TYPED")
    return 1 << int(flag)


def _device_properties(cudart: Any) -> Any:
    """`cudaGetDeviceProperties_v2` (CUDA 12 and later: what the runtime header's `cudaGetDeviceProperties` names)
    where libcudart exports it, else the old symbol."""
    return getattr(cudart, "cudaGetDeviceProperties_v2", None) or cudart.cudaGetDeviceProperties


def board_model(path: Path = BOARD_MODEL) -> str:
    """The board this GPU sits on, as its device tree names it ("NVIDIA Jetson AGX Orin Developer Kit", "NVIDIA
    Jetson Orin Nano Engineering Reference Developer Kit Super"): every Orin module reports compute capability 8.7,
    so the GPU name and capability alone do not tell an AGX Orin from a Nano. "" where there is no device tree (an
    x86 host: its GPU name and SM count tell its GPU apart)."""
    try:
        return path.read_bytes().split(b"\0", 1)[0].decode(errors="replace").strip()
    except OSError:
        return ""


def query_device(cudart: Any, device: int = 0) -> dict[str, str]:
    """The GPU name, compute capability and SM count of CUDA device `device`, from a ctypes handle of libcudart.

    The name is the first field of `cudaDeviceProp` (what `torch.cuda.get_device_name` returns; the buffer is
    oversized because the struct grows between CUDA versions); capability and SM count through
    `cudaDeviceGetAttribute`, whose attribute numbers do not move. A CUDA error (no GPU, no driver) is
    `TensorRTUnavailable` with its status."""
    import ctypes

    major, minor, sms = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    props = ctypes.create_string_buffer(8192)
    try:
        for status in (
            cudart.cudaDeviceGetAttribute(ctypes.byref(major), _CC_MAJOR, device),
            cudart.cudaDeviceGetAttribute(ctypes.byref(minor), _CC_MINOR, device),
            cudart.cudaDeviceGetAttribute(ctypes.byref(sms), _SM_COUNT, device),
            _device_properties(cudart)(props, device),
        ):
            if status != 0:
                raise RuntimeError(f"CUDA runtime error {status} (no CUDA GPU?)")
    except Exception as e:  # a CUDA error, or a symbol this libcudart lacks
        raise TensorRTUnavailable(f"no usable CUDA GPU here: {type(e).__name__}: {e}") from e
    return {
        "gpu": props.raw[:256].split(b"\0", 1)[0].decode(errors="replace"),
        "compute_capability": f"{major.value}.{minor.value}",
        "sm_count": str(sms.value),
    }


def pip_cudart_dirs(search: list[str] | None = None) -> list[Path]:
    """The folders where pip's CUDA runtime wheels put libcudart, in `search` (default: `sys.path`, so the
    interpreter's site-packages): `nvidia/cuda_runtime/lib` (nvidia-cuda-runtime-cu12, what the tensorrt-cu12 wheel
    depends on) first, then `nvidia/cu<major>/lib` (the CUDA 13 wheels' layout), newest first."""
    import sys

    found: list[Path] = []
    for entry in sys.path if search is None else search:
        base = Path(entry or ".") / "nvidia"
        if not base.is_dir():
            continue
        dirs = [base / "cuda_runtime" / "lib", *sorted(base.glob("cu[0-9]*/lib"), reverse=True)]
        found += [d for d in dirs if d not in found and any(d.glob("libcudart.so*"))]
    return found


def cuda_runtime(search: list[str] | None = None) -> Any:
    """Polygraphy's CUDA wrapper (`polygraphy.cuda.wrapper()`: one per process, the device buffers of
    `TrtRunner` use it too), its libcudart found where pip's CUDA wheels put it before anywhere else.

    Polygraphy looks for `libcudart.so*` only in `LD_LIBRARY_PATH`, `/usr/local/cuda/lib64`, `/usr/lib` and `/lib`
    (JetPack's CUDA is in the second), then tries the bare `libcudart.so`, which pip's wheels do not ship: on a
    pip-only x86 host (`tensorrt_on: host` with the tensorrt-cu12 wheel) it finds nothing. So the first wrapper is
    created with pip's folders (`pip_cudart_dirs`) in front of `LD_LIBRARY_PATH`, restored right after: it is the
    search list Polygraphy reads, not the loader's (the library is loaded by its full path)."""
    import os

    from polygraphy import cuda

    dirs = [str(d) for d in pip_cudart_dirs(search)]
    if not dirs:
        return cuda.wrapper()
    before = os.environ.get("LD_LIBRARY_PATH")
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([*dirs, *([before] if before else [])])
    try:
        return cuda.wrapper()
    finally:
        if before is None:
            del os.environ["LD_LIBRARY_PATH"]
        else:
            os.environ["LD_LIBRARY_PATH"] = before


def device_info() -> dict[str, str]:
    """What an engine built here is tied to (`DEVICE_KEYS`): the GPU name, compute capability and SM count, the
    board, and the TensorRT version.

    Without PyTorch (the gate has none): the CUDA runtime through Polygraphy's ctypes wrapper of libcudart
    (`cuda_runtime`: JetPack's in /usr/local/cuda, or pip's wheels' in site-packages).
    """
    try:
        import polygraphy  # noqa: F401 (its absence is TensorRTUnavailable, as tensorrt's)
        import tensorrt as trt
    except Exception as e:  # ImportError, or OSError from a broken install
        raise TensorRTUnavailable(f"TensorRT cannot run here: {type(e).__name__}: {e}") from e
    try:
        cudart = cuda_runtime().handle
    except Exception as e:  # Polygraphy's own exception when libcudart is missing
        raise TensorRTUnavailable(f"no usable CUDA GPU here: {type(e).__name__}: {e}") from e
    return {**query_device(cudart), "board": board_model(), "tensorrt": trt.__version__}


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


def plan_path(engine_path: Path) -> Path:
    """Where the plain serialized plan of `engine_path` lives: beside it, `<name>.plan`."""
    return engine_path.with_suffix(PLAN_SUFFIX)


def save_engine(engine_path: Path, header: dict[str, Any], serialized: bytes) -> tuple[Path, Path]:
    """Write the serialized engine twice: the plain plan (`<name>.plan`, exactly `serialized`) and the engine
    Ultralytics loads (`<name>.engine`: header + the same bytes). Returns (engine, plan)."""
    plan = plan_path(engine_path)
    tmp = plan.with_name(f".{plan.name}.tmp")
    tmp.write_bytes(serialized)
    tmp.replace(plan)
    return write_engine(engine_path, header, serialized), plan


def with_device(header: dict[str, Any], device: dict[str, str]) -> dict[str, Any]:
    """`header` with `device` recorded under `META_KEY` (and no top-level `device`, which older builds wrote and
    which would replace the `torch.device` of Ultralytics' backend)."""
    ours = {**(header.get(META_KEY) or {}), "device": device}
    return {**{k: v for k, v in header.items() if k not in ("device", META_KEY)}, META_KEY: ours}


def built_for(header: dict[str, Any]) -> dict[str, str] | None:
    """The GPU and TensorRT version an engine header records: under `META_KEY`, or at the top level in engines
    written before that (read, never written)."""
    ours = header.get(META_KEY)
    found = ours.get("device") if isinstance(ours, dict) else None
    return found or header.get("device") or None


def check_engine(path: Path) -> dict[str, str]:
    """Fail unless `path` was built for this machine's GPU (name, compute capability, SM count), board and TensorRT
    version; returns what it was built for. An engine that records less (built before the SM count and board were
    recorded) is refused: it cannot show it is not an AGX Orin's engine on a Nano."""
    header, _ = read_engine(path)
    device = built_for(header)
    if not device:
        raise EngineMismatch(f"{path}: the engine does not record its GPU and TensorRT version; rebuild it here")
    lacking = [k for k in DEVICE_KEYS if k not in device]
    if lacking:
        raise EngineMismatch(
            f"{path}: built for {device.get('gpu')!r} (compute capability {device.get('compute_capability')}, "
            f"TensorRT {device.get('tensorrt')}), but its header records no {', '.join(lacking)}: every Orin module "
            "reports compute capability 8.7, so an engine built before these were recorded cannot show which board "
            "it was built and timed on. Rebuild it on the gate that runs it (build.backend: tensorrt).",
            lacking=lacking,
        )
    try:
        here = device_info()
    except TensorRTUnavailable as e:
        raise EngineMismatch(
            f"{path}: built for {device.get('gpu')!r} (compute capability {device.get('compute_capability')}, "
            f"TensorRT {device.get('tensorrt')}), but this machine cannot run TensorRT ({type(e).__name__}: {e}). "
            "Run it on the gate hardware it was built for."
        ) from e
    diff = {k: (device.get(k), here.get(k)) for k in DEVICE_KEYS if device.get(k) != here.get(k)}
    if diff:
        detail = ", ".join(f"{k}: built for {a!r}, this machine has {b!r}" for k, (a, b) in diff.items())
        raise EngineMismatch(
            f"{path}: TensorRT engines only run where they were built ({detail}). Rebuild it on this machine "
            "with build.backend: tensorrt."
        )
    return device


def ensure_runnable(artifact: Path) -> None:
    """Before any loader touches `artifact`: an engine must have been built for this GPU and TensorRT version
    (other formats run anywhere their runtime does)."""
    if artifact.suffix == ".engine":
        check_engine(artifact)


def engine_record(engine_path: Path) -> dict[str, Any]:
    """What `candidate.json` says about an engine (its `tensorrt` field): the plain plan beside it (name, sha256,
    size), what it was built for, and the header layout of the `.engine` file."""
    header, engine = read_engine(engine_path)
    plan = plan_path(engine_path)
    record: dict[str, Any] = {
        "engine": engine_path.name,
        "engine_sha256": sha256_file(engine_path),
        "engine_layout": "ultralytics: 4-byte little-endian JSON length, JSON metadata, serialized plan",
        "plan": plan.name if plan.is_file() else None,
        "device": built_for(header),
    }
    if plan.is_file():
        data = plan.read_bytes()
        if data != engine:
            raise EngineMismatch(f"{plan}: the plan differs from the serialized engine inside {engine_path.name}")
        record["plan_sha256"] = sha256_bytes(data)
        record["plan_bytes"] = len(data)
    return record


def check_engine_record(engine_path: Path, recorded: dict[str, Any]) -> dict[str, Any]:
    """Fail unless `engine_path` and the plan beside it are the ones `recorded` (the builder's `engine_record`)
    describes: the engine's sha256, the plan's sha256 and size (the plan file and the plan inside the engine being
    the same bytes) and the device it was built for. Returns the record recomputed here. Runs without TensorRT: it
    checks the files, not that they run."""
    missing = [k for k in RECORD_KEYS if not recorded.get(k)]
    if missing:
        raise EngineMismatch(f"{engine_path}: the engine record lacks {missing}; it cannot vouch for this engine")
    here = engine_record(engine_path)  # EngineMismatch when the plan beside it differs from the engine's own
    diff = {k: (recorded.get(k), here.get(k)) for k in RECORD_KEYS if recorded.get(k) != here.get(k)}
    if diff:
        detail = "; ".join(f"{k}: recorded {a!r}, found {b!r}" for k, (a, b) in diff.items())
        raise EngineMismatch(f"{engine_path}: not the engine its record describes ({detail})")
    return here


def onnx_metadata(onnx_path: Path) -> dict[str, str]:
    """Ultralytics' metadata from an ONNX export's metadata_props (names, stride, imgsz...), for the engine header."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


CROP_KEYS = ("crop", "frame_shape")  # the engine's crop contract (tasks/support/roi.py): kept from the ONNX's build


def engine_header(ultralytics_metadata: dict[str, Any], device: dict[str, str]) -> dict[str, Any]:
    """The header of an engine we build: Ultralytics' export metadata as it is, and ours under `META_KEY` only
    (the build metadata embedded in the ONNX under that key is replaced: `embed_metadata` adds the engine's), but
    for the crop the ONNX was built for, which the engine takes too (an engine the gate builds is never embedded
    into again, and its detector crops by what the header says)."""
    embedded = ultralytics_metadata.get(META_KEY)
    if isinstance(embedded, str):
        try:
            embedded = json.loads(embedded)
        except ValueError:
            embedded = None
    crop = {k: embedded[k] for k in CROP_KEYS if k in embedded} if isinstance(embedded, dict) else {}
    header = {k: v for k, v in ultralytics_metadata.items() if k != META_KEY}
    return with_device({**header, META_KEY: crop} if crop else header, device)


def build_strongly_typed_engine(
    qdq_onnx: Path, engine_path: Path, workspace_gb: float = 4.0, metadata: dict[str, Any] | None = None
) -> Path:
    """Build a strongly-typed engine from a Q/DQ ONNX: precisions come from the graph's Q/DQ nodes, not from
    builder flags or a calibrator (the only INT8 route in TensorRT 11). Writes `<name>.engine` and `<name>.plan`
    (`save_engine`); needs TensorRT 10 or later (`tasks.pipeline.build.check_tensorrt` checks it first).
    `metadata`: Ultralytics' export metadata for the header; None reads it from the ONNX (needs `onnx`, which the
    gate does not have: the gate passes what the host's bundle carries)."""
    try:
        import tensorrt as trt
    except Exception as e:
        raise TensorRTUnavailable(f"{qdq_onnx}: TensorRT cannot build here: {type(e).__name__}: {e}") from e
    flags = network_flags(trt)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(qdq_onnx)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{qdq_onnx}: TensorRT could not parse the Q/DQ ONNX: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"{qdq_onnx}: TensorRT failed to build a strongly-typed engine (see the log above)")
    device = device_info()
    meta = onnx_metadata(qdq_onnx) if metadata is None else metadata
    save_engine(engine_path, engine_header(meta, device), bytes(serialized))
    log.info("built strongly-typed TensorRT engine %s (and its plain plan) for %s", engine_path, device)
    return engine_path


def stamp_device(engine_path: Path) -> Path:
    """Record this machine's GPU and TensorRT version in an engine Ultralytics exported here (under `META_KEY`),
    and write its plain plan beside it."""
    header, engine = read_engine(engine_path)
    return save_engine(engine_path, with_device(header, device_info()), engine)[0]
