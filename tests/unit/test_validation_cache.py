"""The validation cache: content-addressed reports, a hit returns the stored rows, a damaged entry is an error."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tasks.pipeline.validate import ValidationReport
from tasks.pipeline.validation_cache import (
    CACHE_KEY,
    ValidationCacheError,
    cached_validation,
    entry_path,
    store,
    validation_key,
)
from tasks.support.candidate import Candidate
from tasks.support.config import ValidateConfig

REF = "fp32"


def candidate(name: str, sha: str, folder: Path) -> Candidate:
    return Candidate(
        name=name, backend="onnxruntime", precision="fp32" if name == REF else "int8", folder=folder,
        artifact="model.onnx", sha256=sha, size_mb=1.0, base_model_sha256="b" * 64, frames_hash="f" * 64, imgsz=320,
        toolchain={}, build_seconds=1.0, built_at="2026-11-28T00:00:00+00:00",
    )  # fmt: skip


@pytest.fixture
def inputs(tmp_path: Path) -> dict:
    """Candidates (artifacts named by hash only: a hit never opens them), a holdout and agreement frames."""
    holdout, frames = tmp_path / "holdout", tmp_path / "frames"
    for folder in (holdout / "images", holdout / "labels", frames / "images"):
        folder.mkdir(parents=True)
    (holdout / "images" / "a.jpg").write_bytes(b"jpeg a")
    (holdout / "labels" / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (frames / "images" / "f.jpg").write_bytes(b"jpeg f")
    cands = [candidate(REF, "1" * 64, tmp_path / "fp32"), candidate("ov-int8", "2" * 64, tmp_path / "int8")]
    return {"candidates": cands, "holdout_dir": holdout, "reference": REF, "cfg": ValidateConfig(),
            "frames_dir": frames}  # fmt: skip


def report() -> ValidationReport:
    rows = {REF: {"backend": "onnxruntime", "map50_95": 0.81, "latency_p50_ms": 12.5},
            "ov-int8": {"backend": "openvino", "map50_95": 0.8, "latency_p50_ms": 6.25, "gate": "pending"}}  # fmt: skip
    return ValidationReport(REF, rows, {REF: {"inference_ms": [12.0, 13.0]}}, {}, {}, "frames", 1, 2)


def test_a_hit_returns_the_stored_rows_without_measuring(inputs: dict, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    key = validation_key(**inputs)
    stored = report()
    store(cache, key, stored)
    got = cached_validation(**inputs, cache_dir=cache)  # measuring would fail: the artifacts do not exist
    assert got.metrics == stored.metrics and got.latency_samples == stored.latency_samples
    assert got.extra[CACHE_KEY] == f"hit {key}"
    assert dataclasses.replace(got, extra={}) == stored


@pytest.mark.parametrize("change", ["artifact", "label", "frame", "setting", "reference", "speed_reference"])
def test_any_input_that_shapes_the_numbers_is_a_new_key(inputs: dict, change: str) -> None:
    key = validation_key(**inputs)
    if change == "artifact":
        inputs["candidates"][1] = dataclasses.replace(inputs["candidates"][1], sha256="3" * 64)
    elif change == "label":
        (inputs["holdout_dir"] / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.1\n")
    elif change == "frame":
        (inputs["frames_dir"] / "images" / "g.jpg").write_bytes(b"jpeg g")
    elif change == "setting":
        inputs["cfg"] = inputs["cfg"].model_copy(update={"runs": inputs["cfg"].runs + 1})
    elif change == "reference":
        inputs["reference"] = "ov-int8"
    else:  # every speed-up divides another candidate's p50
        inputs["speed_reference"] = "ov-int8"
    assert validation_key(**inputs) != key
    assert validation_key(**inputs) == validation_key(**inputs)  # and it is a function of the inputs alone


@pytest.mark.parametrize("damage", [b"", b"not a pickle", b"\x80\x04\x95truncated"])
def test_a_damaged_entry_is_an_error_naming_the_file_and_the_fix(inputs: dict, tmp_path: Path, damage: bytes) -> None:
    cache = tmp_path / "cache"
    key = validation_key(**inputs)
    store(cache, key, report())
    path = entry_path(cache, key)
    path.write_bytes(damage)
    with pytest.raises(ValidationCacheError) as err:
        cached_validation(**inputs, cache_dir=cache)
    assert str(path) in str(err.value) and "Delete the file" in str(err.value)
    assert path.read_bytes() == damage  # left for the operator to see, not silently replaced


def test_an_entry_of_another_key_is_refused(inputs: dict, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    key = validation_key(**inputs)
    other = store(cache, "0" * 64, report())
    entry_path(cache, key).write_bytes(other.read_bytes())  # a file copied or renamed into the wrong name
    with pytest.raises(ValidationCacheError, match="does not hold the report of this key"):
        cached_validation(**inputs, cache_dir=cache)
