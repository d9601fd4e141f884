"""Record a rebuild in MLflow: a parent run with the lineage, a child run per candidate, a registry version each.

All calls go through an explicit `MlflowClient`, so nothing global (tracking URI, active run) is set as a side
effect and several stores can be used side by side (tests, a server).
"""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.build import Candidate
from tasks.config import Params, TrackingConfig

log = logging.getLogger(__name__)

KIND_TAG = "alpr.kind"  # "rebuild" on parent runs, "candidate" on child runs
ARTIFACT_PATH = "artifact"


@dataclass(frozen=True)
class TrackedCandidate:
    name: str
    run_id: str
    version: str
    source: str


@dataclass(frozen=True)
class RebuildRecord:
    """Where a rebuild was recorded: the parent run and, per candidate, its run and registry version."""

    experiment_id: str
    parent_run_id: str
    candidates: dict[str, TrackedCandidate]


def client(cfg: TrackingConfig) -> Any:  # -> mlflow.MlflowClient (imported lazily: slow import)
    """An MLflow client bound to the configured store (tracking and registry)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=cfg.uri, registry_uri=cfg.uri)


def experiment_id(mlflow_client: Any, cfg: TrackingConfig) -> str:
    """The experiment's id, creating it with its artifact root (`tracking.artifacts`) if missing."""
    exp = mlflow_client.get_experiment_by_name(cfg.experiment)
    if exp is not None:
        return exp.experiment_id
    location = cfg.artifacts.resolve().as_uri() if "://" not in str(cfg.artifacts) else str(cfg.artifacts)
    return mlflow_client.create_experiment(cfg.experiment, artifact_location=f"{location}/{cfg.experiment}")


def git_commit(repo: Path) -> str:
    """The commit the code ran at (with '-dirty' when the tree has changes), or 'unknown' outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def lineage(repo: Path, frames_hash: str, base_model_sha256: str, videos_dvc: Path) -> dict[str, str]:
    """Tags that say exactly what a rebuild was made from: code, data (DVC hash of the videos), frames, model."""
    tags = {"git_commit": git_commit(repo), "frames_hash": frames_hash, "base_model_sha256": base_model_sha256}
    if videos_dvc.is_file():
        import yaml

        outs = (yaml.safe_load(videos_dvc.read_text()) or {}).get("outs") or [{}]
        tags["videos_dvc_md5"] = str(outs[0].get("md5", "unknown"))
    else:
        tags["videos_dvc_md5"] = f"untracked (no {videos_dvc.name})"
    return tags


def flatten(prefix: str, data: dict[str, Any]) -> dict[str, str]:
    """`{'a': {'b': 1}}` -> `{'a.b': '1'}`, for MLflow params."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(name, value))
        else:
            out[name] = str(value)
    return out


def log_rebuild(
    params: Params,
    candidates: list[Candidate],
    metrics: dict[str, dict[str, float | str]],
    lineage: dict[str, str],
) -> RebuildRecord:
    """Log one rebuild (parent + child runs), upload each artifact and register it as a model version."""
    from mlflow.entities import Param

    mc = client(params.tracking)
    exp = experiment_id(mc, params.tracking)
    tags = {KIND_TAG: "rebuild", "mlflow.runName": f"rebuild-{lineage.get('frames_hash', '')[:8]}", **lineage}
    parent = mc.create_run(exp, tags=tags)
    pid = parent.info.run_id
    shared = flatten("", params.model_dump(mode="json", by_alias=True, include={"extract", "validate_", "build"}))
    shared.pop("build.candidates", None)
    mc.log_batch(pid, params=[Param(k, v) for k, v in shared.items()])
    try:
        name = params.tracking.registered_model
        if mc.search_registered_models(filter_string=f"name = '{name}'") == []:
            mc.create_registered_model(name, description="INT8/FP32 plate detector candidates for the gate runtime")
        tracked = {}
        for cand in candidates:
            tracked[cand.name] = _log_candidate(mc, exp, pid, cand, metrics[cand.name], lineage, name)
        mc.set_terminated(pid)
    except BaseException:
        mc.set_terminated(pid, status="FAILED")
        raise
    log.info("logged rebuild %s with %d candidates to %s", pid, len(tracked), params.tracking.uri)
    return RebuildRecord(exp, pid, tracked)


