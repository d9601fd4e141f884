"""The one exit-code table of `alpr-ops`: what a script, cron or CI job running a command can tell apart.

| code | meaning                                                                                       |
|------|-----------------------------------------------------------------------------------------------|
| 0    | done (for `nightly`: the champion passed every gate; for `doctor`: a rebuild can run)          |
| 1    | a verdict against the product: no candidate passed the gates, a nightly regression             |
| 2    | bad usage or configuration: an unknown flag, a broken or missing params.yaml, a bad value      |
| 3    | could not check or could not run: a store or server that does not answer, a missing input, no  |
|      | champion to check, a champion this machine cannot run, a lock held by another run              |
| 70   | internal error: a bug in alpr-ops (sysexits' EX_SOFTWARE); one line says so and where to report |
|      | it, `-v` logs the traceback                                                                    |

Every error a person acts on is typed and mapped to 1, 2 or 3; anything else is a crash, never read as a verdict.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """`alpr-ops`'s exit codes (the table above)."""

    OK = 0
    VERDICT = 1  # the product failed a check: no candidate passed, the champion regressed
    USAGE = 2  # bad usage or configuration (click's own usage errors exit 2 as well)
    UNAVAILABLE = 3  # could not check or could not run
    INTERNAL = 70  # a crash: a bug in alpr-ops (sysexits.h EX_SOFTWARE), distinct from every verdict


def code_for(error: BaseException) -> ExitCode:
    """The exit code of a command that stopped on `error` (a task's typed error, a store error, a params error; an
    operating-system error such as a full disk could not run; anything else is a bug)."""
    from tasks.operations.promote import NotPending
    from tasks.operations.regression import RegressionFailed
    from tasks.support.errors import AlprError, Remedy
    from tasks.support.tracking import StoreMissing

    if isinstance(error, RegressionFailed):
        return ExitCode.VERDICT
    if isinstance(error, ValueError | NotPending):  # params.yaml (ConfigError), a flag's value the task refused
        return ExitCode.USAGE
    if isinstance(error, StoreMissing):  # no store yet (before the first rebuild) or a typo: nothing could be checked
        return ExitCode.UNAVAILABLE
    if isinstance(error, AlprError) and error.remedy in (Remedy.PARAMS, Remedy.OUTPUT_FOLDER):
        return ExitCode.USAGE  # a setting (or the flag overriding it) must change
    if isinstance(error, AlprError | OSError) or store_error(error):
        return ExitCode.UNAVAILABLE
    if type(error).__module__.startswith("prefect"):  # Prefect could not run it (a crashed or cancelled run)
        return ExitCode.UNAVAILABLE
    return ExitCode.INTERNAL


def store_error(error: BaseException) -> bool:
    """Whether `error` comes from the MLflow store (an MlflowException, a database error under it, a connection
    error to the server): not a bug, but a store that is down, locked or refusing."""
    for exc in (error, error.__cause__, error.__context__):
        if exc is None:
            continue
        module = type(exc).__module__
        if module.startswith(("mlflow", "sqlalchemy", "sqlite3", "requests", "urllib3")):
            return True
    return False
