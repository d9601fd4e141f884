"""Promote a rebuild: gate its candidates (`policy`), log each verdict, deploy the winner after a smoke test
(`deploy`), then move the gate's aliases.

One promotion or rollback at a time holds `.promote.lock` (an `flock`, released by the kernel when the process
dies), and the next one first clears what a killed one left behind and repairs the aliases (`aliases.reconcile`).
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.operations.aliases import open_gate, reconcile
from tasks.operations.champion import evaluate_champion
from tasks.operations.deploy import deploy, manifest_for
from tasks.operations.policy import Decision, decide, verdict_tags
from tasks.operations.provenance import fetch_verified, recorded
from tasks.operations.smoke import GATE_AT_LOAD, AgreementCheck, Gate, SmokeTestError
from tasks.pipeline.track import RebuildRecord, latest_rebuild
from tasks.pipeline.validate import NO_HOLDOUT
from tasks.runtime.releases import (
    VERIFIED_KEY,
    current_release,
    promotion_lock,
    prune_releases,
    read_manifest,
    release_is_complete,
)
from tasks.support.config import PromoteConfig, TrackingConfig, ValidateConfig
from tasks.support.errors import AlprError, Remedy
from tasks.support.faults import checkpoint
from tasks.support.images import frames_folder, list_images
from tasks.support.registry import crown, delete_alias, set_alias
from tasks.support.tracking import GATE_PREFIX, client, gate_tag, small_run
from tasks.support.verify import VerificationError

log = logging.getLogger(__name__)


class NoRebuild(AlprError):
    """MLflow holds no finished rebuild to promote."""


def record_verdicts(mc: Any, record: RebuildRecord, decision: Decision) -> None:
    """Each verdict, gate by gate with its numbers, on the candidate's run: tags and `promotion/verdict.json`."""
    for name, tags in verdict_tags(decision).items():
        verdict = decision.verdicts[name]
        run_id = record.candidates[name].run_id
        for key in mc.get_run(run_id).data.tags:  # an earlier decision's gates (a champion then, a smoke test)
            if key.startswith(GATE_PREFIX) and key not in tags:
                mc.delete_tag(run_id, key)
        for key, value in tags.items():
            mc.set_tag(run_id, key, value)
        doc = {
            "candidate": name,
            "passed": verdict.passed,
            "winner": decision.winner,
            "policy": decision.policy,
            "checks": [asdict(c) for c in verdict.checks],
            "champion": asdict(decision.champion) if decision.champion else None,
            "decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        mc.log_text(run_id, json.dumps(doc, indent=2), "promotion/verdict.json")


@dataclass(frozen=True)
class PromoteResult:
    decision: Decision
    version: str | None = None
    release: Path | None = None
    repairs: tuple[str, ...] = ()  # alias repairs made first (`reconcile`)
    unchanged: str = ""  # why nothing was deployed although a winner passed: the gate runs its exact bytes already


def promote(
    record: RebuildRecord,
    metrics: dict[str, dict[str, Any]],
    cfg: PromoteConfig,
    tracking: TrackingConfig,
    holdout_dir: Path,
    vcfg: ValidateConfig,
    reference: str = "fp32",
    frames_dir: Path | None = None,
) -> PromoteResult:
    """Gate every candidate (against FP32 and the champion), log each verdict to its run, mark the winner
    `challenger`, deploy it after a smoke test, then make it `champion` (the old one becomes `previous`).

    A rebuild validated without a labelled holdout (`holdout: no labelled holdout`) is judged on agreement alone:
    no mAP gate and no champion comparison (both need labels), promoted only with `promote.allow_unlabelled`, and
    smoke-tested on agreement with its own FP32 `reference` on the frames of `frames_dir`.
    """
    name = tracking.registered_model
    mc = client(tracking)
    unlabelled = any(row.get("holdout") == NO_HOLDOUT for row in metrics.values())
    with promotion_lock(cfg.gate_dir), tempfile.TemporaryDirectory(prefix="alpr-reference-") as scratch:
        names, adopted = open_gate(mc, tracking, cfg.gate_dir)
        repairs = adopted + reconcile(mc, tracking, cfg.gate_dir, names)
        checkpoint("before_champion")
        champion = None if unlabelled else evaluate_champion(mc, tracking, holdout_dir, vcfg, names)
        checkpoint("after_champion")
        decision = decide(metrics, cfg, champion)
        record_verdicts(mc, record, decision)
        if decision.winner is None:
            log.warning("no candidate passed the gates; nothing promoted:\n%s", decision.explain())
            return PromoteResult(decision, repairs=repairs)
        winner = record.candidates[decision.winner]
        if not winner.version:
            raise RuntimeError(f"candidate '{decision.winner}' (run {winner.run_id}) has no registry version")
        same = already_deployed(mc, tracking, cfg.gate_dir, winner.run_id, winner.version)
        if same is not None:
            release, why = same
            mc.set_tag(winner.run_id, gate_tag("promotion"), f"no-op: {why}"[:4900])
            log.info("promotion of %s (version %s) is a no-op: %s", decision.winner, winner.version, why)
            return PromoteResult(decision, winner.version, release, repairs, unchanged=why)
        set_alias(mc, name, names.challenger, winner.version)
        row = metrics[decision.winner]
        manifest = manifest_for(tracking, winner.version, winner.run_id, decision.winner, row, record.parent_run_id)
        try:  # whatever refuses the winner from here on takes the challenger alias back
            check = _agreement_check(record, reference, frames_dir, tracking, Path(scratch)) if unlabelled else None
            rec = recorded(mc, tracking, winner.run_id, winner.version)
            gate = Gate(cfg, tracking, holdout_dir, vcfg, check)
            release = deploy(gate, winner.source, winner.version, manifest, rec)
        except (SmokeTestError, VerificationError) as e:
            mc.set_tag(winner.run_id, gate_tag("smoke_test"), f"fail: {e}")
            delete_alias(mc, name, names.challenger)
            raise
        smoke = read_manifest(release).get("smoke_test") or {}
        mc.set_tag(
            winner.run_id, gate_tag("smoke_test"), "pass" if "gate_build" not in smoke else f"pass: {GATE_AT_LOAD}"
        )
        old = crown(mc, name, winner.version, names)
        checkpoint("after_aliases")
        event = {"from_version": old or "", "to_version": winner.version, "candidate": decision.winner}
        with small_run(mc, tracking, "promotion", f"promotion-v{winner.version}", event):
            pass
        prune_releases(cfg.gate_dir, cfg.keep_releases)
    log.info("promoted %s (version %s) to %s", decision.winner, winner.version, release)
    return PromoteResult(decision, winner.version, release, repairs)


def already_deployed(
    mc: Any, tracking: TrackingConfig, gate_dir: Path, run_id: str, version: str
) -> tuple[Path, str] | None:
    """(the release, why) when the gate's current release holds exactly the winner's bytes (its verified sha256 is
    the one the store recorded for the winner) and is complete: promoting it again would re-deploy the same bytes
    over the champion as a new release. None otherwise (then the winner is deployed as usual)."""
    release = current_release(gate_dir)
    if release is None:
        return None
    manifest = read_manifest(release)
    rec = recorded(mc, tracking, run_id, version)
    if (
        manifest.get("sha256") != rec.sha256
        or not manifest.get(VERIFIED_KEY)
        or not release_is_complete(release, rec.sha256)
    ):
        return None
    why = (
        f"the gate already runs these exact bytes (sha256 {rec.sha256[:12]}, release {release.name}, version "
        f"{manifest.get('version')}): nothing deployed, no new release, aliases unchanged"
    )
    return release, why


def _agreement_check(
    record: RebuildRecord, reference: str, frames_dir: Path | None, tracking: TrackingConfig, scratch: Path
) -> AgreementCheck:
    """The rebuild's own FP32 reference (downloaded as registered) and the agreement frames validation used."""
    folder = frames_folder(frames_dir) if frames_dir is not None else None
    frames = list_images(folder) if folder is not None else []
    if reference not in record.candidates or not frames:
        raise SmokeTestError(
            f"no labelled holdout, and no reference '{reference}' in rebuild {record.parent_run_id} or no agreement "
            f"frames in {frames_dir}: the release cannot be smoke-tested"
        )
    ref = record.candidates[reference]
    mc = client(tracking)
    return AgreementCheck(
        fetch_verified(mc, tracking, ref.source, ref.run_id, ref.version or None, scratch / "reference"), tuple(frames)
    )


def require_latest_rebuild(tracking: TrackingConfig) -> tuple[RebuildRecord, dict[str, dict[str, Any]]]:
    """The newest finished rebuild and its metrics; fails with what to run when there is none."""
    latest = latest_rebuild(tracking)
    if latest is None:
        raise NoRebuild(f"no finished rebuild in {tracking.shown_uri}", remedy=Remedy.REBUILD)
    return latest
