"""The `promote` flow: gate the latest rebuild's candidates, deploy the winner, move the aliases.

The one `promote` flow object: run alone (`alpr-ops promote`, the `promote` deployment) it parses `params.yaml`
and reads the newest rebuild from MLflow; inside `rebuild` it receives the parsed params and that rebuild's record.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.common import open_project
from flows.retry import IO_RETRIES
from tasks.operations import promote as promotion
from tasks.pipeline import tradeoff
from tasks.pipeline.track import RebuildRecord
from tasks.support.config import Params
from tasks.support.locks import project_lock
from tasks.support.project import Overrides

# No caching and no retries: promotion moves registry aliases and the gate's `current` pointer; it is safe to
# re-run by hand (it recovers a killed run's leftovers), but a blind retry would hide why it failed.
latest_rebuild = task(promotion.require_latest_rebuild, name="latest-rebuild", cache_policy=NO_CACHE, **IO_RETRIES)
promote_winner = task(promotion.promote, name="promote", cache_policy=NO_CACHE)
approve_pending = task(promotion.approve, name="approve", cache_policy=NO_CACHE)
tradeoff_chart = task(tradeoff.log_tradeoff, name="tradeoff-chart", cache_policy=NO_CACHE, **IO_RETRIES)
# after a refused promotion: one try, and only when the store answered (its own error is the one to report)
chart_after_refusal = task(tradeoff.chart_after_refusal, name="tradeoff-chart-after-refusal", cache_policy=NO_CACHE)


@flow(name="promote", log_prints=False)
def promote(
    params_file: str = "params.yaml",
    overrides: Overrides | None = None,
    params: Params | None = None,
    record: RebuildRecord | None = None,
    metrics: dict[str, dict[str, Any]] | None = None,
    attended: bool = False,
    approve: str | None = None,
) -> promotion.PromoteResult:
    """Promote the winner of `record` (default: the newest finished rebuild in MLflow) to the gate runtime, then
    draw the rebuild's trade-off chart with the verdicts on its parent run.

    `attended`: a person started this run and agreed beforehand (`--yes`); the deployment's runs (the watcher's,
    a schedule's) are unattended: a winner slower than the champion, or an FP32 one replacing an INT8 champion, is
    then kept as a pending decision. `approve`: deploy that pending version instead (a person looked: `alpr-ops
    promote --approve VERSION`, or this deployment run from the Prefect UI with `approve` set)."""
    if params is None:
        params = open_project(params_file, overrides, None).params
    p = params.paths
    with project_lock(p.rebuild_lock, "promote"):  # queues behind a rebuild; re-entered inside one
        if approve is not None:
            return approve_pending(
                str(approve), params.promote, params.tracking, p.holdout, params.validate_, params.build.reference,
                p.holdout_frames,
            )  # fmt: skip
        if record is None or metrics is None:
            record, metrics = latest_rebuild(params.tracking)
        chart = (params.tracking, params.promote, params.build.reference, record.parent_run_id)
        try:
            result = promote_winner(
                record, metrics, params.promote, params.tracking, p.holdout, params.validate_, params.build.reference,
                p.holdout_frames, attended,
            )  # fmt: skip
        except Exception as e:  # the chart also names the gate that refused the winner (smoke test, verification)
            chart_after_refusal(*chart, refusal=e)
            raise
        tradeoff_chart(*chart)
        return result
