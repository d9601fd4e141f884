"""One small interface over the runtimes a gate runs a model with: input shape, and a batch in -> raw output out.

ONNX Runtime and OpenVINO run on CPU (here, and on a CPU gate); TensorRT runs a serialized plan on the gate's GPU
with TensorRT 10's named-tensor API (`execute_async_v3`), device memory through NVIDIA's Polygraphy (`DeviceArray`,
`Stream`: libcudart through ctypes) instead of PyTorch, which JetPack's Python does not have.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tasks.edge.postprocess import UnsupportedModel
from tasks.support.candidate import META_KEY, openvino_xml

log = logging.getLogger(__name__)


class Runner(Protocol):
    input_hw: tuple[int, int]  # the model's fixed input (height, width)
    output_shape: tuple[int | None, ...]  # its first output's shape, None for a dynamic dimension
    # Ultralytics' export metadata the artifact carries (names, end2end...), {} if none; and our build metadata
    # (tasks/edge/metadata.py) under META_KEY as a dict when the artifact embeds it: the crop contract among it
    metadata: dict[str, Any]

    def __call__(self, batch: np.ndarray) -> np.ndarray:  # NCHW float32 -> (N, 4 + classes, anchors)
        ...


def _dims(shape: object) -> tuple[int | None, ...]:
    """A shape as the runtimes report it (ints, -1, None or a symbolic name per dimension): ints, None if dynamic."""
    out: list[int | None] = []
    for d in list(shape):  # type: ignore[call-overload]
        try:
            n = int(d)
        except (TypeError, ValueError):
            n = -1
        out.append(n if n > 0 else None)
    return tuple(out)


def _fixed_hw(shape: object, what: str) -> tuple[int, int]:
    """(height, width) of a fixed (1, 3, H, W) input; a dynamic or other batch or channel count is refused too (the
    gate feeds one letterboxed RGB frame)."""
    dims = _dims(shape)
    if len(dims) != 4 or dims[2] is None or dims[3] is None:
        raise UnsupportedModel(
            f"{what}: input shape {list(dims)} is not a fixed NCHW shape (export with dynamic=False)"
        )
    if dims[0] != 1 or dims[1] != 3:
        which = "batch" if dims[0] != 1 else "channel"
        kind = "dynamic" if dims[:2].count(None) else "unexpected"
        raise UnsupportedModel(
            f"{what}: input shape {list(dims)} has a {kind} {which} dimension; the gate feeds one RGB frame, "
            "(1, 3, height, width): export with batch=1 and dynamic=False",
            input_shape=list(dims),
        )
    return int(dims[2]), int(dims[3])


def with_build_metadata(metadata: dict[str, Any], embedded: object = None) -> dict[str, Any]:
    """`metadata` with our build metadata under META_KEY as a dict, whichever way the artifact stores it: JSON text
    (ONNX metadata_props), a dict (a TensorRT engine header), or `embedded` (an OpenVINO IR's rt_info text)."""
    import json

    found = metadata.get(META_KEY) if embedded is None else embedded
    if isinstance(found, str):
        try:
            found = json.loads(found)
        except ValueError:
            found = None
    out = dict(metadata)
    if isinstance(found, dict):
        out[META_KEY] = found
    else:
        out.pop(META_KEY, None)
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        return {}
    doc = yaml.safe_load(path.read_text())
    return doc if isinstance(doc, dict) else {}


class OnnxRuntimeRunner:
    """An ONNX model on ONNX Runtime's CPU provider."""

    def __init__(self, path: Path, threads: int = 0) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name, self.input_hw = inp.name, _fixed_hw(inp.shape, str(path))
        self.output_shape = _dims(self.session.get_outputs()[0].shape)
        self.metadata: dict[str, Any] = with_build_metadata(dict(self.session.get_modelmeta().custom_metadata_map))

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]


