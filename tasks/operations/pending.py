"""A pending decision: a rebuild's winner that would have replaced the champion with something slower (or an FP32
model, or while the champion itself failed a gate), kept out of the gate until a person approves it.

It lives in the registry: the version holds the gate folder's own `pending-<gate id>` alias, and its version tags
say why, from which rebuild and against which champion (`alpr-ops status` and the nightly check read them back).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.runtime.releases import gate_id
from tasks.support.config import TrackingConfig
from tasks.support.registry import CHAMPION, Aliases, delete_alias, set_alias, version_by_alias
from tasks.support.tracking import client

log = logging.getLogger(__name__)

PENDING = "pending"
TAG = "pending."  # version tags of a pending decision: pending.why, pending.rebuild_run_id, ...
FIELDS = ("why", "candidate", "run_id", "rebuild_run_id", "champion_version", "decided_at")


def pending_alias(names: Aliases) -> str:
    """The gate folder's pending alias, beside its `champion-<id>`: `pending-<id>`."""
    return PENDING + names.champion.removeprefix(CHAMPION)


def record_pending(mc: Any, name: str, names: Aliases, version: str, info: dict[str, str]) -> None:
    """Hold `version` under the gate's pending alias (replacing any older pending decision) with `info` as tags."""
    info = {**info, "decided_at": datetime.now(UTC).isoformat(timespec="seconds")}
    for key in FIELDS:
        mc.set_model_version_tag(name, str(version), TAG + key, str(info.get(key, ""))[:4900])
    set_alias(mc, name, pending_alias(names), version)
    log.warning("pending decision: version %s held as %s: %s", version, pending_alias(names), info.get("why", ""))


def clear_pending(mc: Any, name: str, names: Aliases) -> str | None:
    """Remove the gate's pending alias (a later decision replaced it); returns the version it held, or None."""
    mv = version_by_alias(mc, name, pending_alias(names))
    if mv is None:
        return None
    delete_alias(mc, name, pending_alias(names))
    return str(mv.version)


def read_pending(mc: Any, name: str, names: Aliases) -> dict[str, str] | None:
    """The gate's pending decision (version and the tags recorded with it), or None."""
    mv = version_by_alias(mc, name, pending_alias(names))
    if mv is None:
        return None
    tags = mv.tags or {}
    return {"version": str(mv.version), "source": mv.source, **{k: tags.get(TAG + k, "") for k in FIELDS}}


def pending_for(tracking: TrackingConfig, gate_dir: Path) -> dict[str, str] | None:
    """The pending decision of the gate folder `gate_dir` (None: none, or nothing promoted into it yet)."""
    from tasks.support.registry import aliases_for

    gid = gate_id(gate_dir)
    if gid is None:
        return None
    return read_pending(client(tracking), tracking.registered_model, aliases_for(gid))
