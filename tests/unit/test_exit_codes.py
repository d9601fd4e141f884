"""The one exit-code table (cli/exit_codes.py) and the global flags accepted after the subcommand."""

from __future__ import annotations

import pytest

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
    ],
)
def test_each_error_has_its_code(error: BaseException, code: ExitCode) -> None:
    assert code_for(error) == code


def test_the_table_is_0_1_2_3() -> None:
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3]


def test_params_and_verbose_move_before_the_subcommand() -> None:
    assert hoist_global_flags(["status", "--params", "p.yaml", "-v", "--json"]) == [
        "--params", "p.yaml", "-v", "status", "--json"
    ]  # fmt: skip
    assert hoist_global_flags(["gc", "--params=p.yaml", "--verbose"]) == ["--params=p.yaml", "--verbose", "gc"]
    assert hoist_global_flags(["repro", "--", "-v"]) == ["repro", "--", "-v"]  # after `--`: the command's own
    assert hoist_global_flags(["-v", "status"]) == ["-v", "status"]
