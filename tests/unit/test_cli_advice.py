"""Every remedy a command can print names commands and flags that exist: each `Remedy`'s advice (cli/advice.py),
the other advice the CLI prints, and every `alpr-ops <command> --flag` written in the code, dvc.yaml, the Makefile
and the docs is parsed and checked against the typer app's registered commands and their options.

Advice is the same whichever command failed, so it may name a flag alone (without `alpr-ops <command>`) only when
every command has it (`--params`, `-v`): checking each text once checks it for every command that can raise it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.core import TyperArgument, TyperOption

from cli.advice import ADVICE, explain
from cli.app import app
from cli.context import STORE_ADVICE
from tasks.support.config import ConfigError
from tasks.support.errors import AlprError, Remedy

ROOT = Path(__file__).resolve().parents[2]
GLOBAL = {"--params", "--verbose", "-v", "--version", "--help", "-h"}
MENTION = re.compile(r"(`|bin/)?alpr-ops((?:[ \t]+[^\s`'\"),;|]+)*)")
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*|-[a-z])\b")
SETTING = re.compile(r"\b(paths|validate|promote|build|extract|label|sample|model|tracking|serve|watch)\.([a-z0-9_]+)")
CODE = re.compile(r"`[^`\n]*`")  # a code span: another tool's command line may have flags of its own

ROOT_CMD = typer.main.get_command(app)


def resolve(words: list[str]) -> tuple[Any, list[str]] | None:
    """The command the words name (after global flags) and the words after it; None when they name none."""
    i = 0
    while i < len(words) and words[i] in GLOBAL | {"--params"}:
        i += 2 if words[i] == "--params" else 1
    if i >= len(words) or words[i] not in ROOT_CMD.commands:
        return (ROOT_CMD, []) if i > 0 else None  # `alpr-ops --params FILE`: the global flags alone
    cmd = ROOT_CMD.commands[words[i]]
    i += 1
    if hasattr(cmd, "commands"):
        if i >= len(words) or words[i] not in cmd.commands:
            return cmd, words[i:]  # the group itself (`alpr-ops label ...`)
        cmd = cmd.commands[words[i]]
        i += 1
    return cmd, words[i:]


def problems(text: str) -> list[str]:
    """What in `text` names a command or flag that does not exist, or a setting params.yaml does not have."""
    found: list[str] = []
    covered: list[tuple[int, int]] = []
    for m in MENTION.finditer(text):
        words = [w.strip("`") for w in m.group(2).split()]
        named = resolve(words)
        if named is None:
            if m.group(1) and words and not words[0].startswith(("{", "<", "[", "(")):  # code, not prose
                found.append(f"`alpr-ops {' '.join(words[:2])}`: no such command")
            continue
        cmd, rest = named
        covered.append(m.span())
        opts = {o for p in cmd.params if isinstance(p, TyperOption) for o in (*p.opts, *p.secondary_opts)} | GLOBAL
        positional = sum(1 if p.nargs == 1 else 99 for p in cmd.params if isinstance(p, TyperArgument))
        takes_value = {o for p in cmd.params if isinstance(p, TyperOption) and not p.is_flag for o in p.opts}
        i = 0
        while i < len(rest):
            word = rest[i]
            if word.startswith("-"):
                flag = word.split("=")[0]
                if flag not in opts:
                    found.append(f"`alpr-ops {cmd.name} {flag}`: {cmd.name} has no {flag}")
                i += 2 if flag in takes_value and "=" not in word else 1
            elif positional > 0 or hasattr(cmd, "commands"):
                positional -= 1
                i += 1
            else:
                break  # prose after the command
    covered += [m.span() for m in CODE.finditer(text)]
    outside = "".join(c if not any(a <= i < b for a, b in covered) else " " for i, c in enumerate(text))
    found += [f"{flag} alone: not a flag of every command" for flag in FLAG.findall(outside) if flag not in GLOBAL]
    declared = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, key in SETTING.findall(text):
        if section in declared and isinstance(declared[section], dict) and key not in declared[section]:
            found.append(f"{section}.{key}: not a setting of params.yaml")
    return found


@pytest.mark.parametrize("remedy", list(Remedy))
def test_each_remedy_names_only_commands_and_flags_that_exist(remedy: Remedy) -> None:
    assert remedy in ADVICE, f"{remedy} has no advice"
    text = explain(AlprError("the facts", remedy=remedy, pool="cpu"))
    assert text.startswith("the facts\n") and "<" not in text, text
    assert not problems(text), f"{remedy}: {problems(text)}"


def test_the_other_advice_names_only_what_exists() -> None:
    for text in (STORE_ADVICE, explain(ConfigError("params.yaml: not found"))):
        assert not problems(text), problems(text)


def test_the_checker_finds_a_wrong_flag_a_missing_command_and_a_lone_flag() -> None:
    assert problems("Run `alpr-ops extract --data X` first") == ["`alpr-ops extract --data`: extract has no --data"]
    assert problems("`alpr-ops frobnicate`") == ["`alpr-ops frobnicate`: no such command"]
    assert problems("or pass --holdout DIR.") == ["--holdout alone: not a flag of every command"]
    assert problems("set validate.labelz: optional") == ["validate.labelz: not a setting of params.yaml"]
    assert not problems("`alpr-ops label import DIR --video a.mp4` and `alpr-ops --params p.yaml status --json`")


def written_mentions() -> list[Path]:
    files = [ROOT / "dvc.yaml", ROOT / "Makefile", ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    files += [f for d in ("cli", "tasks", "flows") for f in sorted((ROOT / d).rglob("*.py"))]
    return [f for f in files if f.name != "cli.md"]  # the generated reference is checked by test_cli_docs.py


@pytest.mark.parametrize("path", written_mentions(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_written_command_and_flag_exists(path: Path) -> None:
    """Only the `alpr-ops <command> --flag` mentions: a file may name flags of other tools on their own."""
    text = path.read_text()
    bad = [p for p in problems(text) if "alone" not in p and "params.yaml" not in p]
    assert not bad, f"{path.relative_to(ROOT)}: {bad}"
