"""The `nightly-regression` Prefect flow: re-validate the deployed champion on the newest footage; a broken gate
fails the run.

Prefect decorators live here only; the logic is in `tasks/operations/regression.py`, whose plain functions the
tests call.
A broken gate raises `RegressionFailed`, so the flow run ends in a visible Failed state (and the scheduled
deployment's run history shows which night it broke).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from tasks.operations import regression as reg
from tasks.support import offline
from tasks.support.config import Params


def _transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry what may pass next time (a locked database, a slow share), not a `RegressionError` (no champion, no
    reference), which only a rebuild or promotion fixes."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # the result itself cannot be read: treat as transient
        return True
    return not isinstance(exc, reg.RegressionError)


# Reads of the MLflow store and artifact downloads may hit a busy database or a slow share: retried with backoff.
# Everything else is CPU-bound or writes (the MLflow run), where a blind retry would hide the cause or duplicate.
IO: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_condition_fn": _transient,
    "cache_policy": NO_CACHE,
}

stay_offline = task(offline.configure_offline, name="offline", cache_policy=NO_CACHE)
find_champion = task(reg.find_champion, name="find-champion", **IO)
fetch_reference = task(reg.fetch_reference, name="fetch-reference", **IO)
baseline_videos = task(reg.baseline_videos, name="baseline-videos", **IO)
sample_frames = task(reg.sample_frames, name="sample-frames", cache_policy=NO_CACHE)
measure = task(reg.measure, name="measure", cache_policy=NO_CACHE)
make_report = task(reg.make_report, name="judge", cache_policy=NO_CACHE)
log_nightly = task(reg.log_nightly, name="track", cache_policy=NO_CACHE)


@task(name="scratch", cache_policy=NO_CACHE)
def scratch() -> Path:
    """A private scratch folder for this run's frames and downloads (never the DVC outputs)."""
    return Path(tempfile.mkdtemp(prefix="alpr-nightly-"))


@task(name="cleanup", cache_policy=NO_CACHE)
def cleanup(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


@flow(name="nightly-regression", log_prints=False)
def nightly_regression(params: Params) -> reg.RegressionReport:
    """Re-validate the champion on frames of the newest videos against the FP32 reference and its promotion-time
    numbers; log the run to MLflow; raise `RegressionFailed` (the flow run fails) when a gate is broken."""
    p = params.paths
    stay_offline(p.ultralytics_config)
    champion = find_champion(params.promote.gate_dir, params.tracking)
    work = scratch()
    try:
        reference = fetch_reference(params.tracking, champion, params.build.reference, work)
        baseline = baseline_videos(params.tracking, champion)
        sample = sample_frames(
            p.videos, params.extract, params.model.names, p.frame_cache, params.nightly.newest_videos, baseline, work
        )
        metrics = measure(champion, reference, sample, p.holdout, params.validate_, work)
    finally:
        cleanup(work)
    report = make_report(champion, reference, sample, metrics, params.nightly, params.promote.min_agreement)
    report = log_nightly(params.tracking, report)
    if not report.passed:
        raise reg.RegressionFailed(report)
    return report
