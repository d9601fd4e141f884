"""The promotion policy: every candidate through the gates, then the winner among those that pass, then whether
that winner may replace the deployed champion without a person (`review`).

Pure and I/O-free: numbers in (validation's metrics, the champion's score and its timing against the winner,
`promote:` params), a decision out, so the same numbers always give the same outcome and the policy is tested
without a store, a model or a gate folder. docs/promotion.md states the policy for reviewers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from tasks.pipeline.validate import GATE_KEY, GATE_MEASURED, GEOMETRY_ROLE, NO_HOLDOUT, ROLE_KEY, interval
from tasks.support.config import PromoteConfig
from tasks.support.errors import AlprError, Remedy
from tasks.support.tracking import gate_outcome, gate_tag


@dataclass(frozen=True)
class GateCheck:
    """One gate applied to one candidate: the measured value, the threshold and the comparison."""

    gate: str
    passed: bool
    value: float
    threshold: float
    op: str  # "<=" or ">="
    note: str = ""  # why, when the numbers alone do not say (a gate-built engine's failure)

    def __str__(self) -> str:
        shown = self.op if self.passed else {"<=": ">", ">=": "<"}[self.op]
        return f"{self.gate} {self.value:.4g} {shown} {self.threshold:.4g}" + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True)
class Verdict:
    name: str
    passed: bool
    checks: tuple[GateCheck, ...]
    latency_p50_ms: float

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(str(c) for c in self.checks)


@dataclass(frozen=True)
class ChampionScore:
    """The deployed champion re-evaluated on this run's holdout, so challenger and champion compare like for like."""

    version: str
    candidate: str
    map50_95: float
    basis: str = ""  # how `map50_95` was obtained when not re-evaluated on this holdout (a gate-built engine's)
    precision: str = ""  # the champion's (int8, fp32): an FP32 winner replacing an INT8 champion needs a person


@dataclass(frozen=True)
class Timing:
    """The winner's p50 over the champion's, measured like for like: both timed together, interleaved, in one fresh
    process (`ratio` the mean of the per-round ratios, `noise` its 95% half-width: `tasks/runtime/latency.py`)."""

    ratio: float
    noise: float
    champion_p50_ms: float
    winner_p50_ms: float
    basis: str = "timed together, interleaved"


@dataclass(frozen=True)
class Review:
    """Whether the winner replaces the champion now (`deploy`), and if not, why a person must decide (`reasons`).

    `checks` are the comparisons with the champion (the winner's latency against it, the champion's own gates on
    this holdout); `attended` says whether a person ran this promotion (`--yes`): then the reasons are shown, not
    waited on."""

    deploy: bool
    reasons: tuple[str, ...] = ()
    checks: tuple[GateCheck, ...] = ()
    champion_version: str = ""
    attended: bool = False
    timing: Timing | None = None
    winner: str | None = None

    @property
    def pending(self) -> bool:
        """A winner is kept out of the gate until a person approves it (`alpr-ops promote --approve VERSION`)."""
        return self.winner is not None and not self.deploy

    def explain(self) -> str:
        checks = "; ".join(str(c) for c in self.checks)
        head = f"against champion {self.champion_version}: " + (checks or "nothing to compare")
        if not self.reasons:
            return head
        why = "; ".join(self.reasons)
        if self.winner is None:
            return f"{head}\ndecision: nothing to deploy; the champion stays, for a person to look at: {why}"
        if self.deploy:
            return f"{head}\ndecision: deployed by a person's choice (attended run) although {why}"
        return f"{head}\ndecision: PENDING, the champion stays deployed until a person decides: {why}"


@dataclass(frozen=True)
class Decision:
    """The winner (None when nothing passed), why each candidate passed or failed, and how the winner was chosen
    among those that passed (`policy`)."""

    winner: str | None
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    champion: ChampionScore | None = None
    policy: str = ""
    review: Review | None = None  # the winner against the deployed champion (`review`); None: not reviewed yet

    def explain(self) -> str:
        lines = [f"{v.name}: {'PASS' if v.passed else 'FAIL'} ({'; '.join(v.reasons)})" for v in self.verdicts.values()]
        lines += [f"choice: {self.policy}"] if self.policy else []
        return "\n".join([*lines, *([self.review.explain()] if self.review and self.review.champion_version else [])])


class MetricsMissing(AlprError):
    """A candidate's metrics lack a number a gate needs."""


