"""Issue items 1 and 8: the MLflow password in `tracking.uri` is shown nowhere (status, its JSON, the report's files
and stdout, MLflow's "View run at" line, Prefect parameters of the flows and of the gate-build deployment), and a
store that does not answer fails within its bound with the store named; a sqlite path that does not exist is
refused by the commands that only read the store, never created empty. Real `mlflow server`, real sqlite, real
Prefect, the installed CLI."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port, mlflow_server_at

from tasks.support.config import Params, TrackingConfig

pytestmark = pytest.mark.integration

SECRET, USER = "S3cretPw0rd", "alice"
HTTP_ENV = ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR")


def log_small_rebuild(tracking: TrackingConfig) -> str:
    """A finished rebuild as `log_rebuild` records it, without building models: a parent run and one candidate
    run with its metrics. Returns the parent run's id."""
    from tasks.support.tracking import KIND_TAG, PARENT_TAG, RUN_NAME_TAG, client, experiment_id

    mc = client(tracking)
    exp = experiment_id(mc, tracking)
    parent = mc.create_run(exp, tags={KIND_TAG: "rebuild", RUN_NAME_TAG: "rebuild-secret", "frames_hash": "f" * 16})
    pid = parent.info.run_id
    child = mc.create_run(
        exp, tags={PARENT_TAG: pid, "candidate": "fp32", "backend": "onnxruntime", "precision": "fp32"}
    )
    for key, value in {"map50": 0.9, "map50_95": 0.7, "latency_p50_ms": 12.0}.items():
        mc.log_metric(child.info.run_id, key, value)
    mc.set_terminated(child.info.run_id)
    mc.set_terminated(pid)
    return pid


@pytest.fixture
def secret_server(tmp_path: Path, make_params) -> Iterator[tuple[Params, str]]:
    """A real `mlflow server` holding one small rebuild, and a project whose tracking.uri carries a password."""
    with mlflow_server_at(tmp_path) as url:
        uri = url.replace("http://", f"http://{USER}:{SECRET}@")
        params = make_params(tmp_path / "project", tracking={"uri": uri})
        yield params, log_small_rebuild(params.tracking)


def assert_no_secret(text: str, where: str) -> None:
    assert SECRET not in text and f"{USER}:" not in text, f"{where} shows the credentials:\n{text[-3000:]}"


def test_no_output_or_file_shows_the_password(secret_server, cli, capfd: pytest.CaptureFixture[str]) -> None:
    from tasks.support.tracking import client, small_run

    params, pid = secret_server
    root = params.paths.videos.parents[1]
    done = cli(root, "status", "--json")
    assert_no_secret(done.stdout + done.stderr, "status --json")
    info = json.loads(done.stdout)
    host = params.tracking.uri.rpartition("@")[2]
    assert info["rebuild"]["mlflow_run_id"] == pid and info["rebuild"]["mlflow_url"].startswith(f"http://{host}/#/")
    done = cli(root, "status")
    assert_no_secret(done.stdout + done.stderr, "status")
    assert f"MLflow runs: http://{host}/#/experiments/" in done.stdout and "fp32" in done.stdout

    done = cli(root, "report", "--reports", str(root / "reports"))
    assert_no_secret(done.stdout + done.stderr, "report")
    folder = root / "reports" / pid
    for name in ("report.html", "report.md"):
        text = (folder / name).read_text()
        assert_no_secret(text, name)
        assert f"http://{host}/#/experiments/" in text, name

    # MLflow's own "View run ... at: <server URL>" line, printed to stdout when a run on a server ends
    capfd.readouterr()
    with small_run(client(params.tracking), params.tracking, "test", "secret-run", {}):
        pass
    out = capfd.readouterr()
    assert_no_secret(out.out + out.err, "a small run's end")


