"""Typed errors: a task says what is wrong (the file, the value, what was expected) and which remedy applies; the
CLI (`cli/advice.py`) turns the remedy into the command or setting a user acts on. Tasks never name CLI commands.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

try:
    from enum import StrEnum  # novermin (Python 3.11)
except ImportError:  # Python 3.10: JetPack 6's system Python on the gate imports these errors too

    class StrEnum(str, Enum):  # type: ignore[no-redef]  # noqa: UP042 (3.10 has no enum.StrEnum)
        """`enum.StrEnum` as Python 3.11 defines it: members are their values, also under `str()` and f-strings."""

        def __str__(self) -> str:
            return str(self.value)


class Remedy(StrEnum):
    """What fixes an error, as a fact about the workflow (the CLI words it)."""

    SAMPLE_VIDEOS = "sample-videos"  # add gate videos (or generate demo ones)
    FETCH_MODEL = "fetch-model"  # the base detector is missing or not the pinned one
    EXTRACT = "extract"  # calibration frames are missing or stale
    BUILD = "build"  # candidates are missing or stale
    VALIDATE = "validate"  # metrics are missing or from older code
    REBUILD = "rebuild"  # nothing recorded in MLflow yet, or the footage changed
    FORCE_REBUILD = "force-rebuild"  # the inputs equal the last rebuild's: only a forced rebuild rebuilds
    PROMOTE = "promote"  # nothing deployed yet
    REBUILD_OR_ROLLBACK = "rebuild-or-rollback"  # the deployed champion regressed
    HOLDOUT = "holdout"  # a labelled holdout is missing
    PARAMS = "params"  # params.yaml must change
    WAIT = "wait"  # another run holds the lock
    REPLACE_DATA = "replace-data"  # the project has data a setup step would replace
    GATE_WORKER = "gate-worker"  # the gate's Prefect deployment or its worker is missing (facts: pool)
    OUTPUT_FOLDER = "output-folder"  # a paths.* setting names a folder of files this project did not make
    CACHE = "cache"  # a cache folder cannot be written


class AlprError(RuntimeError):
    """Base of every error a task raises for a person to act on. `remedy`: what fixes it (None: the message says)."""

    remedy: Remedy | None = None

    def __init__(self, message: str, *, remedy: Remedy | None = None, **facts: Any) -> None:
        super().__init__(message)
        if remedy is not None:
            self.remedy = remedy
        self.facts = facts

    def __reduce__(self) -> tuple[Any, ...]:  # pickled with its remedy and facts (Prefect persists task results)
        return (_restore, (type(self), self.args, self.__dict__))


def _restore(cls: type[AlprError], args: tuple[Any, ...], state: dict[str, Any]) -> AlprError:
    err = cls.__new__(cls)
    err.args = args
    err.__dict__.update(state)
    return err


class LockBusy(AlprError):
    """Another run holds a lock that this run does not wait for."""

    remedy = Remedy.WAIT
