"""Prefect deployments for real: a `prefect server start` and a worker on the `gate-cpu` work pool as subprocesses
(server mode), and `alpr-ops serve` (one machine) with its video watcher. Each rebuild here is test-sized."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from conftest import copy_project_code, copy_slowly, free_port, mlflow_server_at
from conftest import run_dvc as dvc

from tasks.support.config import Params

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
EXE = Path(sys.executable).parent
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
FAST_WATCH = {"poll_s": 0.5, "settle_s": 2, "debounce_s": 2}
CANDIDATES = [{"name": "fp32", "precision": "fp32", "backend": "onnxruntime"}]  # the cheapest whole rebuild


def healthy(url: str) -> bool:
    from tasks.operations.prefect_server import healthy as ok

    return ok(url)


def wait_for(cond, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: the process exited ({proc.returncode}):\n{log.read_text()[-4000:] if log else ''}")
        time.sleep(1)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{log.read_text()[-4000:] if log else ''}")


def start(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    fh = open(log, "wb")  # noqa: SIM115  (the process writes to it until the test stops it)
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen, sig: int = signal.SIGINT) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def make_code_project(project: Params, make_params, **sections: dict) -> tuple[Path, Params]:
    """A project folder as a clone holds it: its code (the worker runs `flows/rebuild.py` from there) and params."""
    root = project.paths.videos.parents[1]
    copy_project_code(root)
    params = make_params(
        root,
        build={"imgsz": 160, "candidates": CANDIDATES, "speed_reference": None},
        validate={"imgsz": 160},
        watch=FAST_WATCH,
        **sections,
    )
    return root, params


def make_dvc_repo(root: Path, remote: Path) -> None:
    """git + DVC with a default remote; videos, holdout and model `dvc add`ed and pushed."""
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    dvc(root, "init", "-q")
    dvc(root, "remote", "add", "-d", "store", str(remote))
    shutil.copyfile(REPO / "dvc.yaml", root / "dvc.yaml")
    dvc(root, "add", "-q", "data/videos", "data/holdout", "models/best.pt")
    dvc(root, "push", "-q")


def flow_runs(url: str, deployment: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowRunFilter
    from prefect.settings import PREFECT_API_URL, temporary_settings

    name = deployment.split("/")[1]
    with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(deployment)
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[name])),
            flow_run_filter=FlowRunFilter(),
        )
    return sorted((r for r in runs if r.deployment_id == dep.id), key=lambda r: r.created)


def deployed(url: str, deployment: str):  # -> the deployment, or None
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        try:
            return client.read_deployment_by_name(deployment)
        except ObjectNotFound:
            return None


def assert_deployments(url: str, name: str) -> None:
    """The four deployments exist; the nightly one runs at 02:00 in this machine's time zone; rebuilds queue."""
    import tzlocal

    for flow in ("rebuild", "promote", "rollback"):
        assert deployed(url, f"{flow}/{name}"), flow
    nightly = deployed(url, f"nightly-regression/{name}")
    (schedule,) = [s.schedule for s in nightly.schedules]
    assert schedule.cron == "0 2 * * *" and schedule.timezone == tzlocal.get_localzone_name()
    rebuild = deployed(url, f"rebuild/{name}")
    assert rebuild.global_concurrency_limit.limit == 1
    assert rebuild.concurrency_options.collision_strategy.value == "ENQUEUE"


def state_of(runs: list) -> list[str]:
    return [r.state.type.value if r.state else "?" for r in runs]


@pytest.fixture
def prefect_server(tmp_path: Path, prefect_api: str) -> tuple[str, dict[str, str]]:
    """The session's `prefect server start` (tests/conftest.py): its URL and the env to reach it, with a
    PREFECT_HOME of this test's own. `alpr-ops serve` below starts a server of its own: that start-up is its test."""
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": prefect_api,
           "PREFECT_WORKER_QUERY_SECONDS": "2", "PATH": f"{EXE}{os.pathsep}{os.environ['PATH']}"}  # fmt: skip
    return prefect_api, env


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as s:
        yield s


