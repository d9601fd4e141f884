"""Prefect deployments of the four flows, served from one process (`alpr-ops serve`) or sent to work pools.

Each deployment passes the path of the project's `params.yaml`, parsed when a run starts, so an edit applies to
the next run without redeploying. They run the same flow objects as the CLI (`flows/rebuild.py`, ...):

- `alpr-ops serve` (one machine, the embedded default): a local Prefect server on 127.0.0.1, the four deployments
  served from one process (`<flow>/serve`), and the video watcher.
- server mode: `prefect server start`, then `alpr-ops deploy` registers the deployments on the work pool of the
  project's gate hardware (`serve.work_pools[build.backend]`, e.g. `rebuild/gate-cpu`); a worker on that hardware
  (`prefect worker start --pool gate-cpu`) runs them, so engines are built and timed where they will run.
- TensorRT built on the gate (any candidate with `backend: tensorrt`, its own or `build.backend`, and
  `build.tensorrt_on: gate`): `alpr-ops deploy` also registers `gate-build/<serve.work_pools.tensorrt>`
  (`flows/gate_build.py`), which a Jetson's worker runs without PyTorch: the host asks it for each engine.

Every run of these deployments is unattended (`attended: false`, passed explicitly): a rebuild's winner that is
slower than the champion, or an FP32 one replacing an INT8 champion, is left as a pending decision
(docs/promotion.md). To approve it from the Prefect UI: the `promote` deployment, "Custom run", `approve` set to
the pending version (`alpr-ops status` names it); the same as `alpr-ops promote --approve VERSION`.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.schedules import Cron

from flows.gate_build import gate_build
from flows.nightly import nightly_regression
from flows.promote import promote
from flows.rebuild import rebuild
from flows.rollback import rollback
from tasks.support.config import ConfigError, Params
from tasks.support.project import Overrides

log = logging.getLogger(__name__)

# flow object, its entrypoint (what a worker imports), the concurrency limit of its deployment
FLOWS: tuple[tuple[Any, str, Any], ...] = (
    # one rebuild of a project at a time: a second run waits in the queue (AwaitingConcurrencySlot)
    (
        rebuild,
        "flows/rebuild.py:rebuild",
        ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
    ),
    (nightly_regression, "flows/nightly.py:nightly_regression", None),
    (promote, "flows/promote.py:promote", 1),
    (rollback, "flows/rollback.py:rollback", 1),
)
GATE_BUILD = (gate_build, "flows/gate_build.py:gate_build")  # on the gate pool (tasks.pipeline.gate_remote)


def nightly_schedule(params: Params) -> Cron:
    """`nightly.cron` in `nightly.timezone`, or in this machine's local time zone (Prefect's default would be UTC)."""
    tz = params.nightly.timezone
    if tz is None:
        import tzlocal

        tz = tzlocal.get_localzone_name()
    return Cron(params.nightly.cron, timezone=tz)


def _settings(params: Params, fn: Any, limit: Any) -> dict[str, Any]:
    schedules = [nightly_schedule(params)] if fn is nightly_regression else None
    return {"schedules": schedules, "concurrency_limit": limit}


UNATTENDED = (rebuild, promote)  # flows whose deployment runs say so explicitly: no person is there to agree


def _parameters(fn: Any, params_file: Path) -> dict[str, Any]:
    """A deployment's parameters: the params file, and `attended: false` for those that may promote."""
    parameters: dict[str, Any] = {"params_file": str(params_file.resolve())}
    return parameters | ({"attended": False} if fn in UNATTENDED else {})


def runner_deployments(params: Params, params_file: Path, name: str = "serve") -> list[Any]:
    """The four deployments, for `prefect.serve` in this process (`alpr-ops serve`)."""
    return [
        fn.to_deployment(name=name, parameters=_parameters(fn, params_file), **_settings(params, fn, limit))
        for fn, _, limit in FLOWS
    ]


def work_pool_for(params: Params) -> str:
    """The work pool of the gate hardware this project builds for."""
    pools = params.serve.work_pools
    if params.build.backend not in pools:
        raise ConfigError(
            f"serve.work_pools has no pool for build.backend {params.build.backend!r} (it maps {sorted(pools)}); "
            f"add one, e.g. {{{params.build.backend}: gate-...}}"
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
    names = []
    for fn, entrypoint, limit in FLOWS:
        source = fn.from_source(source=str(root.resolve()), entrypoint=entrypoint)
        source.deploy(
            name=pool,
            parameters=_parameters(fn, params_file),
            work_pool_name=pool,
            build=False,
            push=False,
            print_next_steps=False,
            **_settings(params, fn, limit),
        )
        names.append(f"{fn.name}/{pool}")
    log.info("deployed %s on work pool %s", ", ".join(names), pool)
    if needs_gate_build(params):
        names.append(deploy_gate_build(params, root))
    return names


def needs_gate_build(params: Params) -> bool:
    """Whether any candidate's engine is built on the gate (`backend: tensorrt`, its own or `build.backend`, with
    `build.tensorrt_on: gate`): then the gate pool needs the `gate-build` deployment, whatever `build.backend` is."""
    return any(params.build.built_on_gate(c) for c in params.build.candidates)


def deploy_gate_build(params: Params, root: Path) -> str:
    """Register the gate-build flow on the gate boxes' pool (`serve.work_pools.tensorrt`, created if missing): one
    deployment that every gate worker of that hardware can run; its runs take parameters, not a params file."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    from tasks.pipeline.gate_remote import gate_pool

    pool = gate_pool(params)
    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    fn, entrypoint = GATE_BUILD
    fn.from_source(source=str(root.resolve()), entrypoint=entrypoint).deploy(
        name=pool, work_pool_name=pool, build=False, push=False, print_next_steps=False
    )
    log.info("deployed %s/%s on work pool %s", fn.name, pool, pool)
    return f"{fn.name}/{pool}"


def trigger_rebuild(deployment: str, params_file: Path, videos: Path | None = None) -> str:
    """Queue a run of the `rebuild` deployment (returns at once); the deployment's limit queues it behind a running
    one. Returns the flow run id."""
    from prefect.deployments import run_deployment

    parameters: dict[str, Any] = {"params_file": str(params_file.resolve()), "attended": False}  # no one to ask
    if videos is not None:
        parameters["overrides"] = Overrides.of(videos=videos.resolve()).model_dump(mode="json")
    run = run_deployment(deployment, parameters=parameters, timeout=0, as_subflow=False, tags=["watcher"])
    log.info("queued %s run %s (%s)", deployment, run.name, run.id)
    return str(run.id)
