"""Issue 15, defect 8: `alpr-ops status` prints advice, not a traceback, when the MLflow store is down, and the
tracking URI's credentials appear in no output or log (rollback's error without a traceback: test_project_lock.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import free_port

pytestmark = pytest.mark.integration


def test_a_store_that_is_down_gives_advice_and_no_credentials(tmp_path: Path, make_params, cli, monkeypatch) -> None:
    uri = f"http://gate-admin:s3cret-pw@127.0.0.1:{free_port()}"  # nothing listens there
    make_params(tmp_path, tracking={"uri": uri})
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    done = cli(tmp_path, "status", check=False)
    out = done.stdout + done.stderr
    assert done.returncode == 3, out[-3000:]  # could not check: the store did not answer
    assert "Traceback" not in out and "╭" not in out, out[-3000:]  # neither Python's nor rich's traceback
    assert "did not answer" in out and "run the command again" in out, out[-3000:]
    assert "s3cret-pw" not in out and "gate-admin" not in out, out[-3000:]
