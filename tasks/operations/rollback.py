"""Roll a gate folder back one release: `current` and the `champion` alias back to the `previous` version."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from tasks.operations.aliases import open_gate, reconcile
from tasks.operations.deploy import deploy, manifest_for
from tasks.operations.provenance import recorded
from tasks.operations.smoke import Gate, SmokeTestError
from tasks.runtime.releases import promotion_lock
from tasks.support.config import PromoteConfig, TrackingConfig, ValidateConfig
from tasks.support.errors import AlprError
from tasks.support.faults import checkpoint
from tasks.support.registry import delete_alias, redact_uri, set_alias, version_by_alias
from tasks.support.tracking import client, small_run
from tasks.support.verify import VerificationError

log = logging.getLogger(__name__)


class RollbackError(AlprError):
    """Nothing to roll back to, or the previous release cannot be restored."""


@dataclass(frozen=True)
class RollbackResult:
    from_version: str | None
    to_version: str
    release: Path
    mlflow_run_id: str
    repairs: tuple[str, ...] = ()  # alias repairs made first (`reconcile`)


def rollback(cfg: PromoteConfig, tracking: TrackingConfig, holdout_dir: Path, vcfg: ValidateConfig) -> RollbackResult:
    """Point `current` and `champion` back at the `previous` version, in one step; logged as an MLflow run.

    The release folder is reused when it is still there and complete; if it was pruned it is downloaded and
    smoke-tested again. `current` moves first, then the aliases: a kill in between is finished by re-running.
    `previous` is then cleared: a rollback is one undo, not a walk back through history. A `current` leading
    outside `releases/` is refused (`GateFolderError`) before anything moves: the aliases are never "repaired" to it.
    """
    name = tracking.registered_model
    mc = client(tracking)
    with promotion_lock(cfg.gate_dir):
        names, adopted = open_gate(mc, tracking, cfg.gate_dir)
        repairs = adopted + reconcile(mc, tracking, cfg.gate_dir, names)
        prev = version_by_alias(mc, name, names.previous)
        if prev is None:
            raise RollbackError(
                f"nothing to roll back to: model '{name}' in {redact_uri(tracking.uri)} has no '{names.previous}' "
                f"alias for {cfg.gate_dir} "
                "(no promotion has replaced a champion yet, or the last rollback already used it)"
            )
        champ = version_by_alias(mc, name, names.champion)
        from_version = str(champ.version) if champ is not None else None
        run = mc.get_run(prev.run_id)
        row = {**run.data.metrics, "backend": run.data.tags.get("backend"), "precision": run.data.tags.get("precision")}
        if "map50_95" not in row:
            raise RollbackError(f"version {prev.version} (run {prev.run_id}) has no map50_95 metric to smoke-test")
        manifest = manifest_for(
            tracking, str(prev.version), prev.run_id, run.data.tags.get("candidate", ""), row, "rollback"
        )
        rec = recorded(mc, tracking, prev.run_id, str(prev.version))
        try:
            release = deploy(Gate(cfg, tracking, holdout_dir, vcfg), prev.source, str(prev.version), manifest, rec)
        except (SmokeTestError, VerificationError) as e:
            raise RollbackError(f"previous version {prev.version} cannot be restored: {e}") from e
        set_alias(mc, name, names.champion, str(prev.version))
        checkpoint("rollback_after_champion")
        delete_alias(mc, name, names.previous)
        event = {"from_version": from_version or "", "to_version": str(prev.version)}
        with small_run(mc, tracking, "rollback", f"rollback-v{prev.version}", event) as run:
            run_id = run.info.run_id
    log.info("rolled back from version %s to %s (%s)", from_version, prev.version, release)
    return RollbackResult(from_version, str(prev.version), release, run_id, repairs)
