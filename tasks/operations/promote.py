"""Promote a rebuild: gate its candidates (`policy`), time the winner together with the champion, log each verdict,
then deploy the winner after a smoke test (`deploy`) and move the gate's aliases, or, when the policy wants a person
(`policy.review`), keep the champion and record a pending decision that `approve` deploys later.

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
from tasks.operations.champion import fetch_champion, score_champion, time_with_winner
from tasks.operations.deploy import deploy, manifest_for
from tasks.operations.pending import clear_pending, read_pending, record_pending
from tasks.operations.policy import ChampionScore, Decision, Timing, decide, decision_tag, review, verdict_tags
from tasks.operations.provenance import fetch_verified, recorded
from tasks.operations.smoke import GATE_AT_LOAD, AgreementCheck, Gate, SmokeTestError
from tasks.pipeline.track import RebuildRecord, latest_rebuild
from tasks.pipeline.validate import GEOMETRY_KEY, NO_HOLDOUT
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
from tasks.support.registry import Aliases, crown, delete_alias, set_alias, version_by_alias
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
            "review": asdict(decision.review) if decision.review and decision.winner == name else None,
            "decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        mc.log_text(run_id, json.dumps(doc, indent=2, default=str), "promotion/verdict.json")
    # the rebuild's own run: the outcome in one tag and the whole explanation beside its trade-off chart
    mc.set_tag(record.parent_run_id, gate_tag("decision"), decision_tag(decision))
    mc.log_text(record.parent_run_id, decision.explain(), "promotion/decision.txt")


@dataclass(frozen=True)
class PromoteResult:
    decision: Decision
    version: str | None = None
    release: Path | None = None
    repairs: tuple[str, ...] = ()  # alias repairs made first (`reconcile`)
    unchanged: str = ""  # why nothing was deployed although a winner passed: the gate runs its exact bytes already
    pending: str | None = None  # the winner's version, kept out of the gate for a person to approve (`approve`)


class NotPending(AlprError):
    """`--approve VERSION` names no pending decision of this gate, or the champion it was decided against moved."""

    remedy = Remedy.PROMOTE


def promote(
    record: RebuildRecord,
    metrics: dict[str, dict[str, Any]],
    cfg: PromoteConfig,
    tracking: TrackingConfig,
    holdout_dir: Path,
    vcfg: ValidateConfig,
    reference: str = "fp32",
    frames_dir: Path | None = None,
    attended: bool = False,
) -> PromoteResult:
    """Gate every candidate (against FP32 and the champion), time the winner together with the champion, log each
    verdict to its run, then either deploy the winner after a smoke test and make it `champion` (the old one becomes
    `previous`), or keep the champion and record the winner as a pending decision (`policy.review`: slower than
    the champion, an FP32 model replacing an INT8 one, or a champion that itself fails a gate now).

    `attended`: a person runs this promotion and has already said yes (`alpr-ops rebuild --yes`); unattended runs
    (the watcher's, a deployment's, a schedule's) never replace the champion in those cases.

    A rebuild validated without a labelled holdout (`holdout: no labelled holdout`) is judged on agreement alone:
    no mAP gate and no champion mAP comparison (both need labels), promoted only with `promote.allow_unlabelled`,
    and smoke-tested on agreement with its own FP32 `reference` on the frames of `frames_dir`.
    """
    name = tracking.registered_model
    mc = client(tracking)
    unlabelled = any(row.get("holdout") == NO_HOLDOUT for row in metrics.values())
    with promotion_lock(cfg.gate_dir), tempfile.TemporaryDirectory(prefix="alpr-reference-") as scratch:
        names, adopted = open_gate(mc, tracking, cfg.gate_dir)
        repairs = adopted + reconcile(mc, tracking, cfg.gate_dir, names)
        checkpoint("before_champion")
        deployed = fetch_champion(mc, tracking, names, Path(scratch) / "champion")
        score = None if deployed is None or unlabelled else score_champion(deployed, holdout_dir, vcfg)
        checkpoint("after_champion")
        decision = decide(metrics, cfg, score)
        if deployed is not None and score is None:  # unlabelled: no mAP to compare, the latency and precision still
            precision = deployed.candidate.precision
            score = ChampionScore(deployed.version, deployed.candidate.name, float("nan"), NO_HOLDOUT, precision)
        if decision.winner is None:
            decision = review(decision, metrics, cfg, reference, score, None, attended)
            record_verdicts(mc, record, decision)
            log.warning("no candidate passed the gates; nothing promoted:\n%s", decision.explain())
            return PromoteResult(decision, repairs=repairs)
        winner = record.candidates[decision.winner]
        if not winner.version:
            raise RuntimeError(f"candidate '{decision.winner}' (run {winner.run_id}) has no registry version")
        row = metrics[decision.winner]
        same = already_deployed(mc, tracking, cfg.gate_dir, winner.run_id, winner.version)
        timing, note = None, ""
        if deployed is not None and (same is not None or deployed.version == winner.version):
            p50 = float(row.get("latency_p50_ms") or 0.0)
            timing = Timing(1.0, 0.0, p50, p50, "the same version")
        elif deployed is not None and cfg.max_slowdown is not None:
            cand = fetch_verified(mc, tracking, winner.source, winner.run_id, winner.version, Path(scratch) / "winner")
            timing, note = time_with_winner(deployed, cand, row, timing_frame(holdout_dir, frames_dir), vcfg)
        decision = review(decision, metrics, cfg, reference, score, timing, attended, note)
        record_verdicts(mc, record, decision)
        if same is not None:
            release, why = same
            mc.set_tag(winner.run_id, gate_tag("promotion"), f"no-op: {why}"[:4900])
            clear_pending(mc, name, names)
            log.info("promotion of %s (version %s) is a no-op: %s", decision.winner, winner.version, why)
            return PromoteResult(decision, winner.version, release, repairs, unchanged=why)
        assert decision.review is not None  # `review` always sets it
        if not decision.review.deploy:
            info = {
                "why": "; ".join(decision.review.reasons),
                "candidate": decision.winner,
                "run_id": winner.run_id,
                "rebuild_run_id": record.parent_run_id,
                "champion_version": decision.review.champion_version,
            }
            record_pending(mc, name, names, winner.version, info)
            log.warning("champion kept; %s (version %s) awaits a person:\n%s", decision.winner, winner.version,
                        decision.explain())  # fmt: skip
            return PromoteResult(decision, repairs=repairs, pending=winner.version)
        geometry = str(row.get(GEOMETRY_KEY) or reference)  # validation's agreement: against FP32 at its geometry
        check = _agreement_check(record, geometry, frames_dir, tracking, Path(scratch)) if unlabelled else None
        release = deploy_and_crown(
            mc, cfg, tracking, names, Gate(cfg, tracking, holdout_dir, vcfg, check),
            Chosen(decision.winner, winner.version, winner.run_id, winner.source, row, record.parent_run_id),
        )  # fmt: skip
    log.info("promoted %s (version %s) to %s", decision.winner, winner.version, release)
    return PromoteResult(decision, winner.version, release, repairs)


@dataclass(frozen=True)
class Chosen:
    """The version to deploy: its candidate, run, artifact and metrics row, and its rebuild."""

    candidate: str
    version: str
    run_id: str
    source: str
    row: dict[str, Any]
    rebuild_run_id: str


def deploy_and_crown(mc: Any, cfg: PromoteConfig, tracking: TrackingConfig, names: Aliases, gate: Gate,
                     chosen: Chosen, approved: str = "") -> Path:  # fmt: skip
    """Under the promotion lock: mark `chosen` `challenger`, deploy it after its smoke test (a refusal takes the
    alias back), make it `champion` (the old one becomes `previous`), clear any pending decision, log the event."""
    name = tracking.registered_model
    set_alias(mc, name, names.challenger, chosen.version)
    manifest = manifest_for(tracking, chosen.version, chosen.run_id, chosen.candidate, chosen.row,
                            chosen.rebuild_run_id)  # fmt: skip
    if approved:
        manifest["approved"] = approved
    try:  # whatever refuses the winner from here on takes the challenger alias back
        rec = recorded(mc, tracking, chosen.run_id, chosen.version)
        release = deploy(gate, chosen.source, chosen.version, manifest, rec)
    except (SmokeTestError, VerificationError) as e:
        mc.set_tag(chosen.run_id, gate_tag("smoke_test"), f"fail: {e}")
        delete_alias(mc, name, names.challenger)
        raise
    smoke = read_manifest(release).get("smoke_test") or {}
    mc.set_tag(chosen.run_id, gate_tag("smoke_test"), "pass" if "gate_build" not in smoke else f"pass: {GATE_AT_LOAD}")
    old = crown(mc, name, chosen.version, names)
    checkpoint("after_aliases")
    clear_pending(mc, name, names)
    event = {"from_version": old or "", "to_version": chosen.version, "candidate": chosen.candidate}
    if approved:
        event["approved"] = approved[:4900]
    with small_run(mc, tracking, "promotion", f"promotion-v{chosen.version}", event):
        pass
    prune_releases(cfg.gate_dir, cfg.keep_releases)
    return release


def approve(
    version: str,
    cfg: PromoteConfig,
    tracking: TrackingConfig,
    holdout_dir: Path,
    vcfg: ValidateConfig,
    reference: str = "fp32",
    frames_dir: Path | None = None,
) -> PromoteResult:
    """Deploy the gate's pending decision `version` after a person looked (`alpr-ops promote --approve VERSION`, or
    the `promote` deployment run with `approve` from the Prefect UI): the same smoke test and alias moves as an
    unattended promotion. Refused when `version` is not this gate's pending decision, or when the champion it was
    compared with is no longer the champion (then the comparison the person looked at is stale: promote again)."""
    name = tracking.registered_model
    mc = client(tracking)
    with promotion_lock(cfg.gate_dir), tempfile.TemporaryDirectory(prefix="alpr-reference-") as scratch:
        names, adopted = open_gate(mc, tracking, cfg.gate_dir)
        repairs = adopted + reconcile(mc, tracking, cfg.gate_dir, names)
        pend = read_pending(mc, name, names)
        if pend is None or pend["version"] != str(version):
            held = "none" if pend is None else f"version {pend['version']} ({pend['candidate']})"
            raise NotPending(f"version {version} is not the pending decision of {cfg.gate_dir} (pending: {held})")
        champ = version_by_alias(mc, name, names.champion)
        now = "" if champ is None else str(champ.version)
        if now != pend["champion_version"]:
            raise NotPending(
                f"version {version} was compared with champion {pend['champion_version'] or 'none'}, but the champion "
                f"is now {now or 'none'}: that comparison is stale; run `alpr-ops promote` again to decide afresh"
            )
        run = mc.get_run(pend["run_id"])
        tags = run.data.tags
        row = {**run.data.metrics, "backend": tags.get("backend", ""), "precision": tags.get("precision", "")}
        check = None
        if tags.get("holdout") == NO_HOLDOUT:  # smoke-tested on agreement with its own rebuild's FP32 reference
            record, _ = require_latest_rebuild(tracking)
            if record.parent_run_id != pend["rebuild_run_id"]:
                raise NotPending(
                    f"version {version} comes from rebuild {pend['rebuild_run_id']}, validated without a labelled "
                    "holdout and no longer the latest: its reference cannot be found for the smoke test"
                )
            geometry = tags.get(GEOMETRY_KEY) or reference  # validation's agreement: against FP32 at its geometry
            check = _agreement_check(record, geometry, frames_dir, tracking, Path(scratch))
        approved = f"approved by a person (alpr-ops promote --approve {version}) over: {pend['why']}"
        chosen = Chosen(pend["candidate"], str(version), pend["run_id"], pend["source"], row, pend["rebuild_run_id"])
        release = deploy_and_crown(mc, cfg, tracking, names, Gate(cfg, tracking, holdout_dir, vcfg, check), chosen,
                                   approved)  # fmt: skip
        mc.set_tag(pend["run_id"], gate_tag("decision"), approved[:4900])
        mc.set_tag(pend["rebuild_run_id"], gate_tag("decision"), approved[:4900])
    decision = Decision(pend["candidate"], policy=approved)
    log.info("approved %s (version %s), deployed to %s", pend["candidate"], version, release)
    return PromoteResult(decision, str(version), release, repairs)


def timing_frame(holdout_dir: Path, frames_dir: Path | None) -> Path | None:
    """The frame the winner and the champion are timed on: the holdout's first image, else the first agreement
    frame (as validation times on one frame of what it validated on)."""
    for folder in (holdout_dir / "images", frames_folder(frames_dir) if frames_dir is not None else None):
        images = list_images(folder) if folder is not None and folder.is_dir() else []
        if images:
            return images[0]
    return None


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
