"""TensorRT engine files and the TensorRT checks, on the CPU: no engine is built or run here (that needs the gate's
GPU, tests/integration/test_tensorrt.py). What is checked is what the project writes and decides before TensorRT
runs: the engine header against Ultralytics' backend, the plain plan beside the engine, the version checks."""

from __future__ import annotations

import ast
import contextlib
import inspect
import json
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from tasks.pipeline.build import BackendUnavailable, check_tensorrt
from tasks.support.candidate import META_KEY
from tasks.support.config import CandidateConfig

FAKE_DEVICE = {"gpu": "Orin (nvgpu)", "compute_capability": "8.7", "tensorrt": "10.3.0"}
# Ultralytics' own export metadata, as its exporter writes it into ONNX metadata_props and engine headers
# (Exporter.metadata in ultralytics/engine/exporter.py): the keys Ultralytics' backend is meant to apply
ULTRALYTICS_METADATA = {
    "description": "Ultralytics YOLO model",
    "author": "Ultralytics",
    "date": "2026-01-01T00:00:00",
    "version": "8.4.190",
    "license": "AGPL-3.0",
    "docs": "https://docs.ultralytics.com",
    "stride": "32",
    "task": "detect",
    "batch": "1",
    "imgsz": "[320, 320]",
    "names": "{0: 'plate'}",
    "args": "{'batch': 1, 'half': False, 'int8': False, 'dynamic': False, 'nms': False}",
    "channels": "3",
    "end2end": "False",
}


# --- header keys against Ultralytics' backends ----------------------------------------------------------------------


def backend_attributes() -> dict[str, set[str]]:
    """Every attribute name of Ultralytics' backend classes, by class: what `dir()` lists (methods, class attributes)
    and every `self.<name> = ...` in the source of the class and its bases (instance attributes set in `__init__`,
    `load_model`, `forward`...)."""
    import ultralytics.nn.backends as backends

    found: dict[str, set[str]] = {}
    classes = [getattr(backends, n) for n in backends.__all__]
    classes = [c for c in classes if inspect.isclass(c) and issubclass(c, backends.BaseBackend)]
    assert backends.TensorRTBackend in classes
    for cls in classes:
        names = set(dir(cls))
        for base in cls.__mro__:
            if not base.__module__.startswith("ultralytics."):
                continue
            tree = ast.parse(textwrap.dedent(inspect.getsource(base)))
            for node in ast.walk(tree):
                store = isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
                if store and isinstance(node.value, ast.Name) and node.value.id == "self":
                    names.add(node.attr)
        found[cls.__name__] = names
    return found


def header_keys_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, dict]:
    """The headers the project writes, by writer: an Ultralytics engine stamped with its device (`stamp_device`)
    then given our build metadata (`metadata.embed_metadata`), and the header of our own strongly-typed engines."""
    import tasks.edge.tensorrt as trt_files
    from tasks.edge import metadata

    monkeypatch.setattr(trt_files, "device_info", lambda: dict(FAKE_DEVICE))  # the GPU this would run on
    engine = trt_files.write_engine(tmp_path / "model.engine", dict(ULTRALYTICS_METADATA), b"\x00plan-bytes")
    trt_files.stamp_device(engine)
    metadata.embed_metadata(engine, {"name": "trt-int8", "method": "ultralytics", "kept_in_float": []})
    headers = {"ultralytics export, stamped and embedded": trt_files.read_engine(engine)[0]}
    if hasattr(trt_files, "engine_header"):  # the header build_strongly_typed_engine writes
        onnx_meta = {**ULTRALYTICS_METADATA, META_KEY: json.dumps({"name": "x"})}
        headers["strongly typed (trt-qdq)"] = trt_files.engine_header(onnx_meta, dict(FAKE_DEVICE))
    return headers


def test_no_header_key_of_ours_is_an_attribute_of_ultralytics_backends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attributes = backend_attributes()
    assert "device" in attributes["TensorRTBackend"] and "bindings" in attributes["TensorRTBackend"]
    for writer, header in header_keys_written(tmp_path, monkeypatch).items():
        ours = set(header) - set(ULTRALYTICS_METADATA)
        assert ours, f"{writer}: writes no key of its own (nothing recorded?)"
        clashes = {f"{key} ({cls})" for key in ours for cls, names in attributes.items() if key in names}
        assert not clashes, f"{writer}: header keys that Ultralytics' backend would set over its own attributes"


