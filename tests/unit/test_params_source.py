"""`params.yaml` is the one source of parameter values.

The typed config keeps defaults (code builds partial configs), so every default must equal the value in `params.yaml`,
and `params.yaml` must write every field (nothing is left to a default nobody sees). `differences` walks the model
tree: `Params` and its sections, every candidate and its `nncf:`/`qdq:` block, and the default `BuildConfig()`
candidates against those of the file. `QdqConfig`, which no candidate of the file uses, is pinned to its documented
defaults below.
"""

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from tasks.support.config import (
    AccuracyControlConfig,
    BuildConfig,
    CandidateConfig,
    ExtractConfig,
    IgnoredScopeConfig,
    NncfConfig,
    Params,
    QdqConfig,
)

ROOT = Path(__file__).resolve().parents[2]

# QdqConfig's defaults, as its docstring and the README's INT8 section list them: changing one is deliberate.
QDQ_DEFAULTS = {
    "calibration": "minmax",
    "percentile": 99.999,
    "per_channel": True,
    "symmetric_activations": False,
    "subset_size": 64,
    "ignored_scope": {"ultralytics_head": True, "branch_last_conv": True, "names": (), "types": (), "patterns": ()},
    "holdout_fraction": 0.25,
    "high_precision": "fp16",
}


def _written_fields(model: BaseModel) -> set[str]:
    """The fields `params.yaml` must write for this model: all of them, but for a candidate only those that apply
    (`backend` is fixed by our methods; only the block of its own method exists)."""
    fields = set(type(model).model_fields)
    if isinstance(model, CandidateConfig):
        if model.method != "ultralytics":
            fields.discard("backend")
        if model.method != "nncf":
            fields.discard("nncf")
        if model.method not in ("ort-qdq", "trt-qdq"):
            fields.discard("qdq")
    return fields


def differences(default: BaseModel, written: BaseModel, where: str = "") -> list[str]:
    """Every field of `written` (parsed from params.yaml) left out of the file, or whose value differs from `default`
    (the model built in code), as `dotted.key: why`."""
    found = []
    for name, field in type(written).model_fields.items():
        here = f"{where}.{field.alias or name}" if where else field.alias or name
        if name in _written_fields(written) and name not in written.model_fields_set:
            found.append(f"{here}: not written in params.yaml")
        ours, theirs = getattr(default, name), getattr(written, name)
        if isinstance(ours, BaseModel) and isinstance(theirs, BaseModel):
            found += differences(ours, theirs, here)
        elif isinstance(theirs, tuple) and theirs and isinstance(theirs[0], BaseModel):
            found += _differences_by_name(ours, theirs, here)
        elif ours != theirs:
            found.append(f"{here}: code default {ours!r} != params.yaml {theirs!r}")
    return found


def _differences_by_name(defaults: tuple, written: tuple, where: str) -> list[str]:
    """A list of named models (build.candidates): the same names in the same order, each compared field by field."""
    if [c.name for c in defaults] != [c.name for c in written]:
        return [f"{where}: code default {[c.name for c in defaults]} != params.yaml {[c.name for c in written]}"]
    found = []
    for ours, theirs in zip(defaults, written, strict=True):
        found += differences(ours, theirs, f"{where}[{theirs.name}]")
    return found


def _doc() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def _differences_of(doc: dict) -> list[str]:
    # parsed without `.rooted()`: the paths compare as written (relative), as the code defaults are
    return differences(Params(), Params.model_validate(doc))


def test_params_yaml_writes_every_field_and_every_code_default_equals_it() -> None:
    assert _differences_of(_doc()) == []


def test_nncf_defaults_are_the_measured_block_of_params_yaml() -> None:
    (mixed,) = [c for c in Params.model_validate(_doc()).build.candidates if c.name == "ov-int8-mixed"]
    assert mixed.nncf == NncfConfig()
    assert CandidateConfig(name="x", precision="int8", method="nncf").nncf_settings == mixed.nncf


