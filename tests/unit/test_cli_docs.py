"""docs/cli.md is the CLI reference typer generates from the app itself (`make docs`): regenerated here into a temp
file and compared, so a command, flag or help text changed without `make docs` fails the suite."""

from __future__ import annotations

import difflib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REGENERATE = "make docs  (or: .venv/bin/python -m typer cli.app utils docs --name alpr-ops --output docs/cli.md)"


def generate(out: Path) -> str:
    """typer's own `utils docs` over `cli.app`, as `make docs` runs it: this checkout's code, a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "typer", "cli.app", "utils", "docs", "--name", "alpr-ops", "--output", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, f"typer utils docs failed:\n{done.stdout}\n{done.stderr[-4000:]}"
    return out.read_text()


def test_the_cli_reference_is_what_the_app_generates(tmp_path: Path) -> None:
    fresh = generate(tmp_path / "cli.md")
    assert "## `alpr-ops rebuild`" in fresh, "the generated reference does not document `alpr-ops rebuild`"
    checked_in = (ROOT / "docs" / "cli.md").read_text()
    if checked_in != fresh:
        diff = "".join(
            difflib.unified_diff(
                checked_in.splitlines(keepends=True), fresh.splitlines(keepends=True), "docs/cli.md", "generated"
            )
        )
        raise AssertionError(f"docs/cli.md is stale: regenerate it with `{REGENERATE}` and commit it.\n{diff[:6000]}")
