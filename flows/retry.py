"""The retry policy: which steps retry, how often, and on which errors. Every flow takes its retry options here.

Only I/O-bound steps retry (fetching the model, reading the MLflow registry, downloading artifacts, `dvc push`),
and only on errors that may pass by themselves: a connection refused or reset, a server restarting, a database
still locked after its busy wait, a download that did not complete. An answer ("no rebuild yet", "no champion"),
a bad input or a bug fails at once: a blind retry would only hide why. CPU-bound steps and steps that create MLflow
runs or move aliases never retry (a retry would duplicate runs or hide the cause).
"""

from __future__ import annotations

from typing import Any

from prefect.tasks import exponential_backoff

_UNREACHABLE = ("max retries exceeded", "connection", "temporarily unavailable", "database is locked", "503", "502")


def transient(exc: BaseException | None) -> bool:
    """Whether `exc` may pass on its own: an OS-level I/O error, an MLflow store that could not be reached or was
    locked, or a task error marked `transient` (a download that failed)."""
    if exc is None:
        return False
    if isinstance(exc, OSError) or getattr(exc, "transient", False):
        return True
    return type(exc).__name__ == "MlflowException" and any(s in str(exc).lower() for s in _UNREACHABLE)


def _retry_when_transient(task: Any, task_run: Any, state: Any) -> bool:
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # the failure itself cannot be read back: not known to be transient
        return False
    return transient(exc if isinstance(exc, BaseException) else None)


IO_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=5),
    "retry_condition_fn": _retry_when_transient,
}