class OpenVinoRunner:
    """An OpenVINO IR (a folder with one .xml, as Ultralytics and NNCF write it, or the .xml) on the CPU."""

    def __init__(self, path: Path, threads: int = 0) -> None:
        import openvino as ov

        xml = openvino_xml(path)
        core = ov.Core()
        model = core.read_model(xml)
        shape = model.input(0).get_partial_shape()
        self.input_hw = _fixed_hw([d.get_length() if d.is_static else -1 for d in shape], str(xml))
        self.output_shape = _dims([d.get_length() if d.is_static else -1 for d in model.output(0).get_partial_shape()])
        key = [META_KEY, "metadata"]  # where `embed_metadata` puts ours; Ultralytics writes metadata.yaml beside the IR
        ours = model.get_rt_info(key).astype(str) if model.has_rt_info(key) else ""
        self.metadata = with_build_metadata(_read_yaml(xml.parent / "metadata.yaml"), ours)
        config = {"INFERENCE_NUM_THREADS": threads} if threads else {}
        self.compiled = core.compile_model(model, "CPU", config)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.compiled(batch)[0])


class CudaEvents:
    """A pair of CUDA events on a stream, through libcudart's ctypes handle: the device time of what runs between
    them (`cudaEventElapsedTime`, ~0.5 us resolution), not the host's time around a call."""

    def __init__(self, cudart: Any) -> None:
        import ctypes

        self._ctypes, self._cudart = ctypes, cudart
        self.start, self.stop = ctypes.c_void_p(), ctypes.c_void_p()
        self._check(cudart.cudaEventCreate(ctypes.byref(self.start)), "cudaEventCreate")
        self._check(cudart.cudaEventCreate(ctypes.byref(self.stop)), "cudaEventCreate")

    @staticmethod
    def _check(status: int, call: str) -> None:
        if status != 0:
            from tasks.edge.tensorrt import TensorRTUnavailable

            raise TensorRTUnavailable(f"{call}: CUDA runtime error {status}")

    def time_ms(self, stream: int, work: Any) -> float:
        """Milliseconds of device time of `work()` (which enqueues on `stream`), waiting for it to finish."""
        ctypes, cudart = self._ctypes, self._cudart
        self._check(cudart.cudaEventRecord(self.start, ctypes.c_void_p(stream)), "cudaEventRecord")
        work()
        self._check(cudart.cudaEventRecord(self.stop, ctypes.c_void_p(stream)), "cudaEventRecord")
        self._check(cudart.cudaEventSynchronize(self.stop), "cudaEventSynchronize")
        ms = ctypes.c_float()
        self._check(cudart.cudaEventElapsedTime(ctypes.byref(ms), self.start, self.stop), "cudaEventElapsedTime")
        return float(ms.value)

    def close(self) -> None:
        for event in (self.start, self.stop):
            if event.value:
                self._cudart.cudaEventDestroy(event)
                event.value = None


