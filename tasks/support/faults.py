"""Fault-injection hooks for the kill-safety and store-error tests (tests only; inert unless the variables are set).

`ALPR_KILL_AT=<checkpoint>`: the process SIGKILLs itself when it reaches that checkpoint.
`ALPR_PAUSE_AT=<checkpoint>[,<checkpoint>...]:<folder>`: at each named checkpoint the process creates
`<folder>/<checkpoint>.paused` and waits until `<folder>/<checkpoint>.resume` exists, so a test can change the world
(lock the MLflow database, say) at an exact point and wait on events instead of sleeping.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

log = logging.getLogger(__name__)

KILL_ENV = "ALPR_KILL_AT"
PAUSE_ENV = "ALPR_PAUSE_AT"
CHECKPOINTS = (
    "before_champion",  # promotion, under the lock, before it reads the champion
    "after_champion_download",
    "after_champion",
    "after_download",
    "after_smoke_test",
    "after_release_written",
    "before_switch",
    "after_switch",
    "after_previous",  # crown: `previous` moved, `champion` not yet
    "after_aliases",
    "rollback_after_champion",  # rollback: `champion` moved, `previous` not yet cleared
)


def checkpoint(name: str) -> None:
    """Kill or pause this process here when the test environment names this checkpoint."""
    if os.environ.get(KILL_ENV) == name:
        log.warning("%s=%s: killing process %d", KILL_ENV, name, os.getpid())
        os.kill(os.getpid(), signal.SIGKILL)
    names, _, folder = os.environ.get(PAUSE_ENV, "").partition(":")
    if folder and name in names.split(","):
        log.warning("%s: paused at %s until %s.resume exists", PAUSE_ENV, name, name)
        Path(folder, f"{name}.paused").touch()
        resume = Path(folder, f"{name}.resume")
        while not resume.exists():  # the test's event, polled; no fixed sleep decides an outcome
            time.sleep(0.05)