def test_no_prefect_parameter_holds_the_password(secret_server, cli, prefect_api: str) -> None:
    """The gate-build deployment's run and the flows run by the CLI (their `params`) record the URI redacted."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort

    from flows.deployments import deploy_gate_build
    from tasks.pipeline.gate_remote import GateUnavailable, request_gate_build

    params, _ = secret_server
    pool = f"gate-orin-{uuid.uuid4().hex[:8]}"  # a pool of its own: no worker serves it, the run is cancelled
    params = params.model_copy(update={"serve": params.serve.model_copy(update={"work_pools": {"tensorrt": pool}})})
    deploy_gate_build(params, Path(__file__).resolve().parents[2])
    with pytest.raises(GateUnavailable):
        request_gate_build(params, "run-secret", timeout_s=2)
    root = params.paths.videos.parents[1]
    done = cli(root, "rollback", check=False)  # nothing to roll back to: the flow run and its parameters remain
    assert done.returncode == 3 and "nothing to roll back to" in done.stderr, done.stderr[-3000:]
    assert_no_secret(done.stdout + done.stderr, "rollback")
    host = params.tracking.uri.rpartition("@")[2]  # 127.0.0.1:<this test's server port>
    with get_client(sync_client=True) as client:  # the newest runs (other tests share the session's server)
        runs = client.read_flow_runs(sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=100)
    mine = [r for r in runs if host in json.dumps(r.parameters, default=str)]
    assert any(r.parameters.get("run_id") == "run-secret" for r in mine), "the gate-build run was not found"
    assert any("params" in r.parameters for r in mine), "the rollback flow's run was not found"
    for run in mine:
        assert_no_secret(json.dumps(run.parameters, default=str), f"flow run {run.name}'s parameters")
    gate = [r for r in mine if r.parameters.get("run_id") == "run-secret"]
    assert all(r.parameters["tracking_uri"] == f"http://***@{host}" for r in gate)


def test_a_locked_sqlite_store_fails_after_the_busy_wait_naming_the_store(tmp_path: Path, make_params, cli) -> None:
    """README: a database still locked after MLflow's 20 s busy wait stops status and rollback with an error naming
    the store (not a raw OperationalError after 5 s). `status` waits out the default busy wait; `rollback` runs on a
    URI that sets its own `timeout` (2 s), which the client keeps instead of the default."""
    from tasks.support.tracking import STORE_WAIT_S, client, experiment_id

    params = make_params(tmp_path)
    experiment_id(client(params.tracking), params.tracking)  # the store exists, with the experiment
    db_path = tmp_path / "mlflow.db"
    db = sqlite3.connect(db_path, isolation_level=None, timeout=0)
    db.execute("BEGIN EXCLUSIVE")
    try:
        for command, uri, wait in (
            ("status", params.tracking.uri, STORE_WAIT_S),
            ("rollback", f"sqlite:///{db_path}?timeout=2", 2),
        ):
            make_params(tmp_path, tracking={"uri": uri})
            start = time.monotonic()
            done = cli(tmp_path, command, check=False)
            took = time.monotonic() - start
            out = done.stdout + done.stderr
            assert done.returncode == 3, out[-3000:]
            assert "Traceback" not in out and "OperationalError: (sqlite3" not in out, out[-3000:]
            assert f"the MLflow store sqlite:///{db_path}" in out and "did not answer" in out, out[-3000:]
            assert wait <= took < wait + 60, f"{command} failed after {took:.1f} s (busy wait {wait} s)"
            if command == "rollback":
                assert took < STORE_WAIT_S, f"the URI's own timeout=2 was not kept: {took:.1f} s"
    finally:
        db.execute("ROLLBACK")
        db.close()


def test_a_closed_server_port_fails_within_the_bound_naming_the_store(
    tmp_path: Path, make_params, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow's own defaults retry a refused connection for about 4 minutes; the client's bound: seconds."""
    for key in HTTP_ENV:
        monkeypatch.delenv(key, raising=False)  # MLflow's defaults, as a user has them
    port = free_port()  # nothing listens there
    make_params(tmp_path, tracking={"uri": f"http://{USER}:{SECRET}@127.0.0.1:{port}"})
    start = time.monotonic()
    done = cli(tmp_path, "status", check=False)
    took = time.monotonic() - start
    out = done.stdout + done.stderr
    assert done.returncode == 3 and "Traceback" not in out, out[-3000:]
    assert f"the MLflow store http://***@127.0.0.1:{port}" in out and "did not answer" in out, out[-3000:]
    assert_no_secret(out, "status")
    assert took < 60, f"status failed after {took:.1f} s"


@pytest.mark.parametrize("command", ["status", "report", "gc", "rollback", "nightly"])
def test_a_sqlite_path_that_does_not_exist_is_refused_not_created(
    command: str, tmp_path: Path, make_params, cli
) -> None:
    """A typo in the store's path (`mlfow.db`) must not create an empty store that then reads as "no champion"."""
    make_params(tmp_path, tracking={"uri": "sqlite:///mlfow.db"})
    done = cli(tmp_path, command, check=False)
    out = done.stdout + done.stderr
    assert done.returncode != 0 and "Traceback" not in out, out[-3000:]
    assert f"tracking.uri sqlite:///{tmp_path / 'mlfow.db'} names no MLflow store" in out, out[-3000:]
    assert not (tmp_path / "mlfow.db").exists()
