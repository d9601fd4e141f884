"""Version data with DVC: videos, holdout and base model become `.dvc`-tracked, so a rebuild names its data."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tasks.support.errors import AlprError
from tasks.support.fsutil import atomic_write_bytes
from tasks.support.videos import VideoInput, videos_unchanged

log = logging.getLogger(__name__)


class DvcError(AlprError):
    """The project is not a DVC repository; the message says how to make it one."""


def dvc_file(target: Path) -> Path:
    """The `.dvc` file `dvc add` writes for `target` (`data/videos` -> `data/videos.dvc`)."""
    return target.with_name(target.name + ".dvc")


def dvc_track(root: Path, targets: list[Path], settings: Sequence[str] = ()) -> list[Path]:
    """`dvc add` each target (a no-op for unchanged data); returns the `.dvc` files. `settings`: the paths.*
    setting of each target, named when one cannot be tracked.

    A target outside the project cannot be a DVC output (DVC would raise its StageExternalOutputsError after
    starting): refused first, as a `DvcError` naming the folder and its setting, with nothing tracked."""
    from dvc.repo import Repo

    if not (root / ".dvc").is_dir():
        raise DvcError(f"{root}: not a DVC repository (no .dvc/). Run `dvc init` there, or clone the project again.")
    names = dict(zip(targets, settings, strict=False))
    outside = [t for t in targets if not t.resolve().is_relative_to(root.resolve())]
    if outside:
        shown = ", ".join(f"{t} ({names[t]})" if t in names else str(t) for t in outside)
        raise DvcError(
            f"{shown}: outside the project {root}, so DVC cannot version it (a DVC output must be inside the "
            "project); point the setting at a folder inside the project to version it",
            paths=[str(t) for t in outside],
        )
    with Repo(str(root)) as repo:
        repo.add([str(t) for t in targets])
    dvc_files = [dvc_file(t) for t in targets]
    log.info("DVC tracks %s", ", ".join(str(f.relative_to(root)) for f in dvc_files))
    return dvc_files


STAGES = ("extract", "build", "validate")  # the dvc.yaml stages the rebuild flow runs


def dvc_commit(root: Path, videos_dir: Path | None = None, inputs: Sequence[VideoInput] | None = None) -> Path | None:
    """Record the outputs of the `dvc.yaml` stages (`STAGES`) in `dvc.lock`, as `dvc commit STAGES` does, and,
    with the snapshot, the videos in `<videos>.dvc` (so what dvc.lock names as the extract stage's input is in the
    DVC cache): named targets only, never every `.dvc` file. Returns dvc.lock, or None when nothing was recorded.

    The Prefect flow runs the same steps as the DVC stages; committing their outputs afterwards lets `dvc status`
    and `dvc repro` treat a flow-made result as up to date instead of rebuilding it. DVC hashes the stages' inputs
    as they are at commit time, so with the extraction's snapshot (`videos_dir`, `inputs`) the commit is made only
    when the videos are still exactly those (checked before and after; dvc.lock is put back if they changed in
    between): a video copied in during the rebuild is recorded as no input of it, and `dvc status` shows the
    change the next rebuild picks up.
    """
    if not (root / ".dvc").is_dir() or not (root / "dvc.yaml").is_file():
        raise DvcError(f"{root}: no .dvc/ or dvc.yaml here; run `dvc init` in the project folder.")
    lock = root / "dvc.lock"
    if _inputs_changed(videos_dir, inputs):
        return None
    videos_record = dvc_file(videos_dir) if videos_dir is not None and inputs is not None else None
    if videos_record is not None and (not videos_record.is_file() or not videos_record.is_relative_to(root)):
        videos_record = None
    records = [lock, *([videos_record] if videos_record is not None else [])]
    before = {path: path.read_bytes() if path.is_file() else None for path in records}
    targets = [*STAGES, *([str(videos_record.relative_to(root))] if videos_record is not None else [])]
    # DVC's CLI, in the project folder: its Python API resolves stage paths against the process's cwd
    cmd = [sys.executable, "-m", "dvc", "commit", "--force", "--quiet", *targets]
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise DvcError(f"`dvc commit` in {root} failed:\n{done.stdout}{done.stderr}")
    if _inputs_changed(videos_dir, inputs):  # changed while DVC hashed them: take the records back
        for path, old in before.items():
            if old is None:
                path.unlink(missing_ok=True)
            else:
                atomic_write_bytes(path, old)
        return None
    log.info("recorded the rebuild's outputs in %s", lock)
    return lock


def _inputs_changed(videos_dir: Path | None, inputs: Sequence[VideoInput] | None) -> bool:
    if videos_dir is None or inputs is None:
        return False
    changes = videos_unchanged(videos_dir, inputs)
    if changes:
        log.warning(
            "%s changed during the rebuild (%s): dvc.lock not updated, so DVC records no input this rebuild did not "
            "read; the next rebuild picks the change up",
            videos_dir,
            ", ".join(changes),
        )
    return bool(changes)


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
