"""The promotion policy, pure: metrics in, a decision out (no store, no model, no file)."""

import pytest

from tasks.operations.policy import GEOMETRY_NOTE, ChampionScore, MetricsMissing, decide
from tasks.runtime.latency import ROUNDS_KEY
from tasks.support.config import PromoteConfig
from tasks.support.errors import Remedy


def row(
    drop: float, p50: float, agreement: float = 0.95, p95: float | None = None, speedup: float = 1.0, quant: float = 0.0
) -> dict:
    return {
        "map50_95": 0.7 - drop,
        "map_drop": drop,
        "quant_map_drop": quant,
        "agreement_map50_95": agreement,
        "latency_p50_ms": p50,
        "latency_p95_ms": p95 if p95 is not None else p50 * 1.2,
        "speedup": speedup,
    }


LOOSE = PromoteConfig(max_map_drop=0.01, min_agreement=0.8, max_p95_ms=100, min_speedup=0.5)


def test_fastest_passing_candidate_wins() -> None:
    metrics = {
        "fp32": row(0.0, 30.0),
        "ov-int8": row(0.056, 17.0),
        "ort-int8": row(-0.006, 46.0),
        "ours": row(0.006, 18),
    }
    decision = decide(metrics, LOOSE)
    assert decision.winner == "ours"
    assert not decision.verdicts["ov-int8"].passed
    assert "map_drop 0.056 > 0.01" in decision.verdicts["ov-int8"].reasons
    assert decision.verdicts["fp32"].passed and decision.verdicts["ort-int8"].passed


@pytest.mark.parametrize(
    ("candidate", "gate"),
    [
        (row(0.0, 10, agreement=0.7), "agreement 0.7 < 0.8"),
        (row(0.0, 10, p95=150), "p95_ms 150 > 100"),
        (row(0.0, 10, speedup=0.4), "speedup 0.4 < 0.5"),
    ],
)
def test_each_gate_can_fail_alone(candidate: dict, gate: str) -> None:
    decision = decide({"fast": candidate, "slow": row(0.0, 50)}, LOOSE)
    assert decision.winner == "slow"
    assert gate in decision.verdicts["fast"].reasons
    assert sum(not c.passed for c in decision.verdicts["fast"].checks) == 1


def test_challenger_must_not_be_worse_than_the_champion() -> None:
    champion = ChampionScore(version="3", candidate="fp32", map50_95=0.70)
    cfg = LOOSE.model_copy(update={"champion_tolerance": 0.005})
    metrics = {"worse": row(0.008, 10), "close": row(0.004, 20)}  # map50_95 0.692 and 0.696
    decision = decide(metrics, cfg, champion)
    assert decision.winner == "close"
    assert "vs_champion 0.692 < 0.695" in decision.verdicts["worse"].reasons
    assert decide(metrics, cfg).winner == "worse", "without a champion the gate does not apply"
    # a gate-built champion (the host cannot run it): its recorded score, and the verdict says where it came from
    gate_built = ChampionScore("4", "trt-qdq", 0.70, basis="champion 4 is a gate-built engine the host cannot run")
    assert "(champion 4 is a gate-built engine" in decide(metrics, cfg, gate_built).verdicts["worse"].reasons[-1]


def test_a_latency_tie_goes_to_the_most_faithful_candidate() -> None:
    # the demo's case: a lossy export 4 ms faster than ours (1.10x) loses when the gates allow both only if it ties
    metrics = {"peer": row(0.0, 40.0, agreement=0.889), "ours": row(0.0, 41.0, agreement=0.981)}
    decision = decide(metrics, LOOSE)
    assert decision.winner == "ours", decision.explain()
    assert "tied within measurement noise" in decision.policy and "most faithful to FP32 wins: ours" in decision.policy
    assert "choice: fastest passing: peer" in decision.explain()
    # outside the tie band the faster one wins, however faithful the slower one is
    metrics["ours"] = row(0.0, 44.0, agreement=0.981)
    decision = decide(metrics, LOOSE)
    assert decision.winner == "peer" and "no other passing candidate within its latency" in decision.policy
    # ... unless the interleaved re-timing of the pair measured more noise than that
    metrics["peer"][ROUNDS_KEY] = "40 40 40 40"
    metrics["ours"][ROUNDS_KEY] = "40 48 40 48"  # 1.10x on average, but anywhere from 1.0x to 1.2x
    assert decide(metrics, LOOSE).winner == "ours"
    metrics["ours"][ROUNDS_KEY] = "43.6 44.4 43.6 44.4"  # 1.10x, steadily
    assert decide(metrics, LOOSE).winner == "peer"


