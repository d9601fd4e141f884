"""`alpr-ops`: one CLI over every step. Each command parses `params.yaml` once (`cli.context.State`) with its
flags as overrides, and passes typed config to the tasks or runs a flow.

Paths default to `params.yaml` and every one can be overridden by a flag, which is how `dvc.yaml` stages call it.
Results go to stdout, progress and logs to stderr; exit codes: `cli/exit_codes.py`.
"""

from __future__ import annotations

import logging
import os
import warnings
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.logging import RichHandler
from typer.core import TyperGroup

from cli.commands import data, doctor, label, ops, pipeline, release
from cli.context import state
from cli.exit_codes import ExitCode
from cli.options import AlprCommand
from cli.printers import ERR

HELP = (
    "Build, check and deploy the INT8 licence-plate detector of your parking-gate cameras.\n\n"
    "From your gate videos it builds INT8 candidates of the plate detector, validates them against the FP32 model "
    "on a labelled holdout, records everything in MLflow, promotes the winner to the gate and re-checks it every "
    "night.\n\n"
    "New here? `alpr-ops doctor` says what is ready; `make demo` runs the whole workflow on sample footage.\n\n"
    "Exit codes: 0 done; 1 a verdict against the model (no candidate passed, a nightly regression); 2 bad usage or "
    "configuration; 3 could not check or could not run (a store or server down, a missing input); 70 an internal "
    "error (a bug: please report it)."
)
REPORT_BUG = (
    "This is a bug in alpr-ops, not in your data or settings: please report it on the project's issue tracker with "
    "the command and its output run with -v (`alpr-ops -v ...` logs the traceback)."
)

GLOBAL_FLAGS = ("--params", "--verbose", "-v")  # accepted before or after the subcommand
SET_UP, DATA, BUILD, RELEASE, OPERATE = "Set up", "Data", "Build and validate", "Release", "Operate"


class _GlobalFlagsAnywhere(TyperGroup):
    """`--params FILE` and `-v` also after the subcommand (`alpr-ops status --params other.yaml`): moved in front of
    it before parsing. Nothing after a `--` moves (it belongs to the command, e.g. `repro -- -v`)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_flags(args))

    def invoke(self, ctx: Any) -> Any:
        """A crash (an exception no task typed) exits 70, never 1 like a verdict: one line saying so and where to
        report it; the traceback is logged with -v. A typed error or an OS error (a full disk) that reached here
        gets its message, advice and code as everywhere (`cli.context.fail`)."""
        try:
            return super().invoke(ctx)
        except Exception as e:
            if isinstance(e, typer.Exit | typer.Abort) or hasattr(e, "exit_code"):  # an exit, or click's usage errors
                raise
            from cli.context import fail
            from cli.exit_codes import store_error
            from tasks.support.config import ConfigError, redact_text
            from tasks.support.errors import AlprError

            if isinstance(e, AlprError | ConfigError | OSError) or store_error(e):
                raise fail(e) from e
            logging.getLogger("alpr_ops").debug("internal error", exc_info=True)
            ERR.print(
                f"[red]internal error:[/red] {type(e).__name__}: {redact_text(str(e))}\n{REPORT_BUG}",
                soft_wrap=True,
                highlight=False,
            )
            raise typer.Exit(ExitCode.INTERNAL) from e


def hoist_global_flags(args: list[str]) -> list[str]:
    """`args` with the global flags (and `--params`'s value) moved to the front, in their order."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest += args[i:]
            break
        if arg == "--params" and i + 1 < len(args):
            front += args[i : i + 2]
            i += 2
            continue
        if arg in GLOBAL_FLAGS or arg.startswith("--params="):
            front.append(arg)
        else:
            rest.append(arg)
        i += 1
    return front + rest


app = typer.Typer(
    cls=_GlobalFlagsAnywhere,
    add_completion=False,
    no_args_is_help=True,
    help=HELP,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    """`--version`: the installed package's version, then exit."""
    if value:
        try:
            typer.echo(f"alpr-ops {version('alpr-ops')}")
        except PackageNotFoundError:  # run from a checkout that was never installed
            typer.echo("alpr-ops (not installed)")
        raise typer.Exit()


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
            from cli.exit_codes import store_error
            from tasks.support.errors import AlprError

            exc = record.exc_info[1]
            if isinstance(exc, AlprError) or store_error(exc):
                record.exc_info, record.exc_text = None, None
        return True


@app.callback()
def main(
    params: Annotated[Path, typer.Option("--params", help="The parameters file (before or after the command).")] = Path(
        "params.yaml"
    ),
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    show_version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
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


command = partial(app.command, cls=AlprCommand)  # every command: old flag spellings warn (cli/options.py)
command(rich_help_panel=SET_UP)(data.init)
command("sample-videos", rich_help_panel=SET_UP)(data.sample_videos)
command("fetch-model", rich_help_panel=SET_UP)(data.fetch_model)
command(rich_help_panel=SET_UP)(doctor.doctor)
command(rich_help_panel=SET_UP)(ops.demo)
command(rich_help_panel=DATA)(data.extract)
command(rich_help_panel=BUILD)(pipeline.build)
command(rich_help_panel=BUILD)(pipeline.validate)
command(rich_help_panel=BUILD)(pipeline.rebuild)
command(rich_help_panel=BUILD)(pipeline.resume)
command(rich_help_panel=BUILD)(pipeline.repro)
command(rich_help_panel=RELEASE)(release.promote)
command(rich_help_panel=RELEASE)(release.rollback)
command(rich_help_panel=RELEASE)(release.status)
command(rich_help_panel=RELEASE)(release.report)
command(rich_help_panel=OPERATE)(ops.serve)
command(rich_help_panel=OPERATE)(ops.deploy)
command(rich_help_panel=OPERATE)(ops.watch)
command(rich_help_panel=OPERATE)(ops.nightly)
command(rich_help_panel=OPERATE)(ops.gc)

label_app = typer.Typer(no_args_is_help=True, help="Your own labelled holdout: propose, review, pull or import.")
label_app.command(cls=AlprCommand)(label.propose)
label_app.command(cls=AlprCommand)(label.push)
label_app.command(cls=AlprCommand)(label.pull)
label_app.command("import", cls=AlprCommand)(label.import_)
app.add_typer(label_app, name="label", rich_help_panel=DATA)

gate_app = typer.Typer(no_args_is_help=True, help="The reference gate runtime.")
gate_app.command("run", cls=AlprCommand)(release.gate_run)
app.add_typer(gate_app, name="gate", rich_help_panel=RELEASE)

if __name__ == "__main__":
    app()
