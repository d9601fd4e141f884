"""What running one engine takes in memory: a short child process that loads ONLY the candidate's runtime (OpenVINO
or ONNX Runtime) and its engine, and runs a few frames of the engine's own input shape.

Why a separate process: the latency process imports PyTorch and Ultralytics (pre/post-processing), whose ~700 MB
dwarf an engine of a few MB, so its peak RSS is the same for every candidate. Here nothing else is loaded (the child
asserts that torch and ultralytics were never imported), so two numbers tell candidates apart:

- `runtime_rss_mb`: peak RSS of the child once the runtime has loaded, compiled and run a one-operation model with
  the same settings (plugins, compiler, thread pools: the runtime's fixed costs), before the engine is loaded;
- `engine_rss_mb`: peak RSS of the same child after loading the engine and running `frames` inferences.

`engine_rss_mb - runtime_rss_mb` (`engine_mb`) is what the engine itself takes: weights, compiled kernels and the
activation buffers of one inference at the engine's input shape, with the validation's thread count.

This module is torch-free on purpose (stdlib + numpy + the runtime, Python 3.10 syntax): the child runs this file
as a script, so not even the `tasks` package is imported there. TensorRT engines are not measured: their memory is
on the GPU, which this machine has not got; the reason is returned instead of a number.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

try:
    from tasks.support.errors import AlprError
except ImportError:  # the child runs this file as a script, possibly where `tasks` is not importable
    AlprError = RuntimeError  # type: ignore[misc,assignment]

RUNTIMES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}  # backend -> the one module the child imports
FORBIDDEN = ("torch", "ultralytics")  # must never be loaded in the child: they would be measured instead


class MemoryProbeError(AlprError):
    """The memory probe's child failed (or imported what it must not); the message carries its stderr."""


def _peak_mb() -> float:
    """This process's peak resident set size so far (MB): `VmHWM`, the high-water mark of its own address space.

    Not `ru_maxrss`: Linux keeps that across `execve`, so a child started by a 1 GB parent reports the parent's
    peak (measured: 1238.7 MB before and after loading an engine from inside pytest).
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("/proc/self/status has no VmHWM: the memory probe needs Linux")


def _shape(dims: list[Any], imgsz: int) -> tuple[int, ...]:
    """The input shape the engine declares; a dynamic dimension (None, -1 or a name) takes batch 1 / `imgsz`."""
    fixed = []
    for i, d in enumerate(dims):
        if isinstance(d, int) and d > 0:
            fixed.append(d)
        else:
            fixed.append(1 if i == 0 else 3 if i == 1 else imgsz)
    return tuple(fixed)


def _run_onnxruntime(artifact: Path, imgsz: int, frames: int, threads: int) -> tuple[tuple[int, ...], float]:
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # the runtime's fixed costs (providers, thread pools) before the baseline: a one-operation model, same settings
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    tiny = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "tiny", [x], [y]))
    tiny.opset_import[0].version = 17
    tiny.ir_version = 8
    warm = ort.InferenceSession(tiny.SerializeToString(), options, providers=["CPUExecutionProvider"])
    warm.run(None, {"x": np.zeros((1, 3, 8, 8), dtype=np.float32)})
    runtime_mb = _peak_mb()
    session = ort.InferenceSession(str(artifact), options, providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0]
    shape = _shape(list(first.shape), imgsz)
    dtype = np.float16 if first.type == "tensor(float16)" else np.float32
    data = np.random.default_rng(0).random(shape, dtype=np.float32).astype(dtype)
    for _ in range(frames):
        session.run(None, {first.name: data})
    return shape, runtime_mb


def _run_openvino(artifact: Path, imgsz: int, frames: int, threads: int) -> tuple[tuple[int, ...], float]:
    import numpy as np
    import openvino as ov

    from tasks.support.candidate import openvino_xml

    xml = openvino_xml(artifact)
    core = ov.Core()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    # the CPU plugin and its compiler load on the first compile (about 30 MB): a one-operation model first, same
    # settings, so that what follows the baseline is the engine's own
    from openvino import opset13 as ops

    x = ops.parameter([1, 3, 8, 8], np.float32)
    tiny = core.compile_model(ov.Model([ops.relu(x)], [x], "tiny"), "CPU", config)
    tiny.create_infer_request().infer({0: np.zeros((1, 3, 8, 8), dtype=np.float32)})
    runtime_mb = _peak_mb()
    compiled = core.compile_model(core.read_model(str(xml)), "CPU", config)
    port = compiled.inputs[0]
    pshape = port.get_partial_shape()
    dims = [d.get_length() if d.is_static else None for d in pshape]
    shape = _shape(dims, imgsz)
    data = np.random.default_rng(0).random(shape, dtype=np.float32)
    request = compiled.create_infer_request()
    for _ in range(frames):
        request.infer({0: data})
    return shape, runtime_mb


def probe(backend: str, artifact: Path, imgsz: int, frames: int, threads: int) -> dict[str, Any]:
    """In the child: load the runtime, then the engine, run `frames` inferences; the two peaks and the shape."""
    run = {"onnxruntime": _run_onnxruntime, "openvino": _run_openvino}[backend]
    shape, runtime_mb = run(artifact, imgsz, frames, threads)
    engine_mb = _peak_mb()
    loaded = [m for m in FORBIDDEN if m in sys.modules]
    if loaded:
        raise RuntimeError(f"the memory probe imported {loaded}: it would measure them, not the engine")
    return {
        "runtime_rss_mb": round(runtime_mb, 1),
        "engine_rss_mb": round(engine_mb, 1),
        "engine_mb": round(engine_mb - runtime_mb, 1),
        "memory_input_shape": "x".join(str(d) for d in shape),
        "probe_frames": frames,
    }


def engine_memory(backend: str, artifact: Path, imgsz: int, frames: int, threads: int) -> dict[str, Any]:
    """Memory of running `artifact` on its runtime, measured in a fresh child (see the module doc).

    Returns `engine_rss_mb`, `runtime_rss_mb`, `engine_mb` (floats), or for a TensorRT engine only `memory_note`
    saying why there is no number. A child that fails raises `MemoryProbeError` with its stderr.
    """
    if backend == "tensorrt":
        return {"memory_note": "TensorRT engine: host memory probe not run (its memory is on the GPU; no GPU here)"}
    if backend not in RUNTIMES:
        raise ValueError(f"no memory probe for backend {backend!r} (known: {sorted(RUNTIMES)}, tensorrt)")
    from tasks.runtime.latency import THREAD_ENV  # the parent's import: the child runs this file alone

    env = {**os.environ, **{k: str(threads) for k in THREAD_ENV}}
    with tempfile.TemporaryDirectory(prefix="alpr-memory-") as tmp:
        out = Path(tmp) / "memory.json"
        args = [backend, str(artifact), str(imgsz), str(frames), str(threads), str(out)]
        done = subprocess.run(
            [sys.executable, "-I", str(Path(__file__).resolve()), *args],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if done.returncode != 0 or not out.is_file():
            raise MemoryProbeError(
                f"memory probe of {artifact} ({backend}) failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
            )
        return json.loads(out.read_text())


def _main(argv: list[str]) -> None:
    backend, artifact, imgsz, frames, threads, out = argv
    result = probe(backend, Path(artifact), int(imgsz), int(frames), int(threads))
    Path(out).write_text(json.dumps(result))


if __name__ == "__main__":
    _main(sys.argv[1:])
