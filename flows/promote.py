"""The `promote` Prefect flow: gate the latest rebuild's candidates, deploy the winner, move the aliases.

Prefect decorators live here only; the logic is in `tasks/operations/promote.py`, whose plain functions the tests call.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from tasks.operations import promote as promote_tasks
from tasks.pipeline.track import RebuildRecord
from tasks.support import offline
from tasks.support.config import Params

# No caching and no retries: promotion moves registry aliases and the gate's `current` pointer; it is safe to
# re-run by hand (it recovers a killed run's leftovers), but a blind retry would hide why it failed.
stay_offline = task(offline.configure_offline, name="offline", cache_policy=NO_CACHE)


def unreachable(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a registry read that could not reach MLflow (connection refused or reset, server restarting), not one
    that got an answer ("no rebuild yet", a bad query) or hit a bug."""
    exc = state.result(raise_on_failure=False)
    if isinstance(exc, OSError):  # includes requests' ConnectionError and timeouts
        return True
    text = str(exc).lower()
    return type(exc).__name__ == "MlflowException" and any(
        s in text for s in ("max retries exceeded", "connection", "temporarily unavailable", "503", "502")
    )


latest_rebuild = task(
    promote_tasks.require_latest_rebuild,
    name="latest-rebuild",
    cache_policy=NO_CACHE,
    retries=3,  # a registry read: safe to repeat, and an MLflow server may be restarting
    retry_delay_seconds=exponential_backoff(backoff_factor=5),
    retry_condition_fn=unreachable,
)
promote_winner = task(promote_tasks.promote, name="promote", cache_policy=NO_CACHE)


@flow(name="promote", log_prints=False)
def promote(
    params: Params, record: RebuildRecord | None = None, metrics: dict[str, dict[str, Any]] | None = None
) -> promote_tasks.PromoteResult:
    """Promote the winner of `record` (default: the newest finished rebuild in MLflow) to the gate runtime."""
    stay_offline(params.paths.ultralytics_config)
    if record is None or metrics is None:
        record, metrics = latest_rebuild(params.tracking)
    return promote_winner(record, metrics, params.promote, params.tracking, params.paths.holdout, params.validate_)
