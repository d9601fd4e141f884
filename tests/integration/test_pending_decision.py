"""An unattended rebuild never makes a gate slower (the champion issue), against a real sqlite MLflow store, real
artifacts and a real gate folder, on the promotion tests' fixtures: the issue's night as a test."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import another_build
from test_promotion import REF, alias, deployed_version, log, run_promote, store_in

from tasks.operations.pending import pending_for
from tasks.operations.promote import NotPending, approve
from tasks.operations.status import status
from tasks.pipeline.tradeoff import log_tradeoff
from tasks.support.registry import CHALLENGER, CHAMPION, PREVIOUS
from tasks.support.tracking import client

pytestmark = pytest.mark.integration
INT8 = "ov-int8"  # a real INT8 champion (Ultralytics' OpenVINO export), much faster than the FP32 ONNX Runtime model


def test_an_unattended_rebuild_whose_int8_candidates_fail_keeps_the_champion_until_a_person_approves(
    built, validated, tmp_path
) -> None:
    """A champion INT8; a watcher's rebuild (unattended) in which the INT8 candidate fails and only FP32 passes: the
    champion stays deployed, the FP32 winner is a pending decision (registry alias, verdict, the rebuild's run, the
    chart, `status`), and approving it deploys it. Then an equally fast challenger is promoted unattended, as before."""
    store = store_in(tmp_path, built)
    # max_slowdown: two builds of one model timed together at test size (4 rounds of 3 runs on a shared machine)
    # differ by their timing's luck; a real slowdown (the INT8 champion vs FP32, 2-3x) exceeds this
    gates = {"max_map_drop": 0.2, "max_quant_drop": 0.2, "max_slowdown": 1.5}
    store = store.model_copy(update={"promote": store.promote.model_copy(update=gates)})
    _, candidates = built
    by_name = {c.name: c for c in candidates}
    builds = tmp_path / "builds"
    # the demo's night before: our INT8 build is the champion
    first = log(store, [another_build(by_name[INT8], builds)], {INT8: validated[INT8]})
    v1 = run_promote(store, first, {INT8: validated[INT8]}).version
    assert v1 == first.candidates[INT8].version and deployed_version(store) == v1

    # one video lands; the watcher's rebuild: the INT8 candidate now fails agreement, only FP32 passes
    metrics = {REF: validated[REF], INT8: {**validated[INT8], "agreement_map50_95": 0.3}}
    second = log(store, [another_build(by_name[REF], builds), another_build(by_name[INT8], builds)], metrics)
    v2 = second.candidates[REF].version
    result = run_promote(store, second, metrics)  # unattended: what the watcher's deployment run does
    decision, review = result.decision, result.decision.review
    assert decision.winner == REF and result.pending == v2 and result.version is None, decision.explain()
    assert review is not None and review.pending and review.champion_version == v1
    assert any("no INT8 candidate passed" in r for r in review.reasons), review.reasons
    latency = next(c for c in review.checks if c.gate == "champion_latency")  # timed together, like for like
    assert review.timing is not None and review.timing.basis.startswith("timed together, interleaved")
    assert review.timing.champion_p50_ms > 0 and review.timing.winner_p50_ms > 0 and latency.value > 0
    assert "decision: PENDING, the champion stays deployed" in decision.explain()
    # the champion stays deployed, untouched; the challenger is held under the gate's own pending alias
    assert (deployed_version(store), alias(store, CHAMPION), alias(store, CHALLENGER)) == (v1, v1, v1)
    pend = pending_for(store.tracking, store.promote.gate_dir)
    assert pend is not None and pend["version"] == v2 and pend["candidate"] == REF and pend["champion_version"] == v1
    # shown: the verdict on the winner's run, the rebuild's run, the trade-off chart, `status`
    mc = client(store.tracking)
    tag = mc.get_run(second.candidates[REF].run_id).data.tags["gate.decision"]
    # the FP32 reason always holds; whether the timing also calls it slower depends on the machine's noise
    assert tag.startswith("pending: ") and "no INT8 candidate passed" in tag, tag
    assert mc.get_run(second.parent_run_id).data.tags["gate.decision"].startswith("pending: ")
    text = mc.download_artifacts(second.parent_run_id, "promotion/decision.txt", str(tmp_path))
    assert "decision: PENDING" in Path(text).read_text()
    chart = log_tradeoff(store.tracking, store.promote, REF, second.parent_run_id)
    assert chart.pending and chart.winner == REF and chart.champion == v1 and chart.champion_p50_ms is not None
    info = status(store.tracking, store.promote)
    assert info["pending"]["version"] == v2 and info["pending"]["approve"] == f"alpr-ops promote --approve {v2}"
    assert info["rebuild"]["decision"].startswith("pending: ") and info["champion"]["version"] == v1

    # a person looked: only the pending version can be approved, and approving it deploys it as a promotion would
    with pytest.raises(NotPending, match=f"version {v1} is not the pending decision"):
        approve(v1, store.promote, store.tracking, store.paths.holdout, store.validate_)
    done = approve(v2, store.promote, store.tracking, store.paths.holdout, store.validate_)
    assert done.version == v2 and deployed_version(store) == v2
    assert (alias(store, CHAMPION), alias(store, PREVIOUS)) == (v2, v1)
    assert pending_for(store.tracking, store.promote.gate_dir) is None
    assert "pending" not in status(store.tracking, store.promote)
    assert "approved by a person" in mc.get_run(second.parent_run_id).data.tags["gate.decision"]

    # an equally fast challenger (another build of the champion's model) passing every gate: promoted unattended
    third_metrics = {REF: validated[REF]}
    third = log(store, [another_build(by_name[REF], builds)], third_metrics)
    promoted = run_promote(store, third, third_metrics)
    v3 = third.candidates[REF].version
    assert promoted.version == v3 and promoted.pending is None and deployed_version(store) == v3
    checks = {c.gate: c for c in promoted.decision.review.checks}
    assert checks["champion_latency"].passed and checks["champion_map_drop"].passed, promoted.decision.explain()