def test_a_stamped_engine_header_leaves_the_backends_device_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ultralytics' own header handling (`BaseBackend.engine_header` + `apply_metadata`, what TensorRTBackend does
    before `.to(self.device)`) on the header the project writes: the device stays a torch.device."""
    import torch
    from ultralytics.nn.backends.base import BaseBackend

    import tasks.edge.tensorrt as trt_files

    class HeaderOnly(BaseBackend):  # TensorRTBackend.load_model's header steps, without TensorRT
        def load_model(self, weight):
            offset, metadata = self.engine_header(weight)
            self.apply_metadata(metadata)
            self.offset = offset
            self.probe = torch.zeros(1).to(self.device)

        def forward(self, im):
            return im

    monkeypatch.setattr(trt_files, "device_info", lambda: dict(FAKE_DEVICE))
    engine = trt_files.write_engine(tmp_path / "model.engine", dict(ULTRALYTICS_METADATA), b"\x00plan-bytes")
    trt_files.stamp_device(engine)
    backend = HeaderOnly(engine, torch.device("cpu"))
    assert isinstance(backend.device, torch.device)
    assert backend.stride == 32 and backend.names == {0: "plate"}
    assert engine.read_bytes()[backend.offset :] == b"\x00plan-bytes"


def test_old_headers_with_a_top_level_device_are_still_read_but_never_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tasks.edge.tensorrt as trt_files

    old = trt_files.write_engine(tmp_path / "old.engine", {"stride": 32, "device": FAKE_DEVICE}, b"\x00plan")
    with pytest.raises(trt_files.EngineMismatch, match=r"built for 'Orin \(nvgpu\)'"):
        trt_files.check_engine(old)  # no TensorRT here: refused with what the engine records
    monkeypatch.setattr(trt_files, "device_info", lambda: dict(FAKE_DEVICE))
    trt_files.stamp_device(old)
    header, _ = trt_files.read_engine(old)
    assert "device" not in header
    assert header[META_KEY]["device"] == FAKE_DEVICE


# --- the plain plan beside the engine -------------------------------------------------------------------------------


def test_save_engine_writes_the_plan_as_is_and_the_engine_as_header_plus_the_same_bytes(tmp_path: Path) -> None:
    from tasks.edge.tensorrt import engine_record, save_engine
    from tasks.support.candidate import META_KEY

    serialized = bytes(range(256)) * 3 + b"\x00\xff"  # not JSON, not text: what a serialized plan looks like
    header = {"stride": 32, META_KEY: {"device": FAKE_DEVICE}}
    engine, plan = save_engine(tmp_path / "model.engine", header, serialized)
    assert plan == tmp_path / "model.plan"
    assert plan.read_bytes() == serialized
    text = json.dumps(header).encode()
    assert engine.read_bytes() == len(text).to_bytes(4, "little") + text + serialized
    record = engine_record(engine)
    assert record["plan"] == "model.plan" and record["device"] == FAKE_DEVICE
    assert record["plan_bytes"] == len(serialized)


def test_an_ultralytics_engine_gets_its_plain_plan_when_stamped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import tasks.edge.tensorrt as trt_files
    from tasks.edge import metadata

    monkeypatch.setattr(trt_files, "device_info", lambda: dict(FAKE_DEVICE))
    engine = trt_files.write_engine(tmp_path / "model.engine", dict(ULTRALYTICS_METADATA), b"\x00plan-bytes")
    trt_files.stamp_device(engine)
    metadata.embed_metadata(engine, {"name": "trt-int8"})  # rewrites the header only
    assert (tmp_path / "model.plan").read_bytes() == b"\x00plan-bytes"
    assert trt_files.read_engine(engine)[1] == b"\x00plan-bytes"
    assert metadata.read_embedded_metadata(engine)["name"] == "trt-int8"


def test_candidate_json_without_the_tensorrt_field_still_reads(tmp_path: Path) -> None:
    from tasks.support.candidate import CANDIDATE_JSON, Candidate, read_candidate

    cand = Candidate(
        name="trt-qdq", backend="tensorrt", precision="int8", folder=tmp_path, artifact="model_qdq.engine",
        sha256="0" * 64, size_mb=1.0, base_model_sha256="1" * 64, frames_hash="h", imgsz=320, toolchain={},
        build_seconds=1.0, built_at="2026-01-01T00:00:00+00:00", method="trt-qdq",
        tensorrt={"plan": "model_qdq.plan", "device": FAKE_DEVICE},
    )  # fmt: skip
    (tmp_path / CANDIDATE_JSON).write_text(cand.to_json())
    assert read_candidate(tmp_path).tensorrt["plan"] == "model_qdq.plan"
    old = json.loads(cand.to_json())
    del old["tensorrt"]  # written before the field existed
    (tmp_path / CANDIDATE_JSON).write_text(json.dumps(old))
    assert read_candidate(tmp_path).tensorrt == {}


# --- versions -------------------------------------------------------------------------------------------------------


def modules(**found: object):
    """An `import_module` that knows only `found` (name -> module, or an exception to raise)."""

    def load(name: str) -> object:
        module = found.get(name)
        if isinstance(module, BaseException):
            raise module
        if module is None:
            raise ModuleNotFoundError(f"No module named '{name}'")
        return module

    return load


def trt(version: str) -> SimpleNamespace:
    return SimpleNamespace(__version__=version)


ULTRALYTICS_INT8 = CandidateConfig(name="trt-int8", precision="int8")
ULTRALYTICS_FP32 = CandidateConfig(name="trt-fp32", precision="fp32")
OURS = CandidateConfig(name="trt-qdq", precision="int8", method="trt-qdq", qdq={"symmetric_activations": True})


def gpu() -> bool:
    return True


def test_tensorrt_8_is_refused_with_the_version_found_and_the_jetpack_that_ships_10() -> None:
    with pytest.raises(BackendUnavailable) as err:
        check_tensorrt([OURS], import_module=modules(tensorrt=trt("8.6.2")), gpu_available=gpu)
    message = str(err.value)
    assert "TensorRT 8.6.2 is installed" in message and "TensorRT 10 or later" in message
    assert "JetPack 6.1" in message
    assert err.value.facts["tensorrt"] == "8.6.2"


def test_tensorrt_10_3_is_accepted() -> None:
    cands = [ULTRALYTICS_INT8, OURS]
    assert check_tensorrt(cands, import_module=modules(tensorrt=trt("10.3.0")), gpu_available=gpu) == "10.3.0"


def test_a_tensorrt_that_does_not_import_is_refused_with_its_import_error() -> None:
    broken = ImportError("libnvinfer.so.10: cannot open shared object file: No such file or directory")
    with pytest.raises(BackendUnavailable) as err:
        check_tensorrt([OURS], import_module=modules(tensorrt=broken), gpu_available=gpu)
    assert "libnvinfer.so.10: cannot open shared object file" in str(err.value)
    assert "tensorrt` Python package does not import" in str(err.value)


def test_tensorrt_11_without_modelopt_refuses_ultralytics_quantized_engines_only() -> None:
    load = modules(tensorrt=trt("11.0.0"))
    with pytest.raises(BackendUnavailable) as err:
        check_tensorrt([ULTRALYTICS_FP32, ULTRALYTICS_INT8, OURS], import_module=load, gpu_available=gpu)
    message = str(err.value)
    assert "'trt-int8'" in message and "ModelOpt" in message and "No module named 'modelopt" in message
    assert "'trt-qdq'" not in message and "'trt-fp32'" not in message
    assert check_tensorrt([ULTRALYTICS_FP32, OURS], import_module=load, gpu_available=gpu) == "11.0.0"
    with_modelopt = modules(tensorrt=trt("11.0.0"), **{"modelopt.onnx.quantization": SimpleNamespace()})
    assert check_tensorrt([ULTRALYTICS_INT8], import_module=with_modelopt, gpu_available=gpu) == "11.0.0"


def test_no_gpu_is_refused_even_with_tensorrt_10() -> None:
    with pytest.raises(BackendUnavailable, match="no CUDA GPU"):
        check_tensorrt([OURS], import_module=modules(tensorrt=trt("10.3.0")), gpu_available=lambda: False)


def tensorrt_module(version: str, **flags: int) -> SimpleNamespace:
    """A `tensorrt` module as far as `network_flags` reads it: its version and its network creation flags."""
    return SimpleNamespace(__version__=version, NetworkDefinitionCreationFlag=SimpleNamespace(**flags))


def test_the_strongly_typed_flag_is_passed_by_major_version_and_only_where_it_exists() -> None:
    """TensorRT 10 opts in with STRONGLY_TYPED (its value: bit 1 of the creation flags); TensorRT 11 builds every
    network strongly typed and keeps the flag only as deprecated: not passed; a release without it still builds."""
    from tasks.edge.tensorrt import TensorRTUnavailable, network_flags

    assert network_flags(tensorrt_module("10.3.0", EXPLICIT_BATCH=0, STRONGLY_TYPED=1)) == 1 << 1
    assert network_flags(tensorrt_module("11.1.0", STRONGLY_TYPED=1)) == 0  # deprecated there: not passed
    assert network_flags(tensorrt_module("12.0.0")) == 0  # the flag gone altogether
    with pytest.raises(TensorRTUnavailable, match=r"has no NetworkDefinitionCreationFlag\.STRONGLY_TYPED"):
        network_flags(tensorrt_module("10.0.0"))
    with pytest.raises(TensorRTUnavailable, match=r"TensorRT 8\.6\.2: strongly typed networks need TensorRT 10"):
        network_flags(tensorrt_module("8.6.2", STRONGLY_TYPED=1))  # a flag of that name would not be the same thing


def test_device_properties_are_read_with_the_v2_symbol_where_libcudart_exports_it() -> None:
    from tasks.edge.tensorrt import _device_properties

    def old(props: object, device: int) -> int:
        return 0

    def v2(props: object, device: int) -> int:
        return 0

    assert _device_properties(SimpleNamespace(cudaGetDeviceProperties=old, cudaGetDeviceProperties_v2=v2)) is v2
    assert _device_properties(SimpleNamespace(cudaGetDeviceProperties=old)) is old  # CUDA 11's libcudart


# --- which Orin: SM count and board ---------------------------------------------------------------------------------

AGX_ORIN = {
    "gpu": "Orin (nvgpu)", "compute_capability": "8.7", "sm_count": "16",
    "board": "NVIDIA Jetson AGX Orin Developer Kit", "tensorrt": "10.3.0",
}  # fmt: skip
ORIN_NANO = {**AGX_ORIN, "sm_count": "8", "board": "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super"}


class FakeCudart:
    """libcudart as `query_device` calls it through ctypes: attributes by cudaDeviceAttr number, the name as the
    first field of cudaDeviceProp; each call returns a CUDA status."""

    def __init__(self, name: bytes, attributes: dict[int, int], status: int = 0) -> None:
        self.name, self.attributes, self.status = name, attributes, status

    def cudaDeviceGetAttribute(self, ref, attribute: int, device: int) -> int:
        ref._obj.value = self.attributes[attribute]
        return self.status

    def cudaGetDeviceProperties_v2(self, props, device: int) -> int:
        props.value = self.name + b"\0garbage after the name"
        return self.status


def test_the_device_query_records_the_sm_count_and_the_board(tmp_path: Path) -> None:
    from tasks.edge.tensorrt import TensorRTUnavailable, board_model, query_device

    nano = FakeCudart(b"Orin (nvgpu)", {75: 8, 76: 7, 16: 8})  # cudaDevAttrComputeCapability*, MultiProcessorCount
    assert query_device(nano) == {"gpu": "Orin (nvgpu)", "compute_capability": "8.7", "sm_count": "8"}
    with pytest.raises(TensorRTUnavailable, match="CUDA runtime error 100"):
        query_device(FakeCudart(b"", {75: 0, 76: 0, 16: 0}, status=100))  # cudaErrorNoDevice
    model = tmp_path / "model"
    model.write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\0")  # the device tree's NUL-terminated string
    assert board_model(model) == "NVIDIA Jetson AGX Orin Developer Kit"
    assert board_model(tmp_path / "none") == ""  # an x86 host has no device tree


def test_an_agx_orin_engine_is_refused_on_an_orin_nano(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.edge.tensorrt as trt_files

    engine = trt_files.save_engine(tmp_path / "m.engine", trt_files.with_device({}, AGX_ORIN), b"\x00plan")[0]
    monkeypatch.setattr(trt_files, "device_info", lambda: dict(ORIN_NANO))
    with pytest.raises(trt_files.EngineMismatch) as err:
        trt_files.check_engine(engine)
    message = str(err.value)
    assert "sm_count: built for '16', this machine has '8'" in message and "Orin Nano" in message
    assert "gpu:" not in message and "compute_capability:" not in message  # the same for every Orin
    monkeypatch.setattr(trt_files, "device_info", lambda: dict(AGX_ORIN))
    assert trt_files.check_engine(engine) == AGX_ORIN


def test_an_engine_without_sm_count_and_board_is_refused_with_rebuild(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fail closed: an engine written before the SM count and board were recorded cannot show which Orin it was
    built and timed on, even on a machine whose GPU name, capability and TensorRT match it."""
    import tasks.edge.tensorrt as trt_files

    engine = trt_files.save_engine(tmp_path / "m.engine", trt_files.with_device({}, FAKE_DEVICE), b"\x00plan")[0]
    monkeypatch.setattr(trt_files, "device_info", lambda: dict(AGX_ORIN))  # same gpu, capability, TensorRT
    with pytest.raises(trt_files.EngineMismatch, match=r"records no sm_count, board: .* Rebuild it") as err:
        trt_files.check_engine(engine)
    assert err.value.facts["lacking"] == ["sm_count", "board"]


