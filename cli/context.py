"""What every command shares: the params file, parsing it once with the command's overrides, and errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Annotated

import typer

from cli.advice import explain
from cli.printers import ERR
from tasks.support.config import ConfigError
from tasks.support.errors import AlprError
from tasks.support.project import Overrides, Project, load_project

PathOpt = Annotated[Path | None, typer.Option(help="Override the path from params.yaml.")]


class State:
    """The `--params` file; each command parses it once, with its own overrides, when it starts."""

    params_file: Path = Path("params.yaml")

    def project(self, overrides: Overrides | None = None) -> Project:
        """`params.yaml` parsed with `overrides`; a broken file stops the command here (exit 2)."""
        try:
            return load_project(self.params_file, overrides)
        except ConfigError as e:
            ERR.print(f"[red]error:[/red] {explain(e)}")
            raise typer.Exit(2) from e


state = State()


def fail(error: BaseException, code: int = 1) -> typer.Exit:
    """Print the error and what to do about it; the caller raises the returned exit."""
    ERR.print(f"[red]error:[/red] {explain(error)}", soft_wrap=True)
    return typer.Exit(code)


@contextmanager
def guarded() -> Iterator[None]:
    """Turn a task's typed error into its message and advice (exit 1; a params error: exit 2). Anything else is a
    bug and keeps its traceback."""
    try:
        yield
    except ConfigError as e:
        raise fail(e, 2) from e
    except AlprError as e:
        raise fail(e) from e


def locked(project: Project, what: str) -> AbstractContextManager[None]:
    """The project lock (tasks/support/locks.py) for a command that writes the project's data, candidates,
    registry or gate folder: it queues behind any other writer, saying whom it waits for."""
    from tasks.support.locks import project_lock

    return project_lock(project.params.paths.rebuild_lock, what)


def go_offline(project: Project) -> None:
    """Offline settings for Ultralytics, MLflow, Prefect and DVC, before any of them is imported."""
    from tasks.support.offline import configure_offline

    configure_offline(project.params.paths.ultralytics_config)
