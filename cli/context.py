"""What every command shares: the params file, parsing it once with the command's overrides, and errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import typer

from cli.advice import explain
from cli.exit_codes import ExitCode, code_for, store_error
from cli.printers import ERR
from tasks.support.config import ConfigError
from tasks.support.errors import AlprError
from tasks.support.project import Overrides, Project, load_project


class State:
    """The `--params` file; each command parses it once, with its own overrides, when it starts."""

    params_file: Path = Path("params.yaml")

    def project(self, overrides: Overrides | None = None) -> Project:
        """`params.yaml` parsed with `overrides`; a broken file stops the command here (exit 2)."""
        try:
            return load_project(self.params_file, overrides)
        except ConfigError as e:
            ERR.print(f"[red]error:[/red] {explain(e)}")
            raise typer.Exit(ExitCode.USAGE) from e


state = State()


def fail(error: BaseException, code: int | None = None) -> typer.Exit:
    """Print the error and what to do about it; the caller raises the returned exit (its code from the one table,
    `cli/exit_codes.py`, unless given)."""
    from tasks.support.config import redact_text

    ERR.print(f"[red]error:[/red] {redact_text(explain(error))}", soft_wrap=True)
    return typer.Exit(code_for(error) if code is None else code)


STORE_ADVICE = (
    "The MLflow store (tracking.uri in params.yaml) did not answer: check that its server is running and reachable, "
    "or that no other process holds its database locked, then run the command again. Nothing was changed by this run."
)


@contextmanager
def guarded() -> Iterator[None]:
    """Turn a task's typed error into its message, its advice and its exit code (`cli/exit_codes.py`); an MLflow
    store that is down or locked too (exit 3). Anything else is a bug and keeps its traceback."""
    try:
        yield
    except (ConfigError, AlprError) as e:
        raise fail(e) from e
    except Exception as e:
        if not store_error(e):
            raise
        from tasks.support.config import redact_text

        ERR.print(f"[red]error:[/red] {type(e).__name__}: {redact_text(str(e))}\n{STORE_ADVICE}", soft_wrap=True)
        raise typer.Exit(ExitCode.UNAVAILABLE) from e


def locked(project: Project, what: str) -> AbstractContextManager[None]:
    """The project lock (tasks/support/locks.py) for a command that writes the project's data, candidates,
    registry or gate folder: it queues behind any other writer, saying whom it waits for."""
    from tasks.support.locks import project_lock

    return project_lock(project.params.paths.rebuild_lock, what)


def go_offline(project: Project) -> None:
    """Offline settings for Ultralytics, MLflow, Prefect and DVC, before any of them is imported."""
    from tasks.support.offline import configure_offline

    configure_offline(project.params.paths.ultralytics_config)
