"""What is deployed and how the latest rebuild's candidates compare: read from MLflow and the gate folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.pipeline.track import latest_rebuild
from tasks.pipeline.validate import CI_KEYS, GEOMETRY_KEY, ROLE_KEY, interval
from tasks.runtime.releases import MANIFEST, GateFolderError, current_release, gate_id, read_manifest
from tasks.support.config import PromoteConfig, TrackingConfig
from tasks.support.registry import aliases_for, version_by_alias
from tasks.support.tracking import client, experiment_url, gate_tag, require_store

STATUS_FIELDS = (
    "precision",
    "backend",
    "map50",
    "map50_95",
    "map_drop",  # against the square FP32 accuracy reference: what the user sees
    "quant_map_drop",  # against FP32 at the candidate's own geometry: what quantization cost
    "geometry_map_drop",  # a geometry reference's row: what the geometry itself costs (square FP32 - FP32 at it)
    "agreement_map50_95",  # against FP32 at the candidate's own geometry (the gates'); a geometry reference's: square
    "agreement_square_map50_95",
    "geometry_agreement_map50_95",
    "holdout_plates",  # the labelled plates every drop and its interval were measured on
    GEOMETRY_KEY,  # the FP32 model at the candidate's geometry it is compared with
    "input_shape",
    "latency_p50_ms",
    "latency_p95_ms",
    "speedup",  # against the speed reference
    "size_mb",
    ROLE_KEY,  # accuracy reference, speed reference, or candidate
    "holdout",  # "no labelled holdout" when the rebuild was judged on agreement alone
)


def champion(tracking: TrackingConfig, gate_dir: Path) -> dict[str, Any] | None:
    """The registry version holding this gate folder's champion alias, or None (a store error raises)."""
    gid = gate_id(gate_dir)
    if gid is None:  # nothing promoted into this folder since aliases were scoped
        return None
    mv = version_by_alias(client(tracking), tracking.registered_model, aliases_for(gid).champion)
    if mv is None:  # no such registered model, or it has no champion alias yet
        return None
    return {"version": str(mv.version), "mlflow_run_id": mv.run_id, "candidate": mv.tags.get("candidate", "")}


def mismatch(champ: dict[str, Any] | None, deployed: dict[str, Any] | None) -> str | None:
    """What disagrees between the registry's champion and the deployed release (None: they agree). Only reported
    here: the next promotion or rollback repairs it under its lock, taking the deployed release as the truth."""
    c = None if champ is None else champ["version"]
    d = None if deployed is None else str(deployed["version"])
    if c == d:
        return None
    return (
        f"the registry's champion is version {c} but the gate runs version {d}; the next promotion or rollback "
        "repairs the aliases (the deployed release is the truth)"
    )


def pending_decision(tracking: TrackingConfig, gate_dir: Path) -> dict[str, Any] | None:
    """The winner a rebuild kept out of the gate for a person (`tasks/operations/pending.py`): its version, why,
    and the command that deploys it; None when no decision is pending."""
    from tasks.operations.pending import pending_for

    pend = pending_for(tracking, gate_dir)
    if pend is None:
        return None
    keys = ("version", "candidate", "why", "rebuild_run_id", "champion_version", "decided_at")
    return {**{k: pend[k] for k in keys}, "approve": f"alpr-ops promote --approve {pend['version']}"}


def status(tracking: TrackingConfig, promote_cfg: PromoteConfig) -> dict[str, Any]:
    """Champion, deployed release and every candidate of the latest rebuild, as plain JSON-able data. A sqlite store
    that does not exist is refused (`StoreMissing`), not created empty and reported as "no champion"."""
    require_store(tracking)
    gate_dir = promote_cfg.gate_dir
    out: dict[str, Any] = {"champion": champion(tracking, gate_dir), "deployed": None, "rebuild": None}
    out |= {"candidates": [], "mismatch": None}
    pending = pending_decision(tracking, gate_dir)
    if pending is not None:  # a "pending" key only when a decision waits for a person
        out["pending"] = pending
    try:
        release, refused = current_release(gate_dir), None
    except GateFolderError as e:  # `current` leads outside releases/: whatever it points at is not deployed
        release, refused = None, str(e)
    if release is not None and (release / MANIFEST).is_file():
        manifest = read_manifest(release)  # unreadable: a VerificationError naming it, not a traceback
        out["deployed"] = {
            "release": str(release),
            "version": manifest.get("version"),
            "sha256": manifest.get("sha256"),
        }
    out["mismatch"] = refused or mismatch(out["champion"], out["deployed"])
    if out["deployed"] is not None and gate_id(gate_dir) is None:
        out["mismatch"] = (
            f"{gate_dir} was deployed before registry aliases were scoped per gate folder: the next promotion or "
            "rollback adopts it (and says what it did)"
        )
    latest = latest_rebuild(tracking)
    if latest is None:
        return out
    record, metrics = latest
    out["rebuild"] = {
        "mlflow_run_id": record.parent_run_id,
        "experiment_id": record.experiment_id,
        "mlflow_url": experiment_url(tracking.uri, record.experiment_id),
        # the promotion's outcome for it (deploy, pending and why, none), "" before its promotion ran
        "decision": client(tracking).get_run(record.parent_run_id).data.tags.get(gate_tag("decision"), ""),
    }
    for name, row in metrics.items():
        item: dict[str, Any] = {"name": name}
        item.update({k: row.get(k) for k in STATUS_FIELDS})
        for key in CI_KEYS:  # [low, high] of the paired bootstrap (validate.bootstrap_*), None when not measured
            found = interval(row, key)
            item[key] = None if found is None else list(found)
        item["passed"] = {"true": True, "false": False}.get(str(row.get("passed")))
        item["mlflow_run_id"] = record.candidates[name].run_id
        item["registry_version"] = record.candidates[name].version
        out["candidates"].append(item)
    return out