# --- libcudart on a pip-only host -----------------------------------------------------------------------------------


def polygraphy_stand_in(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """`polygraphy.cuda` as far as `cuda_runtime` uses it: `wrapper()` searches libcudart as Polygraphy 0.49-0.53's
    `Cuda.__init__` does (`libcudart.so*` in LD_LIBRARY_PATH's folders, /usr/local/cuda/lib64, /usr/lib, /lib; else
    the bare `libcudart.so`) and loads it with ctypes. Returns the list each call appends the library it chose to."""
    import ctypes
    import os
    import sys
    import types

    chosen: list[str] = []

    def wrapper() -> SimpleNamespace:
        dirs = [*os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep), "/usr/local/cuda/lib64", "/usr/lib", "/lib"]
        found = [str(p) for d in dirs if d for p in sorted(Path(d).glob("libcudart.so*"))]
        chosen.append(found[0] if found else "libcudart.so")
        return SimpleNamespace(handle=ctypes.CDLL(chosen[-1]))

    package, module = types.ModuleType("polygraphy"), types.ModuleType("polygraphy.cuda")
    module.wrapper = wrapper  # type: ignore[attr-defined]
    package.cuda = module  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "polygraphy", package)
    monkeypatch.setitem(sys.modules, "polygraphy.cuda", module)
    return chosen