def _num(row: dict[str, Any], key: str, name: str) -> float:
    if key not in row or row[key] in (None, ""):
        raise MetricsMissing(
            f"candidate '{name}' has no '{key}' metric (validated by older code)", remedy=Remedy.VALIDATE
        )
    return float(row[key])


GEOMETRY_NOTE = "FP32 at the INT8 candidates' geometry: what they are compared with, never deployed"


def drop_check(gate: str, row: dict[str, Any], name: str, threshold: float) -> GateCheck:
    """A labelled mAP drop (`map_drop`, `quant_map_drop`) against its gate, decided on the point estimate. When the
    row has the drop's bootstrap interval (`<gate>_ci`), the note shows it, and when the interval straddles the
    threshold, says the holdout cannot tell and how many more labelled plates would (`plates_to_resolve`)."""
    value = _num(row, gate, name)
    ci = interval(row, f"{gate}_ci")
    note = ""
    if ci is not None:
        low, high = ci
        note = f"interval [{low:+.4f}, {high:+.4f}]"
        if low <= threshold < high or low < threshold <= high:
            plates = row.get("holdout_plates")
            more = plates_to_resolve(value, ci, threshold, float(plates)) if isinstance(plates, int | float) else None
            note += f" straddles the gate {threshold:g}: the holdout cannot tell on which side the drop lies"
            if more is not None:
                note += f"; about {more} more labelled plates would resolve it (now {float(plates):.0f})"
    return GateCheck(gate, value <= threshold, value, threshold, "<=", note)


def plates_to_resolve(value: float, ci: tuple[float, float], threshold: float, plates: float) -> int | None:
    """How many more labelled plates would narrow the interval `ci` of a drop estimated at `value` until it no longer
    reaches `threshold`: an interval's half-width shrinks about as 1/sqrt(plates), so the side that reaches the
    threshold must shrink from its width now to the distance from `value` to it: plates * (width/needed)^2 - plates.
    None when the estimate sits on the threshold (no number of plates is enough) or nothing was labelled."""
    low, high = ci
    width = (high - value) if threshold >= value else (value - low)
    needed = abs(threshold - value)
    if plates <= 0 or needed <= 0 or width <= 0:
        return None
    return max(1, math.ceil(plates * (width / needed) ** 2 - plates))


def decide(metrics: dict[str, dict[str, Any]], cfg: PromoteConfig, champion: ChampionScore | None = None) -> Decision:
    """Every candidate through the gates (mAP drop against the square FP32, quantization's mAP drop and agreement
    against FP32 at the candidate's own geometry, p95 latency, speed-up, and, when a champion is deployed, mAP50-95
    no worse than the champion's on the same holdout), then the winner among those that pass: the most faithful to
    FP32 within the latency of the fastest (`choose`). A geometry reference (FP32 at an INT8 candidate's geometry,
    derived by the build) is a yardstick, never a candidate: its verdict is a failed `candidate` check saying so."""
    verdicts = {}
    for name, row in metrics.items():
        if row.get(ROLE_KEY) == GEOMETRY_ROLE:
            check = GateCheck("candidate", False, 0.0, 1.0, ">=", GEOMETRY_NOTE)
            verdicts[name] = Verdict(name, False, (check,), float("nan"))
            continue
        if GATE_KEY in row and row[GATE_KEY] != GATE_MEASURED:  # pending, or failed on the gate: no numbers to judge
            check = GateCheck("gate_build", False, 0.0, 1.0, ">=", str(row[GATE_KEY]))
            verdicts[name] = Verdict(name, False, (check,), float(row.get("latency_p50_ms", "nan")))
            continue
        unlabelled = row.get("holdout") == NO_HOLDOUT  # validated on agreement alone: the mAP gates do not apply
        fp32 = str(row.get("precision", "")) == "fp32"  # nothing quantized: no quantization drop to gate
        if unlabelled:  # passes only where the operator allows it (promote.allow_unlabelled)
            first = GateCheck("labelled_holdout", cfg.allow_unlabelled, 0.0, 0.0 if cfg.allow_unlabelled else 1.0, ">=")
        else:
            first = drop_check("map_drop", row, name, cfg.max_map_drop)
        checks = [
            first,
            *([] if unlabelled or fp32 else [drop_check("quant_map_drop", row, name, cfg.max_quant_drop)]),
            GateCheck(
                "agreement",
                (v := _num(row, "agreement_map50_95", name)) >= cfg.min_agreement,
                v,
                cfg.min_agreement,
                ">=",
            ),
            GateCheck("p95_ms", (v := _num(row, "latency_p95_ms", name)) <= cfg.max_p95_ms, v, cfg.max_p95_ms, "<="),
            GateCheck("speedup", (v := _num(row, "speedup", name)) >= cfg.min_speedup, v, cfg.min_speedup, ">="),
        ]
        if champion is not None and not unlabelled:
            floor = round(champion.map50_95 - cfg.champion_tolerance, 6)
            v = _num(row, "map50_95", name)
            checks.append(GateCheck("vs_champion", v >= floor, v, floor, ">=", champion.basis))
        p50 = _num(row, "latency_p50_ms", name)
        verdicts[name] = Verdict(name, all(c.passed for c in checks), tuple(checks), p50)
    winner, policy = choose([v for v in verdicts.values() if v.passed], metrics, cfg)
    return Decision(winner, verdicts, champion, policy)