def test_qdq_defaults_are_the_documented_ones_for_every_method() -> None:
    assert QdqConfig().model_dump() == QDQ_DEFAULTS
    assert CandidateConfig(name="q", precision="int8", method="ort-qdq").qdq_settings == QdqConfig()
    trt = CandidateConfig(name="t", precision="int8", method="trt-qdq", qdq={"symmetric_activations": True})
    assert trt.qdq_settings == QdqConfig(symmetric_activations=True)
    assert QdqConfig().ignored_scope == IgnoredScopeConfig()


def _drop(path: tuple) -> Callable[[dict], None]:
    def mutate(doc: dict) -> None:
        *parents, last = path
        for key in parents:
            doc = doc[key]
        del doc[last]

    return mutate


def _set(path: tuple, value: object) -> Callable[[dict], None]:
    def mutate(doc: dict) -> None:
        *parents, last = path
        for key in parents:
            doc = doc[key]
        doc[last] = value

    return mutate


MIXED = ("build", "candidates", 4)  # ov-int8-mixed


@pytest.mark.parametrize(
    ("mutate", "reported"),
    [
        (_drop(("extract", "dedup_threshold")), "extract.dedup_threshold: not written"),
        (_set(("extract", "interval_s"), 1.0), "extract.interval_s: code default 0.5 != params.yaml 1.0"),
        (_drop(("serve",)), "serve: not written"),
        (_drop(("paths", "frame_cache")), "paths.frame_cache: not written"),
        (_set(("paths", "videos"), "videos"), "paths.videos: code default"),
        (_drop(("validate", "grid_frames")), "validate.grid_frames: not written"),
        (_set(("validate", "batch_sizes"), [1, 4]), "validate.batch_sizes: code default"),
        (_set(("serve", "work_pools"), {"openvino": "cpu"}), "serve.work_pools: code default"),
        (_drop(("build", "candidates", 0, "method")), "build.candidates[fp32].method: not written"),
        (_drop(("build", "candidates", 2, "backend")), "build.candidates[ov-int8].backend: not written"),
        (_drop(("build", "candidates", 3)), "build.candidates: code default"),
        (_drop((*MIXED, "nncf", "accuracy_control", "holdout_fraction")), "accuracy_control.holdout_fraction: not"),
        (_drop((*MIXED, "nncf", "ignored_scope", "patterns")), "nncf.ignored_scope.patterns: not written"),
        (_drop((*MIXED, "nncf", "smooth_quant_alpha")), "nncf.smooth_quant_alpha: not written"),
        (_drop((*MIXED, "nncf")), "build.candidates[ov-int8-mixed].nncf: not written"),
        (_set((*MIXED, "nncf", "fast_bias_correction"), True), "nncf.fast_bias_correction: code default False"),
        (_set((*MIXED, "nncf", "accuracy_control", "enabled"), False), "nncf.accuracy_control.enabled: code default"),
    ],
)
def test_a_missing_or_different_value_is_reported(mutate: Callable[[dict], None], reported: str) -> None:
    doc = copy.deepcopy(_doc())
    mutate(doc)
    found = _differences_of(doc)
    assert any(reported in line for line in found), found


def test_a_changed_code_default_is_reported() -> None:
    written = Params.model_validate(_doc())
    changed = Params(extract=ExtractConfig(interval_s=1.0), build=BuildConfig(candidates=written.build.candidates[:4]))
    found = differences(changed, written)
    assert "extract.interval_s: code default 1.0 != params.yaml 0.5" in found
    assert any(line.startswith("build.candidates: code default") for line in found), found
    nncf = NncfConfig(accuracy_control=AccuracyControlConfig(holdout_fraction=0.3))
    assert differences(nncf, written.build.candidates[4].nncf) == [
        "accuracy_control.holdout_fraction: code default 0.3 != params.yaml 0.25"
    ]


def test_a_qdq_candidate_in_params_yaml_must_write_its_whole_block() -> None:
    doc = copy.deepcopy(_doc())
    doc["build"]["candidates"].append({"name": "q", "precision": "int8", "method": "ort-qdq", "qdq": {}})
    written = Params.model_validate(doc)
    found = differences(written, written)  # only the written-fields check can report here
    assert "build.candidates[q].qdq.calibration: not written in params.yaml" in found
    assert not any("[q].backend" in line for line in found)  # fixed by the method, not a value to write
