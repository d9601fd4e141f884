"""Version data with DVC: videos, holdout and base model become `.dvc`-tracked, so a rebuild names its data."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


class DvcError(RuntimeError):
    """The project is not a DVC repository; the message says how to make it one."""


def dvc_track(root: Path, targets: list[Path]) -> list[Path]:
    """`dvc add` each target (a no-op for unchanged data); returns the `.dvc` files."""
    from dvc.repo import Repo

    if not (root / ".dvc").is_dir():
        raise DvcError(f"{root}: not a DVC repository (no .dvc/). Run `dvc init` there, or clone the project again.")
    with Repo(str(root)) as repo:
        repo.add([str(t) for t in targets])
    dvc_files = [t.with_name(t.name + ".dvc") for t in targets]
    log.info("DVC tracks %s", ", ".join(str(f.relative_to(root)) for f in dvc_files))
    return dvc_files
