"""The exit-code table, the global flags and `alpr-ops doctor` through the installed CLI (no Prefect server: every
case here stops before a flow starts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import free_port, run_cli

pytestmark = pytest.mark.e2e


def test_version_short_help_and_params_after_the_command(tmp_path: Path) -> None:
    assert run_cli(tmp_path, "--version").stdout.startswith("alpr-ops ")
    root_help = run_cli(tmp_path, "-h").stdout
    for panel in ("Set up", "Data", "Build and validate", "Release", "Operate"):
        assert panel in root_help
    assert "doctor" in root_help and "cli.context" not in root_help and "Exit codes" in root_help
    bad = run_cli(tmp_path, "status", "--params", "nope.yaml", "-v", check=False)  # after the subcommand
    assert bad.returncode == 2 and "nope.yaml: not found" in bad.stderr


def test_bad_config_exits_2(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("nightly:\n  min_agreement: high\n")
    done = run_cli(tmp_path, "nightly", check=False)
    assert done.returncode == 2 and "nightly.min_agreement" in done.stderr


def test_a_nightly_run_with_the_store_unreachable_exits_3_and_says_so(
    tmp_path: Path, make_params, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_params(tmp_path, tracking={"uri": f"http://127.0.0.1:{free_port()}"})  # nothing listens there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    done = run_cli(tmp_path, "nightly", "--json", check=False)
    assert done.returncode == 3, done.stderr[-3000:]
    assert "did not answer" in done.stderr and "Traceback" not in done.stderr and done.stdout == ""
    verdict = json.loads((tmp_path / ".cache" / "nightly.json").read_text())
    assert verdict["verdict"] == "could not check" and "did not answer" in verdict["reason"]


def test_doctor_on_a_fresh_clone_names_what_is_missing(tmp_path: Path, make_params) -> None:
    make_params(tmp_path)
    done = run_cli(tmp_path, "doctor", check=False)
    assert done.returncode == 3, done.stdout + done.stderr[-3000:]
    lines = {line.split(":")[0].split()[-1]: line for line in done.stdout.splitlines() if ":" in line}
    assert lines["model"].startswith("FAIL") and "alpr-ops fetch-model" in lines["model"]
    assert lines["videos"].startswith("FAIL") and "sample-videos" in lines["videos"]
    assert "no store yet" in done.stdout and "not ready for a rebuild" in done.stdout
    doc = json.loads(run_cli(tmp_path, "doctor", "--json", check=False).stdout)
    assert doc["ready"] is False and {c["name"] for c in doc["checks"] if c["status"] == "fail"} == {"model", "videos"}
