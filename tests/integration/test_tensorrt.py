"""The TensorRT path: real where `tensorrt` imports and a CUDA GPU exists, a clear refusal elsewhere."""

import importlib.util
from pathlib import Path

import pytest

from tasks.pipeline.build import BackendUnavailable, build_candidates, check_tensorrt
from tasks.support.config import BuildConfig, CandidateConfig

pytestmark = [pytest.mark.integration, pytest.mark.tensorrt]


def _gpu() -> bool:
    import torch

    return torch.cuda.is_available()


HAVE_TRT = importlib.util.find_spec("tensorrt") is not None and _gpu()
SKIP_REASON = "TensorRT engines need the tensorrt package and a CUDA GPU; this machine has " + (
    "no tensorrt package" if importlib.util.find_spec("tensorrt") is None else "no CUDA GPU"
)


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is available here: the refusal path does not apply")
def test_tensorrt_backend_refuses_with_the_reason_and_the_fix() -> None:
    with pytest.raises(BackendUnavailable) as err:
        check_tensorrt()
    message = str(err.value)
    assert "TensorRT backend unavailable here" in message
    assert "build.backend: openvino" in message
    assert ("tensorrt` Python package" in message) or ("no CUDA GPU" in message)


def tensorrt_build(*precisions: str) -> BuildConfig:
    """The FP32 ONNX reference plus one TensorRT engine per precision (their backend comes from build.backend)."""
    engines = tuple(CandidateConfig(name=f"trt-{p}", precision=p) for p in precisions)
    reference = CandidateConfig(name="fp32", precision="fp32", backend="onnxruntime")
    return BuildConfig(backend="tensorrt", imgsz=320, candidates=(reference, *engines))


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is available here: the refusal path does not apply")
def test_tensorrt_build_fails_before_building_anything(built: tuple, plate_model: Path, tmp_path: Path) -> None:
    params, _ = built
    out = tmp_path / "candidates"
    with pytest.raises(BackendUnavailable):
        build_candidates(
            plate_model, params.paths.calibration_yaml, out, tensorrt_build("int8"), params.model.sha256, "h"
        )
    assert not out.exists(), "TensorRT was checked only after other candidates were built"


@pytest.mark.skipif(not HAVE_TRT, reason=SKIP_REASON)
def test_tensorrt_int8_engine_builds_and_validates(built: tuple, plate_model: Path, tmp_path: Path) -> None:
    from tasks.pipeline.validate import run_validation

    params, _ = built
    cfg = tensorrt_build("fp16", "int8")
    built_trt = build_candidates(
        plate_model, params.paths.calibration_yaml, tmp_path / "c", cfg, params.model.sha256, "h"
    )
    assert [c.path.suffix for c in built_trt] == [".onnx", ".engine", ".engine"]
    metrics = run_validation(built_trt, params.paths.holdout, "fp32", params.validate_).metrics
    assert metrics["trt-int8"]["agreement_map50"] > 0.5


def test_engine_header_round_trips_and_an_engine_without_its_device_is_refused(tmp_path: Path) -> None:
    from tasks.runtime.tensorrt import EngineMismatch, check_engine, read_engine, write_engine

    path = write_engine(tmp_path / "m.engine", {"stride": 32, "names": {"0": "plate"}}, b"\x00engine-bytes")
    assert read_engine(path) == ({"stride": 32, "names": {"0": "plate"}}, b"\x00engine-bytes")
    with pytest.raises(EngineMismatch, match="does not record its GPU"):
        check_engine(path)
    (tmp_path / "raw.engine").write_bytes(b"\xff\xfe\xfd\xfcnot json")
    with pytest.raises(EngineMismatch, match="no metadata header"):
        read_engine(tmp_path / "raw.engine")


@pytest.mark.skipif(not HAVE_TRT, reason=SKIP_REASON)
def test_strongly_typed_qdq_engine_records_its_device_and_refuses_another(
    built: tuple, plate_model: Path, tmp_path: Path
) -> None:
    from tasks.pipeline.validate import run_validation
    from tasks.runtime.tensorrt import EngineMismatch, check_engine, read_engine, with_device, write_engine

    params, _ = built
    ours = CandidateConfig(name="trt-qdq", precision="int8", method="trt-qdq", qdq={"symmetric_activations": True})
    cfg = BuildConfig(backend="tensorrt", imgsz=320, candidates=(tensorrt_build().candidates[0], ours))
    out = build_candidates(
        plate_model, params.paths.calibration_yaml, tmp_path / "c", cfg, params.model.sha256, "h", gate=params.validate_
    )
    engine = out[1].path
    assert engine.suffix == ".engine"
    device = check_engine(engine)
    assert {"gpu", "compute_capability", "tensorrt"} <= set(device)
    metrics = run_validation(out, params.paths.holdout, "fp32", params.validate_).metrics
    assert metrics["trt-qdq"]["agreement_map50"] > 0.5
    header, blob = read_engine(engine)
    assert engine.with_suffix(".plan").read_bytes() == blob  # the plain plan, for trtexec / DeepStream / C++
    assert out[1].tensorrt["plan"] == engine.with_suffix(".plan").name and out[1].tensorrt["device"] == device
    write_engine(engine, with_device(header, {**device, "gpu": "some other GPU"}), blob)
    with pytest.raises(EngineMismatch, match="some other GPU"):
        check_engine(engine)


def test_an_engine_built_for_another_gpu_is_refused_before_any_loader_runs(tmp_path: Path) -> None:
    from tasks.runtime.tensorrt import EngineMismatch, ensure_runnable, write_engine

    device = {"gpu": "Orin (nvgpu)", "compute_capability": "8.7", "tensorrt": "10.3.0"}
    engine = write_engine(tmp_path / "m.engine", {"stride": 32, "device": device}, b"\x00engine-bytes")
    with pytest.raises(EngineMismatch, match=r"built for 'Orin \(nvgpu\)'"):
        ensure_runnable(engine)
    ensure_runnable(tmp_path / "m.onnx")  # other formats are not TensorRT's to refuse
