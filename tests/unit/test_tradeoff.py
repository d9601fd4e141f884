"""The trade-off chart's data (tasks/pipeline/tradeoff.py) on a synthetic rebuild: no model, no MLflow."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tasks.operations.policy import decide, verdict_tags
from tasks.pipeline.tradeoff import DROP_KINDS, tradeoff_data, write_tradeoff
from tasks.support.config import PromoteConfig

CFG = PromoteConfig(min_agreement=0.8, min_speedup=1.25, max_p95_ms=50, max_map_drop=0.01)


def _row(p50: float, agreement: float, method: str, map_drop: float = 0.0, p95: float | None = None) -> dict:
    return {
        "latency_p50_ms": p50,
        "latency_p95_ms": p95 if p95 is not None else p50 * 1.2,
        "agreement_map50_95": agreement,
        "map_drop": map_drop,
        "quant_map_drop": 0.0,
        "speedup": round(20.0 / p50, 3),
        "method": method,
        "engine_mb": 10.0,
    }


ROWS = {
    "fp32": _row(20.0, 1.0, "ultralytics"),
    "ov-int8": _row(10.0, 0.9, "ultralytics", map_drop=0.05),  # in the shaded region, but loses mAP
    "ort-int8": _row(12.0, 0.7, "ultralytics"),  # too far from FP32: below the shaded region, not hollow
    "ours": _row(11.0, 0.95, "nncf"),  # passes everything: the winner
    "slow-tail": _row(9.0, 0.97, "nncf", p95=80.0),  # fastest p50 but its p95 fails
}


def _logged(rows: dict, cfg: PromoteConfig) -> dict:
    """Each row plus the `gate.*` tags the promotion gate logs (record_verdicts), from the real `decide`."""
    tags = verdict_tags(decide(rows, cfg))
    return {name: {**row, **tags.get(name, {})} for name, row in rows.items()}  # a geometry reference: no verdict


def test_hollow_ringed_peers_and_the_shaded_bounds(tmp_path: Path) -> None:
    data = tradeoff_data(_logged(ROWS, CFG), "fp32", CFG)
    by = {p.name: p for p in data.points}
    # the shaded region: agreement and speed-up bounds from params (speed-up as a latency bound on FP32's p50)
    assert (data.min_agreement, data.min_speedup, data.max_p50_ms) == (0.8, 1.25, pytest.approx(16.0))
    assert data.decided and data.winner == "ours"
    assert "fastest passing: ours" in data.policy  # the promotion's explanation, written under the plot
    assert [p.name for p in data.points if p.winner] == ["ours"]
    # hollow: failed a gate other than agreement / speed-up, with that gate named
    assert by["ov-int8"].hollow and by["ov-int8"].failed_gates == ("map_drop",)
    assert by["slow-tail"].hollow and by["slow-tail"].failed_gates == ("p95_ms",)
    # failing only an area gate is shown by the position, not by a hollow marker
    assert not by["ort-int8"].hollow and by["ort-int8"].passed is False
    assert not by["fp32"].hollow and by["fp32"].passed is False  # speed-up 1.0 < 1.25: left of nothing, outside
    assert {p.name: p.role for p in data.points} == {
        "fp32": "reference", "ov-int8": "peer", "ort-int8": "peer", "ours": "ours", "slow-tail": "ours",
    }  # fmt: skip
    files = write_tradeoff(data, tmp_path / "tradeoff")
    assert [f.name for f in files] == ["tradeoff.png", "tradeoff.json", "tradeoff.csv"]
    assert files[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(files[1].read_text())["winner"] == "ours"
    table = {r["name"]: r for r in csv.DictReader(files[2].open())}
    assert table["ov-int8"]["failed_gates"] == "map_drop" and table["ov-int8"]["hollow"] == "True"


def test_before_the_gate_ran_nothing_is_hollow_or_ringed() -> None:
    data = tradeoff_data(ROWS, "fp32", CFG)
    assert not data.decided and data.winner is None
    assert not any(p.hollow or p.winner for p in data.points)
    with pytest.raises(ValueError, match="reference 'nope'"):
        tradeoff_data(ROWS, "nope", CFG)


def test_a_candidate_the_gate_failed_to_measure_is_not_drawn() -> None:
    rows = {**ROWS, "trt-qdq": {"gate": "failed: no gate worker", "method": "trt-qdq", "gate.passed": "false"}}
    assert "trt-qdq" not in [p.name for p in tradeoff_data(rows, "fp32", CFG).points]


def test_the_speed_bound_is_the_speed_reference_the_rebuild_was_timed_against() -> None:
    rows = {**ROWS, "fp32": {**ROWS["fp32"], "role": "accuracy reference"}}
    rows["fp32-ov"] = {**_row(16.0, 0.99, "ultralytics"), "role": "speed reference"}
    data = tradeoff_data(rows, "fp32", CFG)
    assert data.speed_reference == "fp32-ov" and data.reference_p50_ms == 16.0 and data.max_p50_ms == 16.0 / 1.25
    assert {p.name: p.role for p in data.points}["fp32-ov"] == "reference"
    # a rebuild logged before the speed reference existed timed its speed-ups against the accuracy reference
    old = tradeoff_data(ROWS, "fp32", CFG)
    assert old.speed_reference == "fp32" and old.max_p50_ms == 20.0 / 1.25


def test_a_pending_decision_is_in_the_title_with_the_champions_line(tmp_path: Path) -> None:
    """The issue's night on the chart: the FP32 winner 2.16x the INT8 champion's p50, both timed together; the title
    says the champion stays deployed, the champion's line sits where that ratio puts it, the winner is not hollow."""
    from tasks.operations.policy import ChampionScore, Timing, review

    rows = {
        "fp32": {**_row(20.0, 1.0, "ultralytics"), "precision": "fp32", "map50_95": 0.7},
        "ours": {**_row(9.0, 0.7, "nncf"), "precision": "int8", "map50_95": 0.7},  # fails agreement on new footage
    }
    cfg = CFG.model_copy(update={"min_speedup": 0.5})
    champion = ChampionScore("3", "ours", 0.7, precision="int8")
    decision = review(decide(rows, cfg, champion), rows, cfg, "fp32", champion, Timing(2.0, 0.02, 10.0, 20.0), False)
    tags = verdict_tags(decision)
    data = tradeoff_data({name: {**row, **tags[name]} for name, row in rows.items()}, "fp32", cfg)
    assert data.winner == "fp32" and data.pending and data.champion == "3"
    assert data.champion_p50_ms == pytest.approx(10.0)  # the winner's 20 ms / 2.0
    winner = next(p for p in data.points if p.winner)
    assert not winner.hollow, "the comparison with the champion is the title's, not a failed gate of the point"
    assert "2.00x the champion's p50" in data.decision and "no INT8 candidate passed" in data.decision
    files = write_tradeoff(data, tmp_path / "tradeoff")
    assert json.loads(files[1].read_text())["decision"].startswith("pending: ")
    # deployed (no champion, or a faster winner): no PENDING, and the chart without a decision line
    fast = review(decide(rows, cfg, champion), rows, cfg, "fp32", champion, Timing(0.9, 0.02, 22.0, 20.0), True)
    data = tradeoff_data({n: {**r, **verdict_tags(fast)[n]} for n, r in rows.items()}, "fp32", cfg)
    assert not data.pending and data.decision.startswith("deploy (attended)")


