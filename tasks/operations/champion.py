"""The gate's deployed champion scored on this run's holdout, so a challenger is compared with it like for like."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from tasks.operations.policy import ChampionScore
from tasks.operations.provenance import fetch_verified
from tasks.operations.smoke import holdout_map, is_gate_engine
from tasks.support.config import TrackingConfig, ValidateConfig
from tasks.support.faults import checkpoint
from tasks.support.registry import Aliases, version_by_alias

log = logging.getLogger(__name__)


def evaluate_champion(
    mc: Any, tracking: TrackingConfig, holdout_dir: Path, vcfg: ValidateConfig, names: Aliases
) -> ChampionScore | None:
    """Download the gate's champion version from the registry, verify it, and measure its mAP50-95 on this
    holdout (None: no champion yet)."""
    mv = version_by_alias(mc, tracking.registered_model, names.champion)
    if mv is None:
        return None
    with tempfile.TemporaryDirectory(prefix="alpr-champion-") as tmp:
        cand = fetch_verified(mc, tracking, mv.source, mv.run_id, str(mv.version), Path(tmp) / "champion")
        checkpoint("after_champion_download")
        if is_gate_engine(cand):  # the host cannot run it; the gate's detections were scored on the holdout then
            recorded_map = mc.get_run(mv.run_id).data.metrics.get("map50_95")
            if recorded_map is None:
                raise RuntimeError(
                    f"champion version {mv.version} ({cand.name}) is an engine built on the gate and its run has no "
                    "map50_95 (no labelled holdout then): challengers cannot be compared with it here"
                )
            basis = (
                f"champion {mv.version} is a gate-built engine the host cannot run: its mAP50-95 as scored from the "
                "gate's detections on the labelled holdout of its own rebuild"
            )
            log.warning("champion version %s (%s): %s", mv.version, cand.name, basis)
            return ChampionScore(str(mv.version), cand.name, float(recorded_map), basis)
        try:
            score = holdout_map(cand, holdout_dir, vcfg)
        except Exception as e:  # e.g. a TensorRT champion on a machine without its GPU
            raise RuntimeError(
                f"champion version {mv.version} ({cand.name}, {cand.backend}) cannot be evaluated on this machine, so "
                f"challengers cannot be compared with it: {e}. Promote on the machine the champion runs on."
            ) from e
    log.info("champion version %s (%s): mAP50-95 %.4f on this holdout", mv.version, cand.name, score)
    return ChampionScore(str(mv.version), cand.name, score)