def test_the_noise_is_the_pairs_own_not_the_group_fastests() -> None:
    # the group's fastest (a failing peer) jitters; the two passing candidates are 6% apart in every round
    metrics = {
        "peer": row(0.0, 10.0, agreement=0.5),
        "fast": row(0.0, 11.0, agreement=0.96),
        "slow": row(0.0, 11.7, agreement=0.99),
    }
    metrics["peer"][ROUNDS_KEY] = "10 13 9 14 10 13"
    metrics["fast"][ROUNDS_KEY] = "11 11 11 11 11 11"
    metrics["slow"][ROUNDS_KEY] = "11.66 11.66 11.66 11.66 11.66 11.66"
    decision = decide(metrics, LOOSE)
    assert decision.winner == "fast", decision.explain()


def test_the_interleaved_p50_decides_which_is_fastest() -> None:
    # timed apart, "b" looked 20% faster; timed together, interleaved, it is the slower one
    metrics = {"a": row(0.0, 12.0, agreement=0.96), "b": row(0.0, 10.0, agreement=0.97)}
    metrics["a"].update({"latency_interleaved_p50_ms": 10.0, ROUNDS_KEY: "10 10 10"})
    metrics["b"].update({"latency_interleaved_p50_ms": 11.0, ROUNDS_KEY: "11 11 11"})
    decision = decide(metrics, LOOSE)
    assert decision.winner == "a" and "fastest passing: a" in decision.policy


def test_an_fp32_winner_is_said_so() -> None:
    metrics = {"fp32": {**row(0.0, 30.0, agreement=0.995), "precision": "fp32"}}
    metrics["int8"] = {**row(0.0, 15.0, agreement=0.9), "precision": "int8"}
    decision = decide(metrics, LOOSE.model_copy(update={"min_agreement": 0.95}))
    assert decision.winner == "fp32" and "no INT8 candidate passed" in decision.policy


def test_the_same_numbers_always_give_the_same_winner() -> None:
    metrics = {n: row(0.0, 20.0, agreement=0.96) for n in ("c", "a", "b")}
    assert {decide(dict(reversed(metrics.items())), LOOSE).winner, decide(metrics, LOOSE).winner} == {"c"}


def test_interleaved_stats_ratios_and_noise() -> None:
    from tasks.runtime.latency import interleaved_stats, pair_ratio

    stats = interleaved_stats({"a": [10.0, 10.2, 9.8, 10.0], "b": [11.0, 11.0, 11.0, 11.2]})
    assert stats["a"]["latency_vs_fastest"] == 1.0 and stats["a"]["latency_vs_fastest_noise"] == 0.0
    assert stats["a"][ROUNDS_KEY] == "10 10.2 9.8 10" and stats["b"]["latency_interleaved_p50_ms"] == 11.0
    assert 1.09 < stats["b"]["latency_vs_fastest"] < 1.12 and 0 < stats["b"]["latency_vs_fastest_noise"] < 0.05
    # a 95% interval from Student's t: wider with fewer rounds for the same spread
    assert pair_ratio([11, 12], [10, 10])[1] > pair_ratio([11, 12] * 3, [10, 10] * 3)[1]
    assert pair_ratio([11.0], [10.0]) == (1.1, 0.0)


def test_no_winner_when_nothing_passes() -> None:
    decision = decide({"a": row(0.2, 5.0), "b": row(0.02, 6.0)}, LOOSE)
    assert decision.winner is None
    assert "a: FAIL" in decision.explain() and "b: FAIL" in decision.explain()


def test_missing_metric_fails_with_the_name() -> None:
    bad = row(0.0, 5.0)
    del bad["agreement_map50_95"]
    with pytest.raises(MetricsMissing, match="candidate 'a' has no 'agreement_map50_95'") as e:
        decide({"a": bad}, LOOSE)
    assert e.value.remedy is Remedy.VALIDATE