class TensorRTRunner:
    """A serialized TensorRT plan (the plain `.plan`, or the plan inside an Ultralytics-layout `.engine`).

    One execution context whose input and output device buffers (Polygraphy's `DeviceArray`) are allocated and
    bound once (`set_tensor_address`); a call copies the batch in, enqueues `execute_async_v3` on its stream and
    copies the output back. `time_engine` times the engine alone between CUDA events, the input already on the
    device: what a latency of the engine means, while the call's time (copies and Python included) is the
    end-to-end time."""

    def __init__(self, plan: bytes, what: str = "engine", metadata: dict[str, Any] | None = None) -> None:
        from tasks.edge.tensorrt import TensorRTUnavailable, cuda_runtime

        try:
            import tensorrt as trt
            from polygraphy import cuda
        except Exception as e:  # ImportError, or OSError from a broken install
            raise TensorRTUnavailable(f"{what}: TensorRT cannot run here: {type(e).__name__}: {e}") from e
        try:
            self._cudart = cuda_runtime().handle  # Polygraphy's libcudart (pip's wheels' included): its buffers too
        except Exception as e:
            raise TensorRTUnavailable(f"{what}: no CUDA runtime here: {type(e).__name__}: {e}") from e
        self.what = what
        self._logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self._logger).deserialize_cuda_engine(plan)
        if self.engine is None:
            raise TensorRTUnavailable(f"{what}: TensorRT could not deserialize the plan (see its log above)")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or not self.outputs:
            raise ValueError(f"{what}: expected one input and an output, found inputs {inputs}, outputs {names}")
        self.input_name = inputs[0]
        self.input_hw = _fixed_hw(self.engine.get_tensor_shape(self.input_name), what)
        self.input_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.input_name)))  # FP16 engines too
        self.output_shape = _dims(self.engine.get_tensor_shape(self.outputs[0]))
        self.metadata = with_build_metadata(dict(metadata or {}))  # an engine's header; a plain plan carries none
        self.context = self.engine.create_execution_context()
        self.stream = cuda.Stream()
        self.buffers: dict[str, Any] = {}
        self.host: dict[str, np.ndarray] = {}
        for name in [self.input_name, *self.outputs]:
            shape = tuple(int(d) for d in self.engine.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            self.buffers[name] = cuda.DeviceArray(shape=shape, dtype=dtype)
            self.host[name] = np.empty(shape, dtype=dtype)
            if not self.context.set_tensor_address(name, int(self.buffers[name].ptr)):
                raise TensorRTUnavailable(f"{what}: TensorRT refused the device buffer of tensor {name!r}")

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self.stream.ptr):
            raise RuntimeError(f"{self.what}: execute_async_v3 failed (see TensorRT's log above)")

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.buffers[self.input_name].copy_from(np.ascontiguousarray(batch, dtype=self.input_dtype), self.stream)
        self._enqueue()
        out = self.outputs[0]
        self.host[out] = self.buffers[out].copy_to(self.host[out], self.stream)
        self.stream.synchronize()
        return self.host[out].copy()

    def time_engine(self, batch: np.ndarray, warmup: int, runs: int) -> list[float]:
        """Device milliseconds of each of `runs` executions of the engine alone (after `warmup`), `batch` copied to
        the device once: `execute_async_v3` between two CUDA events on the bound buffers."""
        self.buffers[self.input_name].copy_from(np.ascontiguousarray(batch, dtype=self.input_dtype), self.stream)
        self.stream.synchronize()
        events = CudaEvents(self._cudart)
        try:
            for _ in range(warmup):
                events.time_ms(self.stream.ptr, self._enqueue)
            return [events.time_ms(self.stream.ptr, self._enqueue) for _ in range(runs)]
        finally:
            events.close()

    def close(self) -> None:
        """Free the device buffers, the stream and the execution context (the GPU memory they hold)."""
        for buffer in self.buffers.values():
            buffer.free()
        self.buffers.clear()
        self.stream.free()
        self.context = None


def open_runner(artifact: Path, threads: int = 0) -> Runner:
    """The runner for an artifact, by its format: `.onnx`, an OpenVINO folder or `.xml`, `.engine` or `.plan`.

    An `.engine` is checked first against this machine's GPU and TensorRT version (`check_engine`)."""
    from tasks.edge import tensorrt

    if artifact.suffix == ".onnx":
        return OnnxRuntimeRunner(artifact, threads)
    if artifact.is_dir() or artifact.suffix == ".xml":
        return OpenVinoRunner(artifact, threads)
    if artifact.suffix == ".engine":
        tensorrt.check_engine(artifact)
        header, plan = tensorrt.read_engine(artifact)
        return TensorRTRunner(plan, str(artifact), header)
    if artifact.suffix == tensorrt.PLAN_SUFFIX:
        return TensorRTRunner(artifact.read_bytes(), str(artifact))
    raise ValueError(f"{artifact}: no runner for this format (.onnx, OpenVINO folder, .engine or .plan)")