def test_server_mode_worker_runs_rebuilds_one_at_a_time(
    project: Params, make_params, prefect_server, tmp_path: Path, stack: ExitStack
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.deployments import trigger_rebuild

    url, env = prefect_server
    mlflow_url = stack.enter_context(mlflow_server_at(tmp_path, proxied=True))  # SQL store, proxied artifacts
    root, params = make_code_project(project, make_params, tracking={"uri": mlflow_url})
    remote = tmp_path / "dvc-remote"
    make_dvc_repo(root, remote)
    pushed = {p.name for p in remote.rglob("*") if p.is_file()}
    done = subprocess.run([str(EXE / "alpr-ops"), "deploy"], cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rebuild/gate-cpu" in done.stdout + done.stderr
    assert_deployments(url, "gate-cpu")

    log = tmp_path / "worker.log"
    worker = start([str(EXE / "prefect"), "worker", "start", "--pool", "gate-cpu"], root, env, log)
    try:
        with temporary_settings({PREFECT_API_URL: url}):  # "through the API": two runs queued back to back
            first = trigger_rebuild("rebuild/gate-cpu", root / "params.yaml")
            second = trigger_rebuild("rebuild/gate-cpu", root / "params.yaml")
        runs = wait_for(
            lambda: (r := flow_runs(url, "rebuild/gate-cpu")) and all(s in FINAL for s in state_of(r)) and r,
            900, "both rebuild runs to finish", worker, log,
        )  # fmt: skip
    finally:
        stop(worker)
    assert {str(r.id) for r in runs} == {first, second}
    assert state_of(runs) == ["COMPLETED", "COMPLETED"], log.read_text()[-4000:]
    a, b = runs
    assert a.end_time <= b.start_time or b.end_time <= a.start_time, "two rebuilds of one project ran at once"

    # the first went all the way: the MLflow server has its rebuild, the gate runs a champion downloaded through it;
    # the second had the same inputs: its flow run stopped at its first step, leaving a small run naming the first
    from tasks.pipeline.unchanged import MATCHED_TAG, UNCHANGED_KIND
    from tasks.support.tracking import client

    mc = client(params.tracking)
    exp = mc.get_experiment_by_name(params.tracking.experiment)
    assert exp.artifact_location.startswith("mlflow-artifacts:")  # the server's artifact root, not a local path
    parents = mc.search_runs([exp.experiment_id], "tags.`alpr.kind` = 'rebuild'")
    assert len(parents) == 1
    unchanged = mc.search_runs([exp.experiment_id], f"tags.`alpr.kind` = '{UNCHANGED_KIND}'")
    assert [r.data.tags[MATCHED_TAG] for r in unchanged] == [parents[0].info.run_id]
    assert (params.promote.gate_dir / "current" / "manifest.json").is_file()
    assert any((tmp_path / "server-artifacts").rglob("*.onnx"))
    # DVC: the flow committed its outputs and pushed them to the remote
    assert "calibration" in (root / "dvc.lock").read_text()
    assert {p.name for p in remote.rglob("*") if p.is_file()} > pushed


def test_serve_watches_videos_and_rebuilds_once_per_landing(project: Params, make_params, tmp_path, sample_data):
    root, params = make_code_project(project, make_params)
    port = free_port()
    doc = (root / "params.yaml").read_text().replace("port: 4200", f"port: {port}")
    (root / "params.yaml").write_text(doc)
    url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if k not in {"PREFECT_API_URL", "PREFECT_HOME"}}
    env["PATH"] = f"{EXE}{os.pathsep}{os.environ['PATH']}"
    env["PREFECT_RUNNER_POLL_FREQUENCY"] = "2"
    log = tmp_path / "serve.log"
    served = start([str(EXE / "alpr-ops"), "serve"], root, env, log)
    try:
        wait_for(lambda: healthy(url) and b"watching" in log.read_bytes(), 180, "alpr-ops serve", served, log)
        flows = ("rebuild", "nightly-regression", "promote", "rollback")  # serve registers them one by one
        wait_for(lambda: all(deployed(url, f"{f}/serve") for f in flows), 60, "the served deployments", served, log)
        assert_deployments(url, "serve")
        assert flow_runs(url, "rebuild/serve") == []  # the videos already there start nothing
        src = sorted((sample_data / "videos").iterdir())[0]
        copied_at = copy_slowly(src, params.paths.videos / "landed.mp4", chunks=5, pause_s=0.8)  # pauses < settle_s
        runs = wait_for(
            lambda: (r := flow_runs(url, "rebuild/serve")) and all(s in FINAL for s in state_of(r)) and r,
            600, "the rebuild the new video starts", served, log,
        )  # fmt: skip
        # nothing more may start: the watcher records what it triggered for, so once its state is the folder as it
        # is now, no change is pending (a change would have made it trigger, and queue a run, before saving)
        from tasks.operations.watch import load_state, scan

        wait_for(
            lambda: load_state(params.paths.watch_state) == scan(params.paths.videos),
            FAST_WATCH["settle_s"] + FAST_WATCH["debounce_s"] + 30, "the watcher to settle", served, log,
        )  # fmt: skip
        runs = flow_runs(url, "rebuild/serve")
    finally:
        stop(served)
    assert len(runs) == 1, state_of(runs)
    assert state_of(runs) == ["COMPLETED"], log.read_text()[-4000:]
    assert runs[0].created.timestamp() >= time.time() - (time.monotonic() - copied_at) - 1  # after the copy ended
    state = json.loads(params.paths.watch_state.read_text())
    assert "landed.mp4" in state["videos"]
    assert not healthy(url), "alpr-ops serve left its Prefect server running"
