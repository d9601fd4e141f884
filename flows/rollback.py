"""The `rollback` flow: move `current` and the `champion` alias back one release (`alpr-ops rollback`, the
`rollback` deployment)."""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.common import open_project
from tasks.operations.rollback import RollbackResult
from tasks.operations.rollback import rollback as rollback_release
from tasks.support.config import Params
from tasks.support.locks import project_lock
from tasks.support.project import Overrides
from tasks.support.tracking import require_store

roll_back = task(rollback_release, name="rollback", cache_policy=NO_CACHE)  # moves aliases: never retried


@flow(name="rollback", log_prints=False)
def rollback(
    params_file: str = "params.yaml", overrides: Overrides | None = None, params: Params | None = None
) -> RollbackResult:
    """Point `current` and `champion` back at the `previous` version, in one step (logged to MLflow)."""
    if params is None:
        params = open_project(params_file, overrides, None).params
    with project_lock(params.paths.rebuild_lock, "rollback"):  # queues behind a rebuild or a promotion
        require_store(params.tracking, "nothing to roll back to")  # a missing sqlite file: refused, not created
        return roll_back(params.promote, params.tracking, params.paths.holdout, params.validate_)
