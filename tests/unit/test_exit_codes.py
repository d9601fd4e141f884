"""The one exit-code table (cli/exit_codes.py) and the global flags accepted after the subcommand."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.exceptions import CrashedRun

from cli.app import hoist_global_flags
from cli.exit_codes import ExitCode, code_for
from tasks.operations.promote import NotPending
from tasks.operations.regression import RegressionError, RegressionFailed, RegressionReport
from tasks.support.config import ConfigError
from tasks.support.errors import AlprError, LockBusy, Remedy
from tasks.support.registry import RegistryError
from tasks.support.tracking import StoreMissing, StoreUnavailable


def _report() -> RegressionReport:
    return RegressionReport(False, (), {}, "3", "ov-int8", "ref", ("a.mp4",), 10, "newest")


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (RegressionFailed(_report()), ExitCode.VERDICT),
        (ConfigError("params.yaml: extract.intervall_s: unknown key"), ExitCode.USAGE),
        (ValueError("n >= 1"), ExitCode.USAGE),
        (AlprError("a setting must change", remedy=Remedy.PARAMS), ExitCode.USAGE),
        (NotPending("version 3 is not the pending decision"), ExitCode.USAGE),  # --approve names the wrong version
        (StoreUnavailable("the MLflow store did not answer"), ExitCode.UNAVAILABLE),
        (RegistryError("registry unreadable"), ExitCode.UNAVAILABLE),
        (StoreMissing("tracking.uri names no MLflow store"), ExitCode.UNAVAILABLE),
        (RegressionError("no champion is deployed", remedy=Remedy.PROMOTE), ExitCode.UNAVAILABLE),
        (LockBusy("held"), ExitCode.UNAVAILABLE),
        (AlprError("model not found", remedy=Remedy.FETCH_MODEL), ExitCode.UNAVAILABLE),
        (OSError(28, "No space left on device"), ExitCode.UNAVAILABLE),  # could not run
        (CrashedRun("the flow run's process was killed"), ExitCode.UNAVAILABLE),  # Prefect could not run it
        (KeyError("champion"), ExitCode.INTERNAL),  # a bug, never read as a verdict
    ],
)
def test_each_error_has_its_code(error: BaseException, code: ExitCode) -> None:
    assert code_for(error) == code


def test_the_table_is_0_1_2_3_and_70_for_a_crash() -> None:
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 70]


CRASH = """
import sys
import tasks.operations.status as status

def boom(*args, **kwargs):
    raise KeyError("a bug")

status.status = boom
from cli.app import app
sys.argv[0] = "alpr-ops"
app()
"""


@pytest.mark.parametrize("verbose", [False, True])
def test_a_crash_exits_70_with_one_line_and_the_traceback_only_with_v(tmp_path: Path, make_params, verbose) -> None:
    """An exception no task typed (a bug) in a command: exit 70, not 1 like a verdict; one line says so and where
    to report it; the traceback is in the log with -v."""
    make_params(tmp_path)
    root = Path(__file__).resolve().parents[2]
    args = [sys.executable, "-c", CRASH, *(["-v"] if verbose else []), "status"]
    done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=_env(root))
    assert done.returncode == ExitCode.INTERNAL, done.stderr[-3000:]
    assert "internal error: KeyError: 'a bug'" in done.stderr and "report it" in done.stderr, done.stderr[-3000:]
    assert ("Traceback" in done.stderr) is verbose, done.stderr[-3000:]
    assert done.stdout == ""


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}


def test_params_and_verbose_move_before_the_subcommand() -> None:
    assert hoist_global_flags(["status", "--params", "p.yaml", "-v", "--json"]) == [
        "--params", "p.yaml", "-v", "status", "--json"
    ]  # fmt: skip
    assert hoist_global_flags(["gc", "--params=p.yaml", "--verbose"]) == ["--params=p.yaml", "--verbose", "gc"]
    assert hoist_global_flags(["repro", "--", "-v"]) == ["repro", "--", "-v"]  # after `--`: the command's own
    assert hoist_global_flags(["-v", "status"]) == ["-v", "status"]