def _speed(row: dict[str, Any]) -> float:
    """A candidate's p50 for the choice: the interleaved re-timing's where validation re-timed it (close
    candidates, timed A B B A in one process), else its own run's."""
    return float(row.get("latency_interleaved_p50_ms") or row["latency_p50_ms"])


def _slower_by(row: dict[str, Any], fastest: dict[str, Any]) -> tuple[float, float]:
    """(p50 ratio of `row` to `fastest`, its measurement noise). Both re-timed together: the mean of their per-round
    ratios and its 95% interval (`pair_ratio`); otherwise the plain p50 ratio with no noise estimate (candidates
    that were not re-timed together were more than `validate.retime_within` apart when timed)."""
    from tasks.runtime.latency import pair_ratio, rounds_of

    x, f = rounds_of(row), rounds_of(fastest)
    if x is not None and f is not None and len(x) == len(f):
        return pair_ratio(x, f)
    return _speed(row) / _speed(fastest), 0.0


def choose(passed: list[Verdict], metrics: dict[str, dict[str, Any]], cfg: PromoteConfig) -> tuple[str | None, str]:
    """Among the candidates that passed every gate, the most faithful to FP32 within the latency of the fastest.

    A candidate whose p50 is within `promote.latency_tie` of the fastest one's, or within the noise the interleaved
    re-timing measured for that pair (whichever is larger), ties with it; the tie goes to the highest agreement with
    FP32, then the lower p50, then the name (so the same numbers always give the same winner). Returns (winner, why).
    """
    if not passed:
        return None, "no candidate passed every gate"
    fastest = min(passed, key=lambda v: (_speed(metrics[v.name]), v.name))
    ties = []
    for v in passed:
        ratio, noise = _slower_by(metrics[v.name], metrics[fastest.name])
        band = max(cfg.latency_tie, noise)
        if ratio - 1.0 <= band:
            ties.append((v, ratio, band))
    agreement = {v.name: float(metrics[v.name]["agreement_map50_95"]) for v, _, _ in ties}
    best = max(ties, key=lambda t: (agreement[t[0].name], -_speed(metrics[t[0].name]), t[0].name))[0]
    fast = f"fastest passing: {fastest.name} (p50 {_speed(metrics[fastest.name]):.3g} ms)"
    if len(ties) == 1:
        why = f"{fast}; no other passing candidate within its latency"
    else:
        tied = ", ".join(
            f"{v.name} ({ratio:.3f}x, within {band:.1%}; agreement {agreement[v.name]:.4f})" for v, ratio, band in ties
        )
        why = f"{fast}; tied within measurement noise: {tied}; the most faithful to FP32 wins: {best.name}"
    if str(metrics[best.name].get("precision", "")) == "fp32":
        why += " (an FP32 model: no INT8 candidate passed every gate and was as fast)"
    return best.name, why