def _log_candidate(
    mc: Any,
    exp: str,
    parent_id: str,
    cand: Candidate,
    row: dict[str, float | str],
    lineage: dict[str, str],
    registered_model: str,
) -> TrackedCandidate:
    """One child run (a failure marks it FAILED, never leaves it RUNNING) and its registry version."""
    tags = {
        KIND_TAG: "candidate",
        "mlflow.parentRunId": parent_id,
        "mlflow.runName": cand.name,
        "candidate": cand.name,
        "backend": cand.backend,
        "precision": cand.precision,
        "artifact_sha256": cand.sha256,
        "base_model_sha256": cand.base_model_sha256,
        **lineage,
    }
    run = mc.create_run(exp, tags=tags)
    rid = run.info.run_id
    try:
        version = _fill_candidate_run(mc, run, cand, row, tags, registered_model)
    except BaseException:
        mc.set_terminated(rid, status="FAILED")
        raise
    mc.set_terminated(rid)
    return TrackedCandidate(cand.name, rid, version, f"{run.info.artifact_uri}/{ARTIFACT_PATH}")


def _fill_candidate_run(
    mc: Any, run: Any, cand: Candidate, row: dict[str, float | str], tags: dict[str, str], registered_model: str
) -> str:
    """Params, metrics and the artifact of one candidate run, then its registry version; returns the version."""
    from mlflow.entities import Metric, Param

    rid = run.info.run_id
    now = int(run.info.start_time)
    cand_params = {"candidate": cand.name, "backend": cand.backend, "precision": cand.precision, "imgsz": cand.imgsz}
    cand_params.update({f"toolchain.{k}": v for k, v in cand.toolchain.items()})
    numeric = {k: float(v) for k, v in row.items() if isinstance(v, int | float)}
    numeric["build_seconds"] = cand.build_seconds
    mc.log_batch(
        rid,
        metrics=[Metric(k, v, now, 0) for k, v in numeric.items()],
        params=[Param(k, str(v)) for k, v in cand_params.items()],
    )
    mc.log_artifacts(rid, str(cand.folder), ARTIFACT_PATH)
    source = f"{run.info.artifact_uri}/{ARTIFACT_PATH}"
    version_tags = {k: v for k, v in tags.items() if not k.startswith("mlflow.")}
    mv = mc.create_model_version(registered_model, source=source, run_id=rid, tags=version_tags)
    return str(mv.version)


def latest_rebuild(cfg: TrackingConfig) -> tuple[RebuildRecord, dict[str, dict[str, float | str]]] | None:
    """The newest finished rebuild in the store, with each candidate's metrics; None when there is none."""
    mc = client(cfg)
    exp = mc.get_experiment_by_name(cfg.experiment)
    if exp is None:
        return None
    parents = mc.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{KIND_TAG}` = 'rebuild' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not parents:
        return None
    pid = parents[0].info.run_id
    children = mc.search_runs([exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{pid}'")
    versions = {mv.run_id: mv for mv in mc.search_model_versions(f"name = '{cfg.registered_model}'") if mv.run_id}
    tracked, metrics = {}, {}
    for run in sorted(children, key=lambda r: r.info.start_time):
        name = run.data.tags.get("candidate", run.info.run_name)
        mv = versions.get(run.info.run_id)
        tracked[name] = TrackedCandidate(name, run.info.run_id, str(mv.version) if mv else "", mv.source if mv else "")
        metrics[name] = {
            **run.data.metrics,
            "backend": run.data.tags.get("backend", ""),
            "precision": run.data.tags.get("precision", ""),
            "passed": run.data.tags.get("gate.passed", ""),
        }
    return RebuildRecord(exp.experiment_id, pid, tracked), metrics
