"""The `rebuild` flow: videos -> calibration frames -> candidates -> validation -> MLflow -> promotion.

The one `rebuild` flow object: `alpr-ops rebuild`, the deployments (`flows/deployments.py`) and `alpr-ops serve`
all run it. Prefect decorators live in flows/ only; the logic is in tasks/.

Resuming: the expensive steps persist their results under Prefect's default cache policy (inputs + task source +
flow run id). Retrying a failed rebuild's flow run (the UI's Retry, or `alpr-ops resume`) reuses every step that
finished and runs the rest; a new rebuild is a new flow run and redoes everything (the frame cache and the build
cache make unchanged inputs cheap there). The MLflow step is persisted too: a retry after it must not log a second
parent run.

Unchanged inputs: the first step fingerprints the inputs (videos, holdout, params, code, toolchain, hardware:
tasks/pipeline/unchanged.py); when they equal the newest finished rebuild's, the flow logs one small run naming it
and stops (nothing registered or promoted). `force=True` rebuilds anyway. Validation reuses the report of the same
artifacts, frames, settings, code and hardware (tasks/pipeline/validation_cache.py).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.cache_policies import DEFAULT, NO_CACHE

from flows.common import open_project
from flows.promote import promote, tradeoff_chart
from flows.retry import IO_RETRIES
from tasks.pipeline import build, extract, fetch, gate_remote, track, unchanged, validate, validation_cache
from tasks.pipeline.lineage import lineage as lineage_tags
from tasks.runtime.releases import gate_paths
from tasks.support import dvc
from tasks.support.locks import project_lock
from tasks.support.project import Overrides, Project

RESUMABLE: dict[str, Any] = {"cache_policy": DEFAULT, "persist_result": True}
fetch_model = task(fetch.fetch_model, name="fetch-model", cache_policy=NO_CACHE, **IO_RETRIES)
reserve_videos = task(extract.reserved_videos, name="reserve-videos", cache_policy=NO_CACHE)
extract_frames = task(extract.extract_frames, name="extract", **RESUMABLE)
build_candidates = task(build.build_candidates, name="build", **RESUMABLE)
check_inputs = task(unchanged.check_inputs, name="check-inputs", cache_policy=NO_CACHE)
log_unchanged = task(unchanged.log_unchanged, name="log-unchanged", cache_policy=NO_CACHE, **IO_RETRIES)
record_fingerprint = task(unchanged.record_fingerprint, name="record-fingerprint", cache_policy=NO_CACHE, **IO_RETRIES)
validate_candidates = task(validation_cache.cached_validation, name="validate", **RESUMABLE)
write_metrics = task(validate.write_metrics, name="write-metrics", cache_policy=NO_CACHE)
write_plot_data = task(validate.write_plot_data, name="write-plot-data", cache_policy=NO_CACHE)
lineage = task(lineage_tags, name="lineage", cache_policy=NO_CACHE)
log_rebuild = task(track.log_rebuild, name="track", **RESUMABLE)
# build.tensorrt_on: gate: each TensorRT candidate's engine built and timed on the gate, its numbers merged (a retry
# after it must not ask the gate again)
gate_engines = task(gate_remote.gate_engines, name="gate-engines", **RESUMABLE)
dvc_commit = task(dvc.dvc_commit, name="dvc-commit", cache_policy=NO_CACHE)
dvc_push = task(dvc.dvc_push, name="dvc-push", cache_policy=NO_CACHE, **IO_RETRIES)


@flow(name="rebuild", log_prints=False)
def rebuild(
    params_file: str = "params.yaml",
    overrides: Overrides | None = None,
    project: Project | None = None,
    force: bool = False,
    attended: bool = False,
) -> dict[str, Any]:
    """Rebuild every candidate from the project's videos and promote the winner.

    Give `params_file` (and `overrides`: other paths, a subset of candidates), parsed here once, or a `project`
    the caller parsed. Holds the project lock (tasks/support/locks.py): a rebuild queues behind any other writer
    (a CLI rebuild, a deployment's, an extract, a promotion); the promote subflow re-enters it.
    DVC records the outputs (`dvc commit`) only when the run used the paths `dvc.yaml` describes. Inputs equal to
    the newest finished rebuild's: one small MLflow run naming it, nothing else (`force`: rebuild anyway).
    `attended`: a person runs it and agreed beforehand (`alpr-ops rebuild --yes`); the watcher's, a deployment's and
    a schedule's runs are not, and never replace the champion with a slower or FP32 winner (a pending decision).
    """
    proj = open_project(params_file, overrides, project)
    params, p = proj.params, proj.params.paths
    with project_lock(p.rebuild_lock, "rebuild"):
        inputs = check_inputs(params, force)
        if inputs.matched_run_id is not None:
            return unchanged_result(params, inputs, log_unchanged(params.tracking, inputs))
        model = fetch_model(p.model, params.model.package, params.model.member, params.model.sha256)
        reserved = reserve_videos(p.videos, p.holdout, p.label_proposal, params.label)
        frames = extract_frames(
            p.videos, p.calibration, p.calibration_yaml, params.extract, params.model.names, p.holdout_frames,
            p.frame_cache, reserved,
        )  # fmt: skip
        built = build_candidates(
            model, frames.dataset_yaml, p.candidates, params.build, params.model.sha256, frames.frames_hash,
            gate=params.validate_, cache_dir=p.build_cache, previous=gate_paths(params.promote.gate_dir).current,
            gate_frames=p.holdout_frames,
        )  # fmt: skip
        report = validate_candidates(
            built, p.holdout, params.build.reference, params.validate_, p.holdout_frames, p.validation_cache,
            params.build.speed_reference_name,
        )  # fmt: skip
        write_metrics(p.metrics, params.build.reference, report.metrics, report.speed_basis)
        write_plot_data(p.plots, report)
        if proj.dvc_root is not None:
            dvc_commit(proj.dvc_root, p.videos, frames.inputs)  # only the stages, only if the videos are the snapshot's
            dvc_push(proj.dvc_root)
        # every record names the videos as extraction read them (frames.inputs), not the folder as it is now
        tags = lineage(
            proj.root, frames.frames_hash, params.model.sha256, dvc.dvc_file(p.videos), p.videos, frames.inputs
        )
        record = log_rebuild(params, built, report.metrics, tags, report, frames.inputs)
        # the same record and rows when no engine is built on the gate; else with the measured engines registered
        record, metrics = gate_engines(params, built, record, report)
        if params.promote.auto:  # the promote flow draws the trade-off chart with its verdicts
            promotion = promote(params=params, record=record, metrics=metrics, attended=attended)
        else:  # the chart without verdicts; `alpr-ops promote` redraws it with them
            promotion = None
            tradeoff_chart(params.tracking, params.promote, params.build.reference, record.parent_run_id)
        record_fingerprint(params.tracking, record.parent_run_id, inputs)  # last: only a finished rebuild is matched
    return {
        "params": params,
        "record": record,
        "metrics": metrics,
        "promotion": promotion,
        "extract": frames,
        "validation": report,
        "mlflow_run_id": record.parent_run_id,
        "winner": promotion.decision.winner if promotion else None,
        "version": promotion.version if promotion else None,
        "explain": promotion.decision.explain() if promotion else None,
        "pending": promotion.pending if promotion else None,
        "unchanged": None,
    }


def unchanged_result(params: Any, inputs: unchanged.InputsCheck, run_id: str) -> dict[str, Any]:
    """What the flow returns when its inputs matched a finished rebuild: the keys of a rebuild's result, with
    nothing built, registered or promoted; `unchanged` names the rebuild matched, `mlflow_run_id` the small run."""
    empty = ("record", "metrics", "promotion", "extract", "validation", "winner", "version", "explain", "pending")
    return {**dict.fromkeys(empty), "params": params, "mlflow_run_id": run_id, "unchanged": inputs.matched_run_id}
