"""The TensorRT path: real where `tensorrt` imports and a CUDA GPU exists, a clear refusal elsewhere."""

import importlib.util
from pathlib import Path

import pytest

from tasks.build import BackendUnavailable, check_tensorrt

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


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is available here: the refusal path does not apply")
def test_tensorrt_build_fails_before_building_anything(built: tuple, plate_model: Path, tmp_path: Path) -> None:
    from tasks.build import build_candidates
    from tasks.config import BuildConfig, CandidateConfig

    params, _ = built
    cfg = BuildConfig(
        backend="tensorrt",
        imgsz=320,
        candidates=(
            CandidateConfig(name="fp32", precision="fp32", backend="onnxruntime"),
            CandidateConfig(name="trt-int8", precision="int8"),
        ),
    )
    out = tmp_path / "candidates"
    with pytest.raises(BackendUnavailable):
        build_candidates(plate_model, params.paths.calibration_yaml, out, cfg, params.model.sha256, "h")
    assert not out.exists(), "TensorRT was checked only after other candidates were built"


@pytest.mark.skipif(not HAVE_TRT, reason=SKIP_REASON)
def test_tensorrt_int8_engine_builds_and_validates(built: tuple, plate_model: Path, tmp_path: Path) -> None:
    from tasks.build import build_candidates
    from tasks.config import BuildConfig, CandidateConfig
    from tasks.validate import validate_candidates

    params, _ = built
    cfg = BuildConfig(
        backend="tensorrt",
        imgsz=320,
        candidates=(
            CandidateConfig(name="fp32", precision="fp32", backend="onnxruntime"),
            CandidateConfig(name="trt-fp16", precision="fp16"),
            CandidateConfig(name="trt-int8", precision="int8"),
        ),
    )
    built_trt = build_candidates(
        plate_model, params.paths.calibration_yaml, tmp_path / "c", cfg, params.model.sha256, "h"
    )
    assert [c.path.suffix for c in built_trt] == [".onnx", ".engine", ".engine"]
    metrics = validate_candidates(built_trt, params.paths.holdout, "fp32", params.validate_)
    assert metrics["trt-int8"]["agreement_map50"] > 0.5