def test_every_labelled_drop_is_drawn_with_its_interval(tmp_path: Path) -> None:
    """map_drop and quant_map_drop of each candidate, and the geometry's own cost on its reference's row, each with
    its bootstrap interval (as MLflow holds it: `_low`/`_high` metrics) in the panel under the chart."""
    rows = {
        **ROWS,
        "ours": {**ROWS["ours"], "quant_map_drop": 0.002, "map_drop_ci_low": -0.01, "map_drop_ci_high": 0.02},
        "fp32@192x320": {"map_drop": 0.01, "geometry_map_drop": 0.01, "geometry_map_drop_ci_low": 0.0,
                         "geometry_map_drop_ci_high": 0.03, "role": "geometry reference"},
    }  # fmt: skip
    data = tradeoff_data(_logged(rows, CFG), "fp32", CFG)
    drops = {(d.name, d.kind): d for d in data.drops}
    assert (drops[("ours", "map_drop")].low, drops[("ours", "map_drop")].high) == (-0.01, 0.02)
    assert drops[("ours", "quant_map_drop")].value == 0.002 and drops[("ours", "quant_map_drop")].low is None
    assert drops[("fp32@192x320", "geometry_map_drop")].high == 0.03
    assert ("fp32@192x320", "map_drop") not in drops and not any(d.name == "fp32" for d in data.drops)
    assert "fp32@192x320" not in [p.name for p in data.points]  # not timed: no point on the latency axis
    assert (data.max_map_drop, data.max_quant_drop) == (0.01, CFG.max_quant_drop)
    files = write_tradeoff(data, tmp_path / "tradeoff")
    assert files[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {d["kind"] for d in json.loads(files[1].read_text())["drops"]} == set(DROP_KINDS)
