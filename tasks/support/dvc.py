"""Version data with DVC: videos, holdout and base model become `.dvc`-tracked, so a rebuild names its data."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from tasks.support.errors import AlprError

log = logging.getLogger(__name__)


class DvcError(AlprError):
    """The project is not a DVC repository; the message says how to make it one."""


def dvc_file(target: Path) -> Path:
    """The `.dvc` file `dvc add` writes for `target` (`data/videos` -> `data/videos.dvc`)."""
    return target.with_name(target.name + ".dvc")


def dvc_track(root: Path, targets: list[Path]) -> list[Path]:
    """`dvc add` each target (a no-op for unchanged data); returns the `.dvc` files."""
    from dvc.repo import Repo

    if not (root / ".dvc").is_dir():
        raise DvcError(f"{root}: not a DVC repository (no .dvc/). Run `dvc init` there, or clone the project again.")
    with Repo(str(root)) as repo:
        repo.add([str(t) for t in targets])
    dvc_files = [dvc_file(t) for t in targets]
    log.info("DVC tracks %s", ", ".join(str(f.relative_to(root)) for f in dvc_files))
    return dvc_files


def dvc_commit(root: Path) -> Path:
    """Record the current outputs of every `dvc.yaml` stage in `dvc.lock`, as `dvc commit` does.

    The Prefect flow runs the same steps as the DVC stages; committing their outputs afterwards lets `dvc status`
    and `dvc repro` treat a flow-made result as up to date instead of rebuilding it.
    """
    if not (root / ".dvc").is_dir() or not (root / "dvc.yaml").is_file():
        raise DvcError(f"{root}: no .dvc/ or dvc.yaml here; run `dvc init` in the project folder.")
    # DVC's CLI, in the project folder: its Python API resolves stage paths against the process's cwd
    cmd = [sys.executable, "-m", "dvc", "commit", "--force", "--quiet"]
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise DvcError(f"`dvc commit` in {root} failed:\n{done.stdout}{done.stderr}")
    log.info("recorded the rebuild's outputs in %s", root / "dvc.lock")
    return root / "dvc.lock"


def dvc_push(root: Path) -> bool:
    """Push the data and outputs `dvc.lock` records to the project's default DVC remote, if it has one.

    Past one machine the remote is how workers and reviewers get the same videos, frames and engines; on a single
    machine without a remote this does nothing. Returns whether it pushed.
    """
    cmd = [sys.executable, "-m", "dvc", "remote", "default"]
    default = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False)
    if default.returncode != 0 or not default.stdout.strip():
        log.info("no default DVC remote in %s: nothing pushed", root)
        return False
    done = subprocess.run([sys.executable, "-m", "dvc", "push", "--quiet"], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise DvcError(
            f"`dvc push` to {default.stdout.strip()} from {root} failed:\n{done.stdout}{done.stderr}", transient=True
        )
    log.info("pushed the rebuild's data and outputs to the DVC remote %s", default.stdout.strip())
    return True
