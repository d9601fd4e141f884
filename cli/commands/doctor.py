"""`alpr-ops doctor`: what is ready for a rebuild and what is not, one line each with what to do."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from cli.advice import ADVICE, explain
from cli.context import state
from cli.exit_codes import ExitCode
from cli.printers import out

REQUIREMENTS_LOCK = Path(__file__).resolve().parents[2] / "requirements.lock"
MARK = {
    "ok": "[green]ok[/green]  ",
    "warn": "[yellow]warn[/yellow]",
    "fail": "[red]FAIL[/red]",
    "skip": "[dim]skip[/dim]",
}


def doctor(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Check that a rebuild can run here: Python and packages, model, params.yaml, stores and servers, lock, disk.

    Exit 0 when a rebuild can run; 3 when something it needs is missing or does not answer (each line says what to
    do); 2 when params.yaml is broken."""
    from tasks.operations.doctor import Check, run_checks
    from tasks.support.config import ConfigError, redact_text
    from tasks.support.project import load_project

    params, root, first = None, state.params_file.resolve().parent, []
    try:
        project = load_project(state.params_file)
        params, root = project.params, project.root
        first.append(Check("params", "ok", f"{state.params_file} parses"))
    except ConfigError as e:
        first.append(Check("params", "fail", explain(e).replace("\n", " ")))
    if params is not None:
        from tasks.support.offline import configure_offline

        configure_offline(params.paths.ultralytics_config)
    checks = first + run_checks(params, root, REQUIREMENTS_LOCK)
    ready = not any(c.blocks for c in checks)
    if as_json:
        doc = {"ready": ready, "checks": [c.as_dict() for c in checks]}
        sys.stdout.write(redact_text(json.dumps(doc, indent=2)) + "\n")
    else:
        console = out()
        for c in checks:
            todo = c.hint or (ADVICE.get(c.remedy, "") if c.remedy else "")
            line = f"{MARK[c.status]} {c.name}: {c.detail}" + (f"  -> {todo}" if todo and c.status != "ok" else "")
            console.print(redact_text(line), soft_wrap=True, highlight=False)
        console.print("ready for a rebuild" if ready else "[red]not ready for a rebuild[/red]", highlight=False)
    if not ready:
        params_broken = params is None
        raise typer.Exit(ExitCode.USAGE if params_broken else ExitCode.UNAVAILABLE)
