"""One flag name per `params.yaml` path across every command (cli/options.py): a path flag is named after its key
and its help names the key; no other option is spelled like one; the old spellings still work for one release,
hidden, with a warning on stderr that names the new flag."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from conftest import run_cli
from typer.core import TyperArgument, TyperOption

from cli.app import app
from cli.options import PATH_KEYS, AlprCommand, flag_of
from tasks.support.config import PathsConfig

ROOT = Path(__file__).resolve().parents[2]

# Options that take a path which is not a setting of params.yaml: an input the command reads once.
NOT_SETTINGS = {("init", "source"), ("gate run", "source")}

# Every renamed spelling: (command, old, new). Each stays one release.
RENAMED = [
    ("extract", "--out", "--calibration"),
    ("extract", "--dataset-yaml", "--calibration-yaml"),
    ("extract", "--cache", "--frame-cache"),
    ("build", "--data", "--calibration-yaml"),
    ("build", "--frames", "--calibration"),
    ("build", "--out", "--candidates"),
    ("build", "--gate-frames", "--holdout-frames"),
    ("validate", "--frames", "--holdout-frames"),
    ("fetch-model", "--out", "--model"),
    ("report", "--out", "--reports"),
    ("nightly", "--cache", "--frame-cache"),
    ("sample-videos", "--holdout-frames", "--labelled-frames"),
    ("init", "--videos", "--from"),
]


def commands() -> dict[str, Any]:
    """Every command of the app by its path ("extract", "label propose"), as click sees it."""
    root = typer.main.get_command(app)
    found: dict[str, Any] = {}
    for name, cmd in root.commands.items():
        for sub, leaf in getattr(cmd, "commands", {}).items():
            found[f"{name} {sub}"] = leaf
        if not hasattr(cmd, "commands"):
            found[name] = cmd
    return found


COMMANDS = commands()


def long_names(cmd: Any) -> set[str]:
    return {o for p in cmd.params if isinstance(p, TyperOption) for o in (*p.opts, *p.secondary_opts)}


def test_every_path_setting_has_one_flag_that_names_its_key() -> None:
    assert set(PATH_KEYS) == {*PathsConfig.model_fields, "gate_dir"}, "a paths.* key without its flag (or the reverse)"
    declared = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, (setting, _) in PATH_KEYS.items():
        section, name = setting.split(".")
        assert name == key and name in declared[section], f"{setting}: not a key of params.yaml"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_path_flag_is_named_after_its_key_and_its_help_names_the_key(name: str) -> None:
    cmd = COMMANDS[name]
    for p in cmd.params:
        is_path = p.type_descriptor.annotation is Path or p.name in PATH_KEYS
        if isinstance(p, TyperArgument):
            assert not is_path or p.hidden or (name, p.name) == ("label import", "source"), (
                f"`{name}`: the path argument {p.name} is a setting: make it a flag named after its key"
            )
            continue
        if (name, p.name) in NOT_SETTINGS or not isinstance(p, TyperOption):
            continue
        spelled_like_a_path = {flag_of(k) for k in PATH_KEYS} & set(p.opts)
        if is_path or spelled_like_a_path:
            assert p.name in PATH_KEYS, f"`{name} {p.opts}`: a path flag that overrides no params.yaml path"
            assert p.opts == [flag_of(p.name)], f"`{name}`: {p.opts} is not named after {PATH_KEYS[p.name][0]}"
            assert p.help.startswith(PATH_KEYS[p.name][0] + ":"), f"`{name} {p.opts[0]}`'s help: {p.help!r}"


def test_every_path_flag_means_one_setting_everywhere() -> None:
    meaning: dict[str, set[str]] = {}
    for name, cmd in COMMANDS.items():
        for p in cmd.params:
            if isinstance(p, TyperOption) and (name, p.name) not in NOT_SETTINGS:
                for opt in p.opts:
                    meaning.setdefault(opt, set()).add(str(p.name))
    shared = {opt: names for opt, names in meaning.items() if len(names) > 1}
    assert not shared, f"one flag, several meanings: {shared}"


@pytest.mark.parametrize(("command", "old", "new"), RENAMED)
def test_an_old_spelling_still_works_hidden_and_warns(command: str, old: str, new: str, capsys) -> None:
    cmd = COMMANDS[command]
    assert isinstance(cmd, AlprCommand)
    assert old not in long_names(cmd) and new in long_names(cmd), f"`{command}`: help shows {old}, or lacks {new}"
    assert cmd.rename(["--x", old, "v", f"{old}=w", "--", old]) == ["--x", new, "v", f"{new}=w", "--", old]
    err = capsys.readouterr().err
    assert err.count(f"{old} is deprecated") == 2 and f"use {new}" in err, err


def test_old_spellings_reach_the_command(tmp_path: Path, make_params) -> None:
    """A real run with the old spellings (a count, and the videos folder once given as an argument): the values
    take effect, stderr names each new flag, stdout has the result alone."""
    make_params(tmp_path)
    done = run_cli(tmp_path, "sample-videos", "--n", "1", "--seconds", "1", "--holdout-frames", "2", "mine")
    assert "use --labelled-frames" in done.stderr and "use --videos" in done.stderr, done.stderr
    assert len(list((tmp_path / "mine").glob("*.mp4"))) == 1
    assert len(list((tmp_path / "data" / "holdout" / "images").iterdir())) == 2
    assert "deprecated" not in done.stdout and f"videos: {tmp_path / 'mine'}" in done.stdout, done.stdout
