"""The `nightly-regression` Prefect flow: re-validate the deployed champion on the newest footage; a broken gate
fails the run.

Prefect decorators live here only; the logic is in `tasks/operations/regression.py`, whose plain functions the
tests call.
A broken gate raises `RegressionFailed`, so the flow run ends in a visible Failed state (and the scheduled
deployment's run history shows which night it broke).
"""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.common import open_project
from flows.retry import IO_RETRIES
from tasks.operations import regression as reg
from tasks.support.config import Params
from tasks.support.locks import project_lock
from tasks.support.project import Overrides
from tasks.support.tracking import require_store

IO = {**IO_RETRIES, "cache_policy": NO_CACHE}
find_champion = task(reg.find_champion, name="find-champion", **IO)
fetch_reference = task(reg.fetch_reference, name="fetch-reference", **IO)
baseline_videos = task(reg.baseline_videos, name="baseline-videos", **IO)
sample_frames = task(reg.sample_frames, name="sample-frames", cache_policy=NO_CACHE)
measure = task(reg.measure, name="measure", cache_policy=NO_CACHE)
make_report = task(reg.make_report, name="judge", cache_policy=NO_CACHE)
log_nightly = task(reg.log_nightly, name="track", cache_policy=NO_CACHE)
scratch = task(reg.make_scratch, name="scratch", cache_policy=NO_CACHE)
cleanup = task(reg.remove_scratch, name="cleanup", cache_policy=NO_CACHE)


@flow(name="nightly-regression", log_prints=False)
def nightly_regression(
    params_file: str = "params.yaml", overrides: Overrides | None = None, params: Params | None = None
) -> reg.RegressionReport:
    """Re-validate the champion on frames of the newest videos against the FP32 reference and its promotion-time
    numbers; log the run to MLflow; raise `RegressionFailed` (the flow run fails) when a gate is broken."""
    if params is None:
        params = open_project(params_file, overrides, None).params
    p = params.paths
    try:
        report = _check(params)
    except reg.RegressionFailed as e:
        reg.record_verdict(p.nightly_verdict, e.report)
        raise
    except Exception as e:  # could not check: a store down, no champion, a champion this machine cannot run
        reg.record_verdict(p.nightly_verdict, error=e)
        raise
    reg.record_verdict(p.nightly_verdict, report)
    return report


def _check(params: Params) -> reg.RegressionReport:
    """The check itself; `nightly_regression` records its verdict, whichever way it ends."""
    p = params.paths
    # Under the project lock: a rebuild running beside it would share the cores (inflating the latencies that pick
    # its winner) and could move the champion mid-check; the nightly waits for it instead.
    with project_lock(p.rebuild_lock, "nightly check"):
        require_store(params.tracking)  # a missing sqlite file: refused, not created empty
        champion = find_champion(params.promote.gate_dir, params.tracking)
        work = scratch()
        try:
            reference = fetch_reference(params.tracking, champion, params.build.reference, work)
            baseline = baseline_videos(params.tracking, champion)
            sample = sample_frames(
                p.videos, params.extract, params.model.names, p.frame_cache, params.nightly.newest_videos, baseline,
                work,
            )  # fmt: skip
            metrics = measure(champion, reference, sample, p.holdout, params.validate_, work)
        finally:
            cleanup(work)
        report = make_report(champion, reference, sample, metrics, params.nightly)
        report = log_nightly(params.tracking, report)
    if not report.passed:
        raise reg.RegressionFailed(report)
    return report
