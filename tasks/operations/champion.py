"""The gate's deployed champion, downloaded and verified, then scored on this run's holdout and timed together with
the winner, so a challenger is compared with it like for like."""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.operations.policy import ChampionScore, Timing
from tasks.operations.provenance import fetch_verified
from tasks.operations.smoke import holdout_map, is_gate_engine
from tasks.support.candidate import Candidate
from tasks.support.config import TrackingConfig, ValidateConfig
from tasks.support.faults import checkpoint
from tasks.support.registry import Aliases, version_by_alias

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeployedChampion:
    """The champion version and its artifact, verified against the store's record, in the caller's scratch folder."""

    version: str
    run_id: str
    candidate: Candidate
    recorded_metrics: dict[str, float]  # its run's metrics (validated on its own rebuild's holdout, or on the gate)


def fetch_champion(mc: Any, tracking: TrackingConfig, names: Aliases, dst: Path) -> DeployedChampion | None:
    """Download the gate's champion version from the registry into `dst` and verify it (None: no champion yet)."""
    mv = version_by_alias(mc, tracking.registered_model, names.champion)
    if mv is None:
        return None
    cand = fetch_verified(mc, tracking, mv.source, mv.run_id, str(mv.version), dst)
    checkpoint("after_champion_download")
    metrics = dict(mc.get_run(mv.run_id).data.metrics)
    return DeployedChampion(str(mv.version), mv.run_id, cand, metrics)


def score_champion(champ: DeployedChampion, holdout_dir: Path, vcfg: ValidateConfig) -> ChampionScore:
    """The champion's mAP50-95 on this holdout (a gate-built engine, which the host cannot run: the score its own
    rebuild recorded from the gate's detections, and the verdict says so)."""
    cand, version = champ.candidate, champ.version
    if is_gate_engine(cand):  # the host cannot run it; the gate's detections were scored on the holdout then
        recorded_map = champ.recorded_metrics.get("map50_95")
        if recorded_map is None:
            raise RuntimeError(
                f"champion version {version} ({cand.name}) is an engine built on the gate and its run has no "
                "map50_95 (no labelled holdout then): challengers cannot be compared with it here"
            )
        basis = (
            f"champion {version} is a gate-built engine the host cannot run: its mAP50-95 as scored from the "
            "gate's detections on the labelled holdout of its own rebuild"
        )
        log.warning("champion version %s (%s): %s", version, cand.name, basis)
        return ChampionScore(version, cand.name, float(recorded_map), basis, cand.precision)
    try:
        score = holdout_map(cand, holdout_dir, vcfg)
    except Exception as e:  # e.g. a TensorRT champion on a machine without its GPU
        raise RuntimeError(
            f"champion version {version} ({cand.name}, {cand.backend}) cannot be evaluated on this machine, so "
            f"challengers cannot be compared with it: {e}. Promote on the machine the champion runs on."
        ) from e
    log.info("champion version %s (%s): mAP50-95 %.4f on this holdout", version, cand.name, score)
    return ChampionScore(version, cand.name, score, "", cand.precision)


def time_with_winner(
    champ: DeployedChampion, winner: Candidate, winner_row: dict[str, Any], frame: Path | None, vcfg: ValidateConfig
) -> tuple[Timing | None, str]:
    """The winner's p50 over the champion's, like for like: both timed together in one fresh process, interleaved
    (A B B A, `validate.retime_rounds` rounds, at least 4 so that the noise is estimated, of `retime_runs` runs:
    `tasks/runtime/latency.py`).

    Two engines the gate built and timed (the host runs neither): their gate-measured p50s, each from its own
    rebuild, with no noise estimate, and the basis says so. Any other pair that cannot be timed together here
    (one engine only the gate runs, a runtime this machine lacks, no frame): (None, why), and the policy fails
    closed on it."""
    from tasks.runtime.latency import InterleavedRequest, LatencyError, measure_interleaved_in_subprocess, pair_ratio

    gate_built = (is_gate_engine(champ.candidate), is_gate_engine(winner))
    if all(gate_built):
        c, w = champ.recorded_metrics.get("latency_p50_ms"), winner_row.get("latency_p50_ms")
        if not c or not w:
            return None, "two gate-built engines, and one has no p50 measured on the gate"
        basis = "not timed together: both are engines the gate built, each timed on the gate in its own rebuild"
        return Timing(round(float(w) / float(c), 4), 0.0, float(c), float(w), basis), ""
    if any(gate_built):
        return None, "one of the two is an engine only the gate runs, the other runs on this host"
    if frame is None:
        return None, "no frame to time them on (no holdout image, no agreement frame)"
    req = InterleavedRequest(
        (str(champ.candidate.path), str(winner.path)), str(frame), vcfg.imgsz, vcfg.agreement_conf, vcfg.iou,
        vcfg.warmup, vcfg.threads, max(4, vcfg.retime_rounds), vcfg.retime_runs,
    )  # fmt: skip
    try:
        rounds = measure_interleaved_in_subprocess(req)
    except LatencyError as e:
        return None, f"timing failed: {str(e)[:600]}"
    c_rounds, w_rounds = rounds[str(champ.candidate.path)], rounds[str(winner.path)]
    ratio, noise = pair_ratio(w_rounds, c_rounds)
    timing = Timing(
        round(ratio, 4),
        round(noise, 4),
        round(statistics.median(c_rounds), 3),
        round(statistics.median(w_rounds), 3),
        f"timed together, interleaved, {len(c_rounds)} rounds of {vcfg.retime_runs} runs",
    )
    log.info("winner %s vs champion %s: %s", winner.name, champ.version, timing)
    return timing, ""
