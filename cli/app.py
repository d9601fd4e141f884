"""`alpr-ops`: one CLI over every step. Each command parses `params.yaml` once (`cli.context.State`) with its
flags as overrides, and passes typed config to the tasks or runs a flow.

Paths default to `params.yaml` and every one can be overridden by a flag, which is how `dvc.yaml` stages call it.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.logging import RichHandler

from cli.commands import data, label, ops, pipeline, release
from cli.context import state
from cli.printers import ERR

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


class _RunName(logging.Filter):
    """Prefix Prefect's run messages with the step's run name ("build-4ea: Finished in state Cached()")."""

    def filter(self, record: logging.LogRecord) -> bool:
        name = getattr(record, "task_run_name", None) or getattr(record, "flow_run_name", None)
        if name and not getattr(record, "alpr_prefixed", False):
            record.msg, record.alpr_prefixed = f"{name}: {record.msg}", True
        return True


class _Redact(logging.Filter):
    """No credentials of a URI (a tracking URI may hold them) reach the terminal, whoever logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        from tasks.support.config import redact_text

        message = record.getMessage()
        if "://" in message:
            record.msg, record.args = redact_text(message), None
        return True


class _NoTracebackForKnownErrors(logging.Filter):
    """Prefect logs a failed task's or flow's exception with its traceback; for an error a person acts on (a task's
    typed error, an MLflow store that is down or locked) the CLI prints the message and the advice instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            from cli.context import store_error
            from tasks.support.errors import AlprError

            exc = record.exc_info[1]
            if isinstance(exc, AlprError) or store_error(exc):
                record.exc_info, record.exc_text = None, None
        return True


@app.callback()
def main(
    params: Annotated[Path, typer.Option("--params", help="The parameters file.")] = Path("params.yaml"),
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """MLOps workflow for the INT8 plate detector of parking-gate cameras."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=ERR, show_path=False, rich_tracebacks=True)],
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(_RunName())
        handler.addFilter(_NoTracebackForKnownErrors())
        handler.addFilter(_Redact())
    # One readable line per step: silence per-request and per-layer chatter from the libraries underneath.
    for noisy in ("httpx", "httpcore", "alembic", "mlflow.store.db.utils", "dvc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "no CUDA runtime": expected on CPU
    warnings.filterwarnings("ignore", category=FutureWarning)
    from tasks.support.offline import set_offline_env

    set_offline_env()  # before any command touches MLflow, Prefect or DVC, which read these at import
    # Prefect's temporary local server migrates a fresh database first: on a busy 2-core machine that takes longer
    # than its 20 s default. A user's own setting wins.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    state.params_file = params


app.command()(data.init)
app.command("sample-videos")(data.sample_videos)
app.command("fetch-model")(data.fetch_model)
app.command()(data.extract)
app.command()(pipeline.build)
app.command()(pipeline.validate)
app.command()(pipeline.rebuild)
app.command()(pipeline.resume)
app.command()(pipeline.repro)
app.command()(release.promote)
app.command()(release.rollback)
app.command()(release.status)
app.command()(release.report)
app.command()(ops.serve)
app.command()(ops.deploy)
app.command()(ops.watch)
app.command()(ops.nightly)
app.command()(ops.demo)
app.command()(ops.gc)

label_app = typer.Typer(no_args_is_help=True, help="Your own labelled holdout: propose, review, pull or import.")
label_app.command()(label.propose)
label_app.command()(label.push)
label_app.command()(label.pull)
label_app.command("import")(label.import_)
app.add_typer(label_app, name="label")

gate_app = typer.Typer(no_args_is_help=True, help="The reference gate runtime.")
gate_app.command("run")(release.gate_run)
app.add_typer(gate_app, name="gate")

if __name__ == "__main__":
    app()
