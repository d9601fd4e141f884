from pathlib import Path

import pytest

from tasks.support.config import ConfigError, load_params

ROOT = Path(__file__).resolve().parents[2]


def test_repo_params_parse_and_root_paths() -> None:
    params = load_params(ROOT / "params.yaml")
    assert params.paths.videos == ROOT / "data" / "videos"
    assert params.promote.gate_dir == ROOT / "deploy" / "gate"
    assert params.tracking.uri == f"sqlite:///{ROOT / 'mlflow.db'}"
    assert params.build.reference == "fp32"
    assert {c.name for c in params.build.candidates} >= {"fp32", "ov-int8", "ort-int8"}
    assert params.extract.interval_s == 0.5
    assert params.promote.max_map_drop == 0.01


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"params\.yaml: not found"):
        load_params(tmp_path / "params.yaml")


def test_unknown_key_is_an_error_not_ignored(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"extract\.interval"):
        load_params(write(tmp_path, "extract:\n  interval: 2\n"))


def test_bad_values_fail_fast(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="interval_s"):
        load_params(write(tmp_path, "extract:\n  interval_s: 0\n"))
    with pytest.raises(ConfigError, match="imgsz"):
        load_params(write(tmp_path, "build:\n  imgsz: 100\n"))


def test_reference_must_be_a_fp32_candidate(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not one of build\.candidates"):
        load_params(write(tmp_path, "build:\n  reference: nope\n"))
    text = "build:\n  reference: a\n  candidates:\n    - {name: a, precision: int8}\n"
    with pytest.raises(ConfigError, match="must have precision fp32"):
        load_params(write(tmp_path, text))


def test_candidate_backend_defaults_to_build_backend(tmp_path: Path) -> None:
    text = (
        "build:\n  backend: tensorrt\n  speed_reference: null\n  candidates:\n"
        "    - {name: fp32, precision: fp32, backend: onnxruntime}\n    - {name: trt-int8, precision: int8}\n"
    )
    build = load_params(write(tmp_path, text)).build
    assert [build.backend_of(c) for c in build.candidates] == ["onnxruntime", "tensorrt"]


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(write(tmp_path, "extract: [\n"))


def test_validation_params_and_paths(tmp_path: Path) -> None:
    params = load_params(ROOT / "params.yaml")
    v = params.validate_
    assert v.runs >= 200 and v.threads >= 1 and 1 in v.batch_sizes
    assert params.paths.holdout_frames == ROOT / "data" / "holdout_frames"
    assert params.paths.plots == ROOT / "metrics" / "plots"
    with pytest.raises(ConfigError, match="batch_sizes"):
        load_params(write(tmp_path, "validate:\n  batch_sizes: [1, 0]\n"))
    with pytest.raises(ConfigError, match="threads"):
        load_params(write(tmp_path, "validate:\n  threads: 0\n"))


def test_a_key_given_twice_is_an_error_naming_it(tmp_path: Path) -> None:
    """Issue 15, defect 8: YAML keeps the last of two equal keys silently."""
    p = tmp_path / "params.yaml"
    p.write_text("promote:\n  max_map_drop: 0.01\n  min_agreement: 0.8\n  max_map_drop: 0.5\n")
    with pytest.raises(ConfigError, match=r"line 4: key 'max_map_drop' is given twice \(first at line 2\)"):
        load_params(p)


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("promote:\n  max_map_drop: true\n", "max_map_drop"),
        ("validate:\n  runs: false\n", "runs"),
        ("validate:\n  batch_sizes: [1, true]\n", "batch_sizes"),
    ],
)
def test_true_is_not_a_number(tmp_path: Path, yaml_text: str, key: str) -> None:
    """Issue 15, defect 8: pydantic's lax mode reads `true` as 1 (a max_map_drop of 1 passes every candidate)."""
    p = tmp_path / "params.yaml"
    p.write_text(yaml_text)
    with pytest.raises(ConfigError, match=rf"{key}: expected a number, got (True|False|\[1, True\])"):
        load_params(p)


def test_the_tracking_uri_is_shown_without_credentials() -> None:
    """Issue 15, defect 8: a tracking URI may hold the server's credentials; logs and messages show it redacted."""
    from tasks.support.config import TrackingConfig, redact_text

    cfg = TrackingConfig(uri="https://ops:pa55@mlflow.example:5000/?token=abc&x=1")
    assert cfg.shown_uri == "https://***@mlflow.example:5000/?token=***&x=1"
    assert TrackingConfig(uri="sqlite:////srv/a/mlflow.db").shown_uri == "sqlite:////srv/a/mlflow.db"
    assert redact_text("in http://ops:pa55@h:1 has no alias") == "in http://***@h:1 has no alias"


def test_speed_reference_must_be_a_declared_fp32_candidate_the_host_times(tmp_path: Path) -> None:
    head = "build:\n  candidates:\n    - {name: fp32, precision: fp32, backend: onnxruntime}\n"
    with pytest.raises(ConfigError, match=r"speed_reference 'fp32-ov' is not one of build.candidates.*null"):
        load_params(write(tmp_path, head))  # the default speed reference, not declared: never a quiet fallback
    int8 = head + "    - {name: q, precision: int8, backend: openvino}\n  speed_reference: q\n"
    with pytest.raises(ConfigError, match="speed_reference 'q' must have precision fp32"):
        load_params(write(tmp_path, int8))
    gate = head.replace("build:\n", "build:\n  backend: tensorrt\n") + "    - {name: e, precision: fp32}\n"
    with pytest.raises(ConfigError, match="speed_reference 'e' would be built and timed on the gate"):
        load_params(write(tmp_path, gate + "  speed_reference: e\n"))
    build = load_params(write(tmp_path, head + "  speed_reference: null\n")).build
    assert build.speed_reference_name == "fp32"  # null: the accuracy reference times speed-ups, as declared
    assert load_params(ROOT / "params.yaml").build.speed_reference_name == "fp32-ov"