def test_a_gate_built_engine_fails_closed_until_measured_then_is_judged_on_its_numbers() -> None:
    """tensorrt_on: gate: `gate: pending` or `failed: why` is a failed verdict naming it; a measured gate engine is
    judged on its numbers like any other candidate (deploy then verifies the engine the gate measured)."""
    metrics = {
        "fp32": row(0.0, 30.0),
        "trt-pending": {"backend": "tensorrt", "precision": "int8", "gate": "pending"},
        "trt-failed": {"gate": "failed: gate build Failed: TensorRTUnavailable: no module named 'tensorrt'"},
        "trt-measured": {**row(0.0, 2.0, speedup=15.0), "gate": "measured"},
    }
    decision = decide(metrics, LOOSE)
    assert decision.winner == "trt-measured"
    assert [str(c) for c in decision.verdicts["trt-failed"].checks] == [
        f"gate_build 0 < 1 ({metrics['trt-failed']['gate']})"
    ]
    assert "(pending)" in decision.verdicts["trt-pending"].reasons[0]
    measured = decision.verdicts["trt-measured"]
    assert measured.passed and [c.gate for c in measured.checks] == [
        "map_drop", "quant_map_drop", "agreement", "p95_ms", "speedup",
    ]  # fmt: skip


# --- the winner against the deployed champion: an unattended rebuild never makes the gate slower -------------------


def scenario() -> tuple[dict, ChampionScore]:
    """The issue's night: our INT8 build fails agreement after a new video, only the FP32 OpenVINO model passes, and
    the INT8 champion (p50 15.6 ms) is still there and still valid."""
    metrics = {
        "fp32": {**row(0.0, 60.0, agreement=1.0), "precision": "fp32"},
        "fp32-ov": {**row(0.0, 33.7, agreement=0.999, speedup=1.0), "precision": "fp32"},
        "ours": {**row(0.012, 15.9, agreement=0.93, speedup=2.1), "precision": "int8"},
    }
    return metrics, ChampionScore("3", "ours", 0.699, precision="int8")


def test_an_unattended_rebuild_keeps_a_faster_int8_champion_and_leaves_a_pending_decision() -> None:
    from tasks.operations.policy import Timing, decision_tag, review, verdict_tags

    metrics, champion = scenario()
    cfg = LOOSE.model_copy(update={"min_agreement": 0.95, "max_slowdown": 1.10})
    decision = decide(metrics, cfg, champion)
    assert decision.winner == "fp32-ov" and not decision.verdicts["ours"].passed
    slower = Timing(2.16, 0.04, 15.6, 33.7)
    out = review(decision, metrics, cfg, "fp32", champion, slower, attended=False)
    rv = out.review
    assert rv is not None and rv.pending and not rv.deploy and rv.champion_version == "3"
    assert any("2.16x the champion's p50" in r for r in rv.reasons), rv.reasons
    assert any("no INT8 candidate passed" in r and "FP32 model" in r for r in rv.reasons), rv.reasons
    assert "champion_latency 2.16 > 1.14" in "; ".join(str(c) for c in rv.checks)
    assert "decision: PENDING, the champion stays deployed" in out.explain()
    tags = verdict_tags(out)["fp32-ov"]
    assert tags["gate.decision"].startswith("pending: ") and tags["gate.champion_latency"].startswith("fail: ")
    assert tags["gate.passed"] == "true", "the winner passed every gate: only the decision waits for a person"
    assert "gate.decision" not in verdict_tags(out)["ours"]
    # a person ran it and said yes (`--yes`): deployed, and the reasons are still said
    attended = review(decision, metrics, cfg, "fp32", champion, slower, attended=True)
    assert attended.review.deploy and not attended.review.pending
    assert decision_tag(attended).startswith("deploy (attended): ")
    # the FP32 rule alone, at equal speed: still a person's call
    even = review(decision, metrics, cfg, "fp32", champion, Timing(1.0, 0.01, 15.6, 15.6), attended=False)
    assert even.review.pending and len(even.review.reasons) == 1 and "no INT8" in even.review.reasons[0]


