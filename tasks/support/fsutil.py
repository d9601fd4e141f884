"""Write-then-rename helpers: a killed run (or a power cut) never leaves a half-written frame set, artifact or file
visible.

Temp files and folders are created with the ordinary modes (0666/0777 less the umask, which the kernel applies at
creation), so a gate runtime running as another user can read a release. The umask is never read or changed: the
only way to read it (`os.umask`) sets it for the whole process, under every other thread's feet (the watcher's).
Everything written is fsynced before it is renamed into place, and the folder holding the rename after it, so a
power cut leaves the old version or the complete new one, never a renamed file whose data was still in the page
cache.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path


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
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield an empty temp folder beside `target`; on success it replaces `target`, on failure it is removed.

    The old folder is moved aside (under a name no other run uses) before the new one is renamed in, so at every
    instant `target` is the complete old folder, the complete new one, or (between the two renames) absent; a
    crash in that instant leaves the old copy beside it, never deleted. The new folder's content is fsynced before
    the rename (a downloaded release is on disk before `current` can point at it).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _make_dir(target.parent, f".{target.name}-", "-tmp")
    try:
        yield tmp
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
