"""Write-then-rename helpers: a killed run (or a power cut) never leaves a half-written frame set, artifact or file
visible.

Temp files and folders are created with the ordinary modes (0666/0777 less the umask, which the kernel applies at
creation), so a gate runtime running as another user can read a release. The umask is never read or changed: the
only way to read it (`os.umask`) sets it for the whole process, under every other thread's feet (the watcher's).
Everything written is fsynced before it is renamed into place, and the folder holding the rename after it, so a
power cut leaves the old version or the complete new one, never a renamed file whose data was still in the page
cache.

Output folders: a folder a setting names that a run replaces whole (`paths.calibration`, `paths.holdout_frames`,
`paths.holdout`, each candidate's folder in `paths.candidates`) is replaced only when it is this project's, which
one function decides (`check_output_folder`); anything else is refused, naming the folder and the setting, and left
as it was. A setting pointed at a folder of someone's files must never read as "replace this".
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tasks.support.errors import AlprError, Remedy

OUTPUT_MARKER = ".alpr-ops-output"  # in every output folder this project writes whole (unless its signature marks it)
MARKER_TEXT = (  # constant: the marker is part of DVC-tracked outputs, whose hash must not change between runs
    "Written by alpr-ops: this folder is an output, replaced whole by every run that writes it.\n"
    "Keep nothing of your own here. Without this file alpr-ops refuses to replace the folder.\n"
)
# Entries that never make a folder someone's: the `.gitignore` DVC writes beside the outputs it tracks inside a
# folder (left behind when `dvc repro` deletes them), and the temp names of `atomic_dir` and `atomic_write_bytes`
# (what a killed run left).
_LEFTOVER = re.compile(r"\.gitignore|\..+-[0-9a-f]{12}-(tmp|old)|\..+\.[0-9a-f]{12}\.tmp")


class NotOurFolder(AlprError):
    """A setting names a folder this project did not make: a run that would replace or empty it refuses."""

    remedy = Remedy.OUTPUT_FOLDER


@dataclass(frozen=True)
class OutputFolder:
    """A folder named by `setting` that a run replaces whole, and how this project recognises one it made.

    Ours: absent, empty (but for `_LEFTOVER` names), holding `OUTPUT_MARKER`, or adopted. Adoption is for folders
    made before the marker existed (a project of an older version keeps working) and for folders that carry no
    marker because they are copied whole elsewhere (a candidate's folder goes into MLflow, releases and the build
    cache; the labelled holdout is hashed into the rebuild fingerprint): the folder holds `signature` (a file only
    this project writes: a frame set's manifest.csv, a candidate's candidate.json, a holdout's holdout.json) and
    nothing but `names` beside it (None: anything; candidate.json alone is the record of our own build). A folder
    of output folders (`members`: the candidates' folders in `paths.candidates`) is adopted when every entry is a
    member that would be. `marked`: each new copy gets `OUTPUT_MARKER` (False: its signature marks it).
    """

    setting: str
    signature: str | None = None
    names: frozenset[str] | None = frozenset()
    marked: bool = True
    members: OutputFolder | None = None


def check_output_folder(folder: Path, output: OutputFolder) -> None:
    """Fail with `NotOurFolder` (naming `folder`, `output.setting` and a few of the files) unless `folder` is this
    project's to replace or empty (see `OutputFolder`). Called before any work that would end in replacing it."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise NotOurFolder(
            f"{folder} ({output.setting}) is a file, not a folder this project made; it is left as it is",
            path=str(folder),
            setting=output.setting,
        )
    if _ours(folder, output):
        return
    foreign = sorted(p.name for p in folder.iterdir() if not _LEFTOVER.fullmatch(p.name))
    shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
    raise NotOurFolder(
        f"{folder} ({output.setting}) holds files this project did not write ({shown}), and a run replaces that "
        "folder whole: refused, nothing in it was changed",
        path=str(folder),
        setting=output.setting,
    )


def _ours(folder: Path, output: OutputFolder) -> bool:
    entries = [p for p in folder.iterdir() if not _LEFTOVER.fullmatch(p.name)]
    names = {p.name for p in entries}
    if not entries or (folder / OUTPUT_MARKER).is_file():
        return True
    sig = output.signature
    if sig is not None and (folder / sig).is_file() and (output.names is None or names <= output.names | {sig}):
        return True
    members = output.members
    return members is not None and all(p.is_dir() and _ours(p, members) for p in entries)


def claim_output_folder(folder: Path, output: OutputFolder) -> Path:
    """Make sure `folder` exists and is ours (`check_output_folder`), and mark it: for a folder runs write into
    rather than replace (`paths.candidates`, whose members are replaced one by one)."""
    check_output_folder(folder, output)
    folder.mkdir(parents=True, exist_ok=True)
    if output.marked and not (folder / OUTPUT_MARKER).is_file():
        atomic_write_text(folder / OUTPUT_MARKER, MARKER_TEXT)
    return folder


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """Flush every file and folder under `folder` (and `folder` itself) to disk; symlinks are not followed."""
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = Path(root) / name
            if not path.is_symlink():
                _fsync(path)
        _fsync(Path(root))  # os.walk does not descend into symlinked folders


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename or new symlink in it) to disk."""
    _fsync(folder)


def _temp_name(parent: Path, prefix: str, suffix: str) -> Path:
    return parent / f"{prefix}{secrets.token_hex(6)}{suffix}"


def atomic_write_text(path: Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` through a temp file in the same folder, fsynced, and an atomic rename."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to `path` through a temp file in the same folder, fsynced, an atomic rename, and the folder
    fsynced: a crash leaves the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = _temp_name(path.parent, f".{path.name}.", ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _make_dir(parent: Path, prefix: str, suffix: str) -> Path:
    while True:
        tmp = _temp_name(parent, prefix, suffix)
        try:
            tmp.mkdir(0o777)
            return tmp
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_dir(target: Path, output: OutputFolder | None = None) -> Iterator[Path]:
    """Yield an empty temp folder beside `target`; on success it replaces `target`, on failure it is removed.

    `output`: `target` is an output folder a setting names; it is replaced only when it is ours
    (`check_output_folder`, before anything is made), and the new one is marked (`OutputFolder.marked`).
    The old folder is moved aside (under a name no other run uses) before the new one is renamed in, so at every
    instant `target` is the complete old folder, the complete new one, or (between the two renames) absent; a
    crash in that instant leaves the old copy beside it, never deleted. The new folder's content is fsynced before
    the rename (a downloaded release is on disk before `current` can point at it).
    """
    if output is not None:
        check_output_folder(target, output)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _make_dir(target.parent, f".{target.name}-", "-tmp")
    try:
        yield tmp
        if output is not None and output.marked:
            (tmp / OUTPUT_MARKER).write_text(MARKER_TEXT)
        fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = _make_dir(target.parent, f".{target.name}-", "-old")
        os.replace(target, old / target.name)
    os.replace(tmp, target)
    fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
