"""The workflow is not tied to the default YOLOv8-size detector: a YOLO11n built offline from its YAML goes through
build and validation on every default backend (its weights are random, so only the mechanics are checked)."""

from pathlib import Path

import pytest

from tasks.pipeline.build import build_candidates
from tasks.pipeline.validate import run_validation
from tasks.support.config import BuildConfig, CandidateConfig, ValidateConfig

pytestmark = pytest.mark.integration


def test_yolo11n_builds_and_validates(built: tuple, tmp_path: Path) -> None:
    from ultralytics import YOLO

    params, _ = built
    weights = tmp_path / "yolo11n.pt"
    YOLO("yolo11n.yaml").save(str(weights))
    cfg = BuildConfig(
        imgsz=160,
        speed_reference=None,
        candidates=(
            CandidateConfig(name="fp32", precision="fp32", backend="onnxruntime"),
            CandidateConfig(name="ov-int8", precision="int8", backend="openvino"),
        ),
    )
    candidates = build_candidates(weights, params.paths.calibration_yaml, tmp_path / "c", cfg, "random", "frames")
    # and the FP32 model derived at the INT8 candidate's geometry (the clips' camera shape at 160, band 16)
    assert [c.name for c in candidates] == ["fp32", "ov-int8", "fp32@128x160"]
    # untrained weights score every box near the head's prior (~1e-4): agreement labels need a conf below that
    vcfg = ValidateConfig(imgsz=160, warmup=1, runs=3, agreement_conf=1e-6)
    metrics = run_validation(candidates, params.paths.holdout, "fp32", vcfg).metrics
    assert set(metrics) == {"fp32", "ov-int8", "fp32@128x160"}
    assert all(m["latency_p50_ms"] > 0 for n, m in metrics.items() if "@" not in n)  # the yardstick is not timed
