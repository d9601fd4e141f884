"""The `rebuild` Prefect flow: videos -> calibration frames -> candidates -> validation -> MLflow -> promotion.

Prefect decorators live here only; the logic is in `tasks/`, whose plain functions the tests call directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import DEFAULT, NO_CACHE

from flows.promote import promote as promote_flow
from tasks.pipeline import build, extract, fetch, track, validate
from tasks.support import dvc as version
from tasks.support import offline
from tasks.support.config import Params

# Resuming: the expensive steps persist their results under Prefect's default cache policy (inputs + task source +
# flow run id). Retrying a failed rebuild's flow run (the UI's Retry, or `prefect flow-run retry`) reuses every
# step that finished and runs the rest; a new rebuild is a new flow run and redoes everything (the frame cache of
# tasks/pipeline/extract.py and the build cache of tasks/support/cache.py make unchanged inputs cheap there). The
# MLflow step is persisted too: a retry after it must not log a second parent run.
# Retries with backoff only on the I/O-bound step here (`dvc push` to a remote); the others are CPU-bound or create
# MLflow runs and registry versions, which a blind retry would duplicate (fetch and registry reads: flows/deploy.py,
# flows/promote.py).
RESUMABLE = {"cache_policy": DEFAULT, "persist_result": True}
stay_offline = task(offline.configure_offline, name="offline", cache_policy=NO_CACHE)
verify_model = task(fetch.verify_model, name="verify-model", cache_policy=NO_CACHE)
extract_frames = task(extract.extract_frames, name="extract", **RESUMABLE)
build_candidates = task(build.build_candidates, name="build", **RESUMABLE)
validate_candidates = task(validate.run_validation, name="validate", **RESUMABLE)
write_metrics = task(validate.write_metrics, name="write-metrics", cache_policy=NO_CACHE)
write_plot_data = task(validate.write_plot_data, name="write-plot-data", cache_policy=NO_CACHE)
lineage = task(track.lineage, name="lineage", cache_policy=NO_CACHE)
log_rebuild = task(track.log_rebuild, name="track", **RESUMABLE)
dvc_commit = task(version.dvc_commit, name="dvc-commit", cache_policy=NO_CACHE)
dvc_push = task(version.dvc_push, name="dvc-push", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[10, 30, 90])


@flow(name="rebuild", log_prints=False)
def rebuild(params: Params, root: Path, dvc_root: Path | None = None) -> dict[str, Any]:
    """Rebuild every candidate from the videos in `params.paths.videos` and promote the winner.

    `dvc_root`: the DVC project whose `dvc.yaml` describes these same paths; its `dvc.lock` then records the
    outputs. Leave it unset when paths were overridden, so DVC never records outputs it does not describe.
    """
    p = params.paths
    stay_offline(p.ultralytics_config)
    model = verify_model(p.model, params.model.sha256)
    frames = extract_frames(
        p.videos, p.calibration, p.calibration_yaml, params.extract, params.model.names, p.holdout_frames, p.frame_cache
    )
    built = build_candidates(
        model,
        frames.dataset_yaml,
        p.candidates,
        params.build,
        params.model.sha256,
        frames.frames_hash,
        gate=params.validate_,
        cache_dir=p.build_cache,
        previous=params.promote.gate_dir / "current",
        gate_frames=p.holdout_frames,
    )
    report = validate_candidates(built, p.holdout, params.build.reference, params.validate_, p.holdout_frames)
    metrics = report.metrics
    write_metrics(p.metrics, params.build.reference, metrics)
    write_plot_data(p.plots, report)
    if dvc_root is not None:
        dvc_commit(dvc_root)
        dvc_push(dvc_root)
    tags = lineage(root, frames.frames_hash, params.model.sha256, version.dvc_file(p.videos), p.videos)
    record = log_rebuild(params, built, metrics, tags, report)
    result = None
    if params.promote.auto:
        result = promote_flow(params, record, metrics)  # the `promote` flow, as a subflow
    return {"record": record, "metrics": metrics, "promotion": result, "extract": frames, "validation": report}