def test_pips_libcudart_folders_are_found_cuda_12_layout_first(tmp_path: Path) -> None:
    from tasks.edge.tensorrt import pip_cudart_dirs

    site = tmp_path / "site-packages"
    for lib in ("nvidia/cu13/lib/libcudart.so.13", "nvidia/cuda_runtime/lib/libcudart.so.12", "nvidia/cu12/lib/x"):
        (site / lib).parent.mkdir(parents=True, exist_ok=True)
        (site / lib).write_bytes(b"")
    (site / "nvidia/cu13/lib/libcudart_static.a").write_bytes(b"")
    assert pip_cudart_dirs([str(tmp_path / "elsewhere"), str(site)]) == [
        site / "nvidia/cuda_runtime/lib",
        site / "nvidia/cu13/lib",
    ]
    assert pip_cudart_dirs([str(tmp_path)]) == []


def test_on_a_pip_only_host_polygraphy_loads_pips_libcudart(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine is such a host: PyTorch's CUDA wheels put libcudart in site-packages. Through `cuda_runtime`,
    Polygraphy's search takes that one (without it, Polygraphy's folders alone give another or the bare name), and
    the device query reaches the CUDA runtime, which answers with an error status here (no GPU) rather than the
    library being missing. LD_LIBRARY_PATH is as it was afterwards."""
    import os

    from tasks.edge.tensorrt import TensorRTUnavailable, cuda_runtime, pip_cudart_dirs, query_device

    dirs = pip_cudart_dirs()
    if not dirs:
        pytest.skip("no pip CUDA runtime wheel in this environment (PyTorch without CUDA wheels)")
    monkeypatch.setenv("LD_LIBRARY_PATH", "/nonexistent")
    chosen = polygraphy_stand_in(monkeypatch)
    cudart = cuda_runtime().handle
    assert Path(chosen[0]).parent == dirs[0] and Path(chosen[0]).name.startswith("libcudart.so")
    assert os.environ["LD_LIBRARY_PATH"] == "/nonexistent"
    with pytest.raises(TensorRTUnavailable, match=r"CUDA runtime error \d+"):
        query_device(cudart)
    monkeypatch.delenv("LD_LIBRARY_PATH")
    with contextlib.suppress(OSError):  # the bare `libcudart.so` may be on no loader path either
        cuda_runtime(search=[])  # Polygraphy's own folders alone
    assert Path(chosen[1]).parent not in dirs
    assert "LD_LIBRARY_PATH" not in os.environ