@pytest.mark.parametrize(
    ("timing", "deploy"),
    [
        ((0.8, 0.02), True),  # faster
        ((1.0, 0.0), True),  # as fast
        ((1.10, 0.0), True),  # exactly the allowed slowdown
        ((1.15, 0.08), True),  # slower than the setting, but within the noise of that timing
        ((1.15, 0.01), False),  # slower, steadily
    ],
)
def test_a_passing_int8_challenger_is_promoted_unless_it_is_slower_beyond_the_setting_and_the_noise(
    timing: tuple[float, float], deploy: bool
) -> None:
    from tasks.operations.policy import Timing, review

    metrics = {"a": {**row(0.0, 10.0), "precision": "int8"}}
    champion = ChampionScore("1", "a", 0.7, precision="int8")
    decision = decide(metrics, LOOSE, champion)
    ratio, noise = timing
    out = review(decision, metrics, LOOSE, "fp32", champion, Timing(ratio, noise, 10.0, 10.0 * ratio), False).review
    assert out.deploy is deploy and out.pending is not deploy, out.explain()
    assert [c.gate for c in out.checks] == ["champion_latency"]


def test_a_pair_not_timed_together_fails_closed_and_no_champion_deploys_as_before() -> None:
    from tasks.operations.policy import review

    metrics = {"a": {**row(0.0, 10.0), "precision": "fp32"}}
    champion = ChampionScore("1", "trt", 0.7, precision="fp32")
    decision = decide(metrics, LOOSE, champion)
    out = review(
        decision, metrics, LOOSE, "fp32", champion, None, False, "one of the two is an engine only the gate runs"
    )
    assert out.review.pending and "could not be timed together (one of the two" in out.review.reasons[0]
    # a first promotion: nothing to keep, so the winner (an FP32 one too) is deployed unattended
    first = review(decide(metrics, LOOSE), metrics, LOOSE, "fp32", None, None, False)
    assert first.review.deploy and not first.review.reasons and "against champion" not in first.explain()


def test_a_champion_that_fails_a_gate_on_this_holdout_is_the_reviewers_call_never_a_silent_swap_or_keep() -> None:
    from tasks.operations.policy import Timing, decision_tag, review

    metrics = {"fp32": {**row(0.0, 30.0), "precision": "fp32"}, "a": {**row(0.0, 10.0), "precision": "int8"}}
    champion = ChampionScore("1", "old", 0.67, precision="int8")  # 0.03 below this rebuild's FP32 on its holdout
    cfg = LOOSE.model_copy(update={"champion_tolerance": 0.05})
    decision = decide(metrics, cfg, champion)
    assert decision.winner == "a"
    out = review(decision, metrics, cfg, "fp32", champion, Timing(0.9, 0.01, 10.0, 9.0), False)
    assert out.review.pending, "a faster winner, but replacing a champion that fails a gate is a person's call"
    assert "champion_map_drop 0.03 > 0.01" in out.explain() and "itself now fails a gate" in out.explain()
    # nothing passes: the champion stays, and the verdict says it fails now (not a silent keep)
    failing = {k: {**v, "agreement_map50_95": 0.1} for k, v in metrics.items()}
    nothing = review(decide(failing, cfg, champion), failing, cfg, "fp32", champion, None, False)
    assert nothing.winner is None and not nothing.review.pending
    assert "itself now fails a gate" in decision_tag(nothing) and "nothing to deploy" in nothing.explain()
    # a champion that passes on this holdout: the re-check is shown, and a faster winner is deployed
    good = ChampionScore("1", "old", 0.70, precision="int8")
    ok = review(decide(metrics, cfg, good), metrics, cfg, "fp32", good, Timing(0.9, 0.01, 10.0, 9.0), False)
    assert ok.review.deploy and "champion_map_drop 0 <= 0.01" in ok.explain()


def test_max_slowdown_null_turns_off_only_the_latency_comparison() -> None:
    from tasks.operations.policy import review

    metrics, champion = scenario()
    cfg = LOOSE.model_copy(update={"min_agreement": 0.95, "max_slowdown": None})
    decision = decide(metrics, cfg, champion)
    out = review(decision, metrics, cfg, "fp32", champion, None, attended=False).review
    assert "champion_latency" not in [c.gate for c in out.checks] and not any("timed" in r for r in out.reasons)
    assert out.pending and "no INT8 candidate passed" in out.reasons[0], "the FP32 rule still applies"
    same = {"a": {**row(0.0, 10.0), "precision": "int8"}}
    int8 = ChampionScore("1", "a", 0.7, precision="int8")
    assert review(decide(same, cfg, int8), same, cfg, "fp32", int8, None, False).review.deploy


