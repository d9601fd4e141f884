"""The OS locks of the project (flock): the one project lock every writer queues on, and the gate folder's lock.

An flock is released by the kernel when its holder dies, so a killed run never blocks the next one. The holder
writes who it is into the file (pid, command, start time), so a waiting or refused run can say what it waits for.

The project lock (`paths.rebuild_lock`) is taken by every entry point that writes the project's data, candidates,
registry or gate folder: extract, build, validate, rebuild, promote, rollback, the nightly check, the label
commands. It is re-entrant for its holder: an flock taken twice by one process blocks forever, and a rebuild runs
the promote flow (which takes it too) inside its own hold. Re-entry is granted to the holder's own context (a
context variable, which Prefect copies into the threads its tasks and subflows run in; a plain new thread does not
inherit it, so two threads of one process still queue) and to child processes, through the holder's token in
`ALPR_LOCK_TOKEN` (set while the lock is held; `alpr-ops repro` runs `dvc repro` that way).
"""

from __future__ import annotations

import contextvars
import fcntl
import json
import logging
import os
import shlex
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tasks.support.errors import LockBusy
from tasks.support.faults import checkpoint

log = logging.getLogger(__name__)

TOKEN_ENV = "ALPR_LOCK_TOKEN"  # the holder's token, inherited by the child processes it starts
_held: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("alpr_held_locks", default=frozenset())


def holder_info(path: Path) -> dict[str, Any] | None:
    """What the holder of `path` wrote about itself (what, pid, command, started, token); None when empty."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    if not text:
        return None
    try:
        info = json.loads(text)
    except json.JSONDecodeError:
        return {"what": "run", "pid": "?", "command": text, "started": "?"}  # an older holder's free text
    return info if isinstance(info, dict) else None


def describe_holder(info: dict[str, Any] | None) -> str:
    """What a waiting run says: "the rebuild started at 2026-11-27T21:00:00+00:00 by pid 42 (alpr-ops rebuild)"."""
    if not info:
        return "another run"
    return (
        f"the {info.get('what', 'run')} started at {info.get('started', '?')} by pid {info.get('pid', '?')} "
        f"({info.get('command', '?')})"
    )


def _reentered(path: Path) -> bool:
    """Whether this context already holds the lock on `path`: in this process (context variable) or as a child
    process of its holder (token in the environment, and a holder that is another, living process)."""
    key = str(path.resolve())
    if key in _held.get():
        return True
    token = os.environ.get(TOKEN_ENV)
    if not token:
        return False
    info = holder_info(path) or {}
    return info.get("token") == token and info.get("pid") != os.getpid() and is_locked(path)


@contextmanager
def project_lock(path: Path, what: str) -> Iterator[None]:
    """Hold the project lock on `path` for `what` ("rebuild", "extract", "promote", ...): queue behind a holder
    (logging "waiting for the rebuild started at ... by ..."), never fail because of it. Re-entrant for the holder
    (see the module docstring)."""
    path = Path(path)
    if _reentered(path):
        log.debug("%s: already held by this run (%s)", path, what)
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    key = str(path.resolve())
    with open(path, "a+", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("%s: waiting for %s", what, describe_holder(holder_info(path)))
            fcntl.flock(fh, fcntl.LOCK_EX)
            log.info("%s: got the project lock %s", what, path)
        token = uuid.uuid4().hex
        _write_holder(fh, what, token)
        previous_env = os.environ.get(TOKEN_ENV)
        os.environ[TOKEN_ENV] = token
        reset = _held.set(_held.get() | {key})
        try:
            checkpoint(f"locked-{what}")  # tests only (tasks/support/faults.py): hold the lock at a known point
            yield
        finally:
            _held.reset(reset)
            if previous_env is None:
                os.environ.pop(TOKEN_ENV, None)
            else:
                os.environ[TOKEN_ENV] = previous_env
            fh.seek(0)
            fh.truncate()
            fh.flush()
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write_holder(fh: Any, what: str, token: str) -> None:
    info = {
        "what": what,
        "pid": os.getpid(),
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else "python",
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),  # noqa: UP017 (the gate runs 3.10)
        "token": token,
    }
    fh.seek(0)
    fh.truncate()
    fh.write(json.dumps(info) + "\n")
    fh.flush()


@contextmanager
def file_lock(path: Path, what: str, *, wait: bool) -> Iterator[None]:
    """Hold an exclusive lock on `path` for `what` (not re-entrant). Busy: `wait` queues behind the holder (and
    logs who it is); otherwise `LockBusy` is raised at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            holder = describe_holder(holder_info(path))
            if not wait:
                raise LockBusy(f"{path}: another {what} is running ({holder})", path=path, holder=holder) from e
            log.warning("another %s is running (%s); waiting for it to finish", what, holder)
            fcntl.flock(fh, fcntl.LOCK_EX)
        _write_holder(fh, what, uuid.uuid4().hex)
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fh.flush()
            fcntl.flock(fh, fcntl.LOCK_UN)


def is_locked(path: Path) -> bool:
    """Whether some process holds the lock on `path` right now (never waits; a missing file is not locked)."""
    try:
        fh = open(path)  # noqa: SIM115  (closed below)
    except FileNotFoundError:
        return False
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False
