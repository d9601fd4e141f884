import json
from pathlib import Path

import pytest

from tasks.validate import ValidationError, read_metrics, validate_candidates, write_metrics

pytestmark = pytest.mark.integration

KEYS = {
    "map50", "map50_95", "box_precision", "box_recall", "agreement_map50", "agreement_map50_95",
    "latency_p50_ms", "latency_p95_ms", "e2e_p50_ms", "size_mb", "map_drop", "speedup", "backend", "precision",
}  # fmt: skip


def test_every_candidate_gets_every_metric(validated: dict, built: tuple) -> None:
    params, candidates = built
    assert set(validated) == {c.name for c in candidates}
    for name, row in validated.items():
        assert set(row) >= KEYS, name
        assert 0 <= row["map50_95"] <= row["map50"] <= 1
        assert 0 < row["latency_p50_ms"] <= row["latency_p95_ms"]
    ref = validated["fp32"]
    assert ref["map_drop"] == 0 and ref["speedup"] == 1
    # the reference agrees with its own detections; the detector finds the synthetic plates
    assert ref["agreement_map50"] > 0.9
    assert ref["map50"] > 0.3
    assert validated["ov-int8"]["precision"] == "int8" and validated["ov-int8"]["backend"] == "openvino"
    # INT8 candidates still see what FP32 sees (a broken export that detects nothing would score ~0)
    for name in ("ov-int8", "ort-int8"):
        assert validated[name]["agreement_map50"] > 0.5, name
        assert validated[name]["map50"] > 0.5 * ref["map50"], name
    # validation reads the DVC-tracked holdout but never writes into it (no labels.cache beside the labels)
    assert sorted(p.name for p in params.paths.holdout.iterdir()) == ["images", "labels"]


def test_metrics_json_round_trip(validated: dict, tmp_path: Path) -> None:
    path = write_metrics(tmp_path / "m" / "validate.json", "fp32", validated)
    assert json.loads(path.read_text())["reference"] == "fp32"
    assert read_metrics(path) == json.loads(json.dumps(validated))


def test_missing_holdout_is_a_clear_error(built: tuple, tmp_path: Path) -> None:
    params, candidates = built
    with pytest.raises(ValidationError, match="no holdout images"):
        validate_candidates(candidates, tmp_path, "fp32", params.validate_)
    with pytest.raises(ValidationError, match="reference candidate 'nope'"):
        validate_candidates(candidates, params.paths.holdout, "nope", params.validate_)