def review(
    decision: Decision,
    metrics: dict[str, dict[str, Any]],
    cfg: PromoteConfig,
    reference: str,
    champion: ChampionScore | None,
    timing: Timing | None,
    attended: bool,
    timing_note: str = "",
) -> Decision:
    """The winner against the deployed champion, and whether it replaces it without a person.

    With a champion deployed, a person decides (the winner becomes a pending decision unless `attended`) when:
    - the winner is slower than the champion: its p50 over the champion's, both timed together (`timing`), exceeds
      `promote.max_slowdown` by more than that timing's noise; a pair that could not be timed together
      (`timing` None, `timing_note` says why) counts as slower: fail closed;
    - the winner is an FP32 model and the champion is not: no INT8 candidate passed;
    - the champion itself now fails a gate on this rebuild's holdout (its mAP drop against this rebuild's FP32
      `reference`): replacing it and keeping it are both a person's call.
    No champion (a first promotion): the winner is deployed as before. `champion` is the deployed one (with no
    labelled holdout, unscored: its mAP is NaN and only latency and precision are compared). Returns `decision` with
    its `review`."""
    champ = champion
    if champ is None:
        return replace(decision, review=Review(decision.winner is not None, attended=attended, winner=decision.winner))
    checks: list[GateCheck] = []
    reasons: list[str] = []
    ref = metrics.get(reference, {})
    if ref.get("map50_95") not in (None, "") and ref.get("holdout") != NO_HOLDOUT and not math.isnan(champ.map50_95):
        drop = round(float(ref["map50_95"]) - champ.map50_95, 6)
        check = GateCheck("champion_map_drop", drop <= cfg.max_map_drop, drop, cfg.max_map_drop, "<=", champ.basis)
        checks.append(check)
        if not check.passed:
            reasons.append(
                f"the champion (version {champ.version}, {champ.candidate}) itself now fails a gate on this rebuild's "
                f"holdout: {check}"
            )
    winner = decision.winner
    if winner is not None and cfg.max_slowdown is not None:
        if timing is None:
            reasons.append(f"the winner {winner} and the champion could not be timed together ({timing_note})")
        else:
            bound = round(cfg.max_slowdown + timing.noise, 4)
            note = (
                f"{timing.basis}: {winner} {timing.winner_p50_ms:.3g} ms, champion {timing.champion_p50_ms:.3g} ms, "
                f"noise {timing.noise:.3f}"
            )
            check = GateCheck("champion_latency", timing.ratio <= bound, round(timing.ratio, 4), bound, "<=", note)
            checks.append(check)
            if not check.passed:
                reasons.append(
                    f"the winner {winner} is {timing.ratio:.2f}x the champion's p50 (promote.max_slowdown "
                    f"{cfg.max_slowdown:g} plus the timing's noise {timing.noise:.3f}): the gate would become slower"
                )
    if winner is not None:
        precision = str(metrics.get(winner, {}).get("precision", ""))
        if precision == "fp32" and champ.precision not in ("", "fp32"):
            reasons.append(
                f"no INT8 candidate passed: the winner {winner} is an FP32 model and would replace the "
                f"{champ.precision.upper()} champion {champ.candidate}"
            )
    deploy = winner is not None and (attended or not reasons)
    outcome = Review(deploy, tuple(reasons), tuple(checks), champ.version, attended, timing, winner)
    return replace(decision, review=outcome)


def decision_tag(decision: Decision) -> str:
    """The outcome in one line (tag `gate.decision`): deploy, pending and why, or nothing to deploy."""
    rv = decision.review
    if decision.winner is None:
        why = f": {'; '.join(rv.reasons)}" if rv is not None and rv.reasons else ""
        return f"none: no candidate passed every gate{why}"[:4900]
    if rv is None or not rv.reasons:
        return "deploy"
    prefix = "deploy (attended)" if rv.deploy else "pending"
    return f"{prefix}: {'; '.join(rv.reasons)}"[:4900]


def verdict_tags(decision: Decision) -> dict[str, dict[str, str]]:
    """The `gate.*` tags of each candidate's verdict, gate by gate with its numbers (what the trade-off chart and
    `status` read back)."""
    out = {}
    for name, verdict in decision.verdicts.items():
        tags = {
            gate_tag("passed"): str(verdict.passed).lower(),
            gate_tag("reasons"): "; ".join(verdict.reasons),
            gate_tag("winner"): str(decision.winner == name).lower(),
            gate_tag("policy"): decision.policy[:4900],  # MLflow tag values hold 5000 characters at most
        }
        against = decision.review.checks if decision.review is not None and decision.winner == name else ()
        for c in (*verdict.checks, *against):
            shown = gate_outcome(c.passed, c.value, c.op, c.threshold)
            tags[gate_tag(c.gate)] = (shown + (f" ({c.note})" if c.note else ""))[:4900]
        if decision.winner == name:
            tags[gate_tag("decision")] = decision_tag(decision)
            rv = decision.review
            if rv is not None and rv.champion_version:  # what the trade-off chart draws the champion from
                tags[gate_tag("champion")] = rv.champion_version
                if rv.timing is not None:
                    tags[gate_tag("champion_ratio")] = f"{rv.timing.ratio:g}"
        out[name] = tags
    return out
