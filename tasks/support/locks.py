"""The one OS lock of the project (flock): rebuilds queue on it, promotions refuse to run beside each other.

An flock is released by the kernel when its holder dies, so a killed run never blocks the next one. The holder
writes who it is into the file, so a waiting or refused run can say what it waits for.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from tasks.support.errors import LockBusy

log = logging.getLogger(__name__)


@contextmanager
def file_lock(path: Path, what: str, *, wait: bool) -> Iterator[None]:
    """Hold an exclusive lock on `path` for `what` (e.g. "rebuild"). Busy: `wait` queues behind the holder (and logs
    who it is); otherwise `LockBusy` is raised at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            if not wait:
                raise LockBusy(f"{path}: another {what} is running ({holder})", path=path, holder=holder) from e
            log.warning("another %s is running (%s); waiting for it to finish", what, holder)
            fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        fh.truncate()
        fh.write(f"{what} pid {os.getpid()} since {datetime.now(timezone.utc).isoformat(timespec='seconds')}\n")  # noqa: UP017 (the gate runs 3.10)
        fh.flush()
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
