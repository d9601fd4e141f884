"""The one way a command declares a flag that overrides a `params.yaml` path, and the old spellings it still takes.

A path flag is named after its key and its help names that key: `paths.holdout_frames` is `--holdout-frames` in
every command, `promote.gate_dir` is `--gate-dir`. `path_option` builds them all, so name and help cannot drift.

Renamed flags keep their old spelling for one release: declared as further long names of the same option
(`path_option("calibration", "--out")`): `AlprCommand` hides them from the help and rewrites them to the new flag,
with a warning on stderr that names it. In this CLI an option has one long name; any further one is an old spelling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperOption

# Each path a flag may override: its params.yaml key and what it holds (the flag's help).
PATH_KEYS: dict[str, tuple[str, str]] = {
    "videos": ("paths.videos", "the gate videos"),
    "calibration": ("paths.calibration", "extracted calibration frames (images/ + manifest.csv)"),
    "calibration_yaml": ("paths.calibration_yaml", "the calibration dataset YAML that extract writes"),
    "holdout": ("paths.holdout", "the labelled holdout (images/ + YOLO labels/)"),
    "holdout_frames": ("paths.holdout_frames", "unlabelled frames of the holdout videos"),
    "frame_cache": ("paths.frame_cache", "per-video frames, keyed by video hash and extract settings"),
    "model": ("paths.model", "the base detector (.pt)"),
    "candidates": ("paths.candidates", "one folder per built candidate"),
    "build_cache": ("paths.build_cache", "built candidates by content"),
    "validation_cache": ("paths.validation_cache", "validation reports by content"),
    "metrics": ("paths.metrics", "the validation metrics JSON"),
    "ultralytics_config": ("paths.ultralytics_config", "Ultralytics' settings folder"),
    "plots": ("paths.plots", "plot data (CSV) for DVC"),
    "reports": ("paths.reports", "the HTML and Markdown reports"),
    "watch_state": ("paths.watch_state", "the videos the watcher last started a rebuild for"),
    "rebuild_lock": ("paths.rebuild_lock", "the project lock"),
    "nightly_verdict": ("paths.nightly_verdict", "the last nightly verdict"),
    "prefect_home": ("paths.prefect_home", "the local Prefect server's folder"),
    "label_proposal": ("paths.label_proposal", "frames proposed for labelling"),
    "gate_dir": ("promote.gate_dir", "the release folder of the gate (`current`, `previous`)"),
}


def flag_of(key: str) -> str:
    """The flag of a path key: `holdout_frames` -> `--holdout-frames`."""
    return "--" + key.replace("_", "-")


def path_option(key: str, *old: str) -> Any:
    """The option overriding `key` (a `paths.*` key or `gate_dir`), for a parameter named `key`; `old`: spellings
    it replaces, accepted for one release with a warning."""
    setting, what = PATH_KEYS[key]
    help_ = f"{setting}: {what} (overrides params.yaml)."
    return Annotated[Path | None, typer.Option(flag_of(key), *old, help=help_, show_default=False)]


def warn_deprecated(old: str, new: str) -> None:
    """One line on stderr: the old spelling still works this release; the new one is what to write."""
    typer.echo(f"warning: {old} is deprecated and will be removed in the next release; use {new}.", err=True)


class AlprCommand(TyperCommand):
    """A command whose options' old spellings (every long name after an option's first) are taken off the option,
    so the help and docs/cli.md show the new name alone, and rewritten to the new name, with a warning, when used."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.renamed: dict[str, str] = {}  # old spelling -> new flag
        for param in self.params:
            if isinstance(param, TyperOption):
                new, *old = [o for o in param.opts if o.startswith("--")] or [""]
                self.renamed |= dict.fromkeys(old, new)
                param.opts = [o for o in param.opts if o not in old]

    def collect_usage_pieces(self, ctx: typer.Context) -> list[str]:
        """The usage line without hidden arguments (an old positional spelling)."""
        hidden = [p for p in self.get_params(ctx) if isinstance(p, TyperArgument) and p.hidden]
        drop = {piece for p in hidden for piece in p.get_usage_pieces(ctx)}
        return [piece for piece in super().collect_usage_pieces(ctx) if piece not in drop]

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, self.rename(args))

    def rename(self, args: list[str]) -> list[str]:
        """`args` with each old spelling (`--out X`, `--out=X`) replaced by its new flag; nothing after `--`."""
        renamed: list[str] = []
        for i, arg in enumerate(args):
            if arg == "--":
                return renamed + args[i:]
            name, eq, value = arg.partition("=")
            if name in self.renamed:
                warn_deprecated(name, self.renamed[name])
                arg = self.renamed[name] + eq + value
            renamed.append(arg)
        return renamed
