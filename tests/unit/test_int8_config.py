"""The candidate schema of `build.candidates`: methods, quantization settings, and nonsense refused with the fix."""

from pathlib import Path

import pytest
import yaml

from tasks.pipeline.build import cache_key
from tasks.support.config import BuildConfig, CandidateConfig, ConfigError, load_params

ROOT = Path(__file__).resolve().parents[2]


def _params_with(tmp_path: Path, *candidates: dict) -> Path:
    doc = yaml.safe_load((ROOT / "params.yaml").read_text())
    doc["build"]["candidates"] = [{"name": "fp32", "precision": "fp32", "backend": "onnxruntime"}, *candidates]
    doc["build"]["speed_reference"] = None
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_default_params_declare_fp32_both_ultralytics_peers_and_ours() -> None:
    build = load_params(ROOT / "params.yaml").build
    methods = {c.name: (c.method, build.backend_of(c), c.precision) for c in build.candidates}
    assert methods["fp32"] == ("ultralytics", "onnxruntime", "fp32")
    assert methods["ov-int8"] == ("ultralytics", "openvino", "int8")
    assert methods["ort-int8"] == ("ultralytics", "onnxruntime", "int8")
    ours = [c for c in build.candidates if c.method == "nncf"]
    assert ours and ours[0].nncf_settings.accuracy_control.enabled
    assert ours[0].nncf_settings.accuracy_control.search  # bounded by its budget, run only when the gate fails
    assert ours[0].nncf_settings.preset == "mixed"


def test_full_nncf_and_qdq_settings_parse(tmp_path: Path) -> None:
    nncf = {
        "name": "ours",
        "precision": "int8",
        "method": "nncf",
        "nncf": {
            "preset": "performance",
            "subset_size": 50,
            "ignored_scope": {"names": ["a"], "types": ["Sigmoid"], "patterns": [r".*model\.22.*"]},
            "fast_bias_correction": False,
            "smooth_quant_alpha": 0.5,
            "accuracy_control": {
                "enabled": True,
                "max_drop": 0.005,
                "max_iterations": 3,
                "holdout_fraction": 0.3,
                "search": False,
            },
        },
    }
    qdq = {
        "name": "q",
        "precision": "int8",
        "method": "ort-qdq",
        "qdq": {"calibration": "percentile", "percentile": 99.99},
    }
    trt = {"name": "t", "precision": "int8", "method": "trt-qdq", "qdq": {"symmetric_activations": True}}
    build = load_params(_params_with(tmp_path, nncf, qdq, trt)).build
    by = {c.name: c for c in build.candidates}
    assert by["ours"].nncf_settings.accuracy_control.max_drop == 0.005
    assert by["ours"].nncf_settings.accuracy_control.search is False
    assert build.backend_of(by["ours"]) == "openvino"
    assert build.backend_of(by["q"]) == "onnxruntime"
    assert build.backend_of(by["t"]) == "tensorrt"
    with pytest.raises(ValueError, match=r"'t2'.*add `qdq: \{symmetric_activations: true\}`"):
        CandidateConfig(name="t2", precision="int8", method="trt-qdq")  # no hidden per-method default: stated


@pytest.mark.parametrize(
    ("candidate", "message"),
    [
        ({"name": "x", "precision": "int8", "method": "nncf", "nncf": {"presets": "mixed"}}, "nncf.presets"),
        ({"name": "x", "precision": "int8", "method": "nncf", "nncf": {"preset": "fast"}}, "nncf.preset"),
        ({"name": "x", "precision": "int8", "nncf": {"preset": "mixed"}}, "need method: nncf"),
        ({"name": "x", "precision": "fp32", "method": "nncf"}, "set precision: int8"),
        ({"name": "x", "precision": "int8", "method": "nncf", "backend": "onnxruntime"}, "builds for openvino"),
        (
            {"name": "x", "precision": "int8", "method": "trt-qdq", "qdq": {"symmetric_activations": False}},
            "symmetric activations",
        ),
        ({"name": "x", "precision": "int8", "method": "trt-qdq"}, "qdq: {symmetric_activations: true}"),
        (
            {
                "name": "x",
                "precision": "int8",
                "method": "trt-qdq",
                "qdq": {"symmetric_activations": True, "per_channel": False},
            },
            "per output channel",
        ),
        ({"name": "x", "precision": "int8", "method": "ort-qdq", "qdq": {"calibration": "max"}}, "qdq.calibration"),
        (
            {"name": "x", "precision": "int8", "method": "ort-qdq", "qdq": {"percentile": 99.9}},
            "calibration: percentile",
        ),
        (
            {"name": "x", "precision": "int8", "method": "nncf", "nncf": {"ignored_scope": {"patterns": ["(["]}}},
            "not a regular expression",
        ),
        (
            {"name": "x", "precision": "int8", "method": "nncf", "nncf": {"accuracy_control": {"max_drop": 2}}},
            "max_drop",
        ),
        ({"name": "x", "precision": "int8", "method": "modelopt"}, "method"),
    ],
)
def test_nonsense_candidates_fail_fast_naming_the_file_and_key(tmp_path: Path, candidate: dict, message: str) -> None:
    path = _params_with(tmp_path, candidate)
    with pytest.raises(ConfigError) as err:
        load_params(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_cache_key_changes_with_every_input() -> None:
    cand = CandidateConfig(name="x", precision="int8", method="nncf").model_dump(mode="json")
    base = cache_key("m", "f", cand, 640, {"openvino": "1"})
    assert base == cache_key("m", "f", dict(reversed(list(cand.items()))), 640, {"openvino": "1"})
    other = CandidateConfig(name="x", precision="int8", method="nncf", nncf={"subset_size": 10})
    changed = [
        cache_key("m2", "f", cand, 640, {"openvino": "1"}),
        cache_key("m", "f2", cand, 640, {"openvino": "1"}),
        cache_key("m", "f", other.model_dump(mode="json"), 640, {"openvino": "1"}),
        cache_key("m", "f", cand, 320, {"openvino": "1"}),
        cache_key("m", "f", cand, 640, {"openvino": "2"}),
    ]
    assert base not in changed and len(set(changed)) == len(changed)


def test_reference_must_stay_an_fp32_candidate() -> None:
    with pytest.raises(ValueError, match="precision fp32"):
        BuildConfig(
            reference="q",
            speed_reference=None,
            candidates=(CandidateConfig(name="q", precision="int8", method="ort-qdq"),),
        )
