"""What is deployed and how the latest rebuild's candidates compare: read from MLflow and the gate folder."""

from __future__ import annotations

import json
from typing import Any

from tasks.pipeline.track import client, experiment_url, latest_rebuild
from tasks.runtime.releases import MANIFEST, current_release
from tasks.support.config import PromoteConfig, TrackingConfig
from tasks.support.registry import CHAMPION

STATUS_FIELDS = (
    "precision",
    "backend",
    "map50",
    "map50_95",
    "map_drop",
    "agreement_map50_95",
    "latency_p50_ms",
    "latency_p95_ms",
    "size_mb",
    "holdout",  # "no labelled holdout" when the rebuild was judged on agreement alone
)


def champion(tracking: TrackingConfig) -> dict[str, Any] | None:
    """The registry version holding the `champion` alias, or None."""
    from mlflow.exceptions import MlflowException

    mc = client(tracking)
    try:
        mv = mc.get_model_version_by_alias(tracking.registered_model, CHAMPION)
    except MlflowException:  # no such registered model or alias yet
        return None
    return {"version": str(mv.version), "mlflow_run_id": mv.run_id, "candidate": mv.tags.get("candidate", "")}


def status(tracking: TrackingConfig, promote_cfg: PromoteConfig) -> dict[str, Any]:
    """Champion, deployed release and every candidate of the latest rebuild, as plain JSON-able data."""
    out: dict[str, Any] = {"champion": champion(tracking), "deployed": None, "rebuild": None, "candidates": []}
    release = current_release(promote_cfg.gate_dir)
    if release is not None and (release / MANIFEST).is_file():
        manifest = json.loads((release / MANIFEST).read_text())
        out["deployed"] = {
            "release": str(release),
            "version": manifest.get("version"),
            "sha256": manifest.get("sha256"),
        }
    latest = latest_rebuild(tracking)
    if latest is None:
        return out
    record, metrics = latest
    out["rebuild"] = {
        "mlflow_run_id": record.parent_run_id,
        "experiment_id": record.experiment_id,
        "mlflow_url": experiment_url(tracking.uri, record.experiment_id),
    }
    for name, row in metrics.items():
        item: dict[str, Any] = {"name": name}
        item.update({k: row.get(k) for k in STATUS_FIELDS})
        item["passed"] = {"true": True, "false": False}.get(str(row.get("passed")))
        item["mlflow_run_id"] = record.candidates[name].run_id
        item["registry_version"] = record.candidates[name].version
        out["candidates"].append(item)
    return out