# --- two costs, measured apart: quantization against FP32 at the candidate's own geometry (issue 26) --------------


def test_quantization_drop_is_gated_on_its_own_and_a_geometry_reference_is_no_candidate() -> None:
    cfg = LOOSE.model_copy(update={"max_quant_drop": 0.005})
    metrics = {
        # the user sees 0.8 pt (geometry and quantization together: within max_map_drop), quantization cost 0.7 pt
        "lossy": row(0.008, 10.0, quant=0.007),
        "faithful": row(0.009, 11.0, quant=0.002),
        # FP32 at the INT8 candidates' geometry: no latency, never judged, never the winner
        "fp32@192x320": {"map50_95": 0.69, "map_drop": 0.01, "geometry_map_drop": 0.01, "role": "geometry reference"},
    }
    decision = decide(metrics, cfg)
    assert decision.winner == "faithful", decision.explain()
    assert "quant_map_drop 0.007 > 0.005" in decision.verdicts["lossy"].reasons
    assert sum(not c.passed for c in decision.verdicts["lossy"].checks) == 1
    geometry = decision.verdicts["fp32@192x320"]
    assert not geometry.passed and geometry.reasons == (f"candidate 0 < 1 ({GEOMETRY_NOTE})",)
    missing = row(0.0, 5.0)
    del missing["quant_map_drop"]
    with pytest.raises(MetricsMissing, match="candidate 'a' has no 'quant_map_drop'"):
        decide({"a": missing}, cfg)  # fail closed: validated by code that did not measure it
    # an FP32 model quantized nothing: its only drop gate is map_drop, as before
    fp32 = {**row(0.008, 9.0, quant=0.008), "precision": "fp32"}
    assert decide({"fp32-ov": fp32}, cfg).verdicts["fp32-ov"].passed


def test_an_interval_wider_than_the_gate_says_so_and_how_many_plates_would_resolve_it() -> None:
    from tasks.operations.policy import plates_to_resolve

    cfg = LOOSE.model_copy(update={"max_map_drop": 0.01, "max_quant_drop": 0.005})
    # the case: a 1.7-pt drop on 25 plates, where one plate is 4 pt of recall
    unsure = {**row(0.017, 10.0), "map_drop_ci": [-0.01, 0.045], "quant_map_drop_ci": [-0.002, 0.003]}
    unsure["holdout_plates"] = 25.0
    sure = {**row(0.002, 12.0), "map_drop_ci": [0.0, 0.004], "holdout_plates": 25.0}
    decision = decide({"unsure": unsure, "sure": sure}, cfg)
    assert decision.winner == "sure", "the gate stays on the point estimate"
    (check,) = [c for c in decision.verdicts["unsure"].checks if c.gate == "map_drop"]
    assert not check.passed and "interval [-0.0100, +0.0450] straddles the gate 0.01" in str(check)
    # the side toward the gate: 0.017 - (-0.01) = 0.027 wide, 0.007 needed: 25 * (27/7)^2 - 25 = 346.9
    assert "about 347 more labelled plates would resolve it (now 25)" in str(check)
    assert plates_to_resolve(0.017, (-0.01, 0.045), 0.01, 25.0) == 347
    (quant,) = [c for c in decision.verdicts["unsure"].checks if c.gate == "quant_map_drop"]
    assert quant.passed and "straddles" not in str(quant) and "interval [-0.0020, +0.0030]" in str(quant)
    (ok,) = [c for c in decision.verdicts["sure"].checks if c.gate == "map_drop"]
    assert ok.passed and "straddles" not in str(ok)
    # read back from MLflow the interval is two metrics
    logged = {**row(0.004, 10.0), "map_drop_ci_low": -0.003, "map_drop_ci_high": 0.02, "holdout_plates": 100.0}
    (back,) = [c for c in decide({"x": logged}, cfg).verdicts["x"].checks if c.gate == "map_drop"]
    assert back.passed and "straddles the gate 0.01" in str(back) and "(now 100)" in str(back)
    assert plates_to_resolve(0.01, (0.0, 0.02), 0.01, 50.0) is None  # on the gate: no number of plates tells
