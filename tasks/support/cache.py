"""Content-addressed cache stores: a folder of entries, each named by its key and written atomically.

The frame cache (extraction: one entry per video and extraction key, and the memoised video hashes), the build
cache (one built candidate per key) and the validation cache (one report per key) are each a `CacheStore`. A key
covers everything its entry depends on (`tasks.support.hashing.content_key`), so an entry is either exactly what a
fresh run would make or never looked up; `alpr-ops gc` prunes every store by one rule: keep the keys in use, remove
the rest (and what a killed run left half written).

A store that cannot be written (permissions, a read-only or full disk) raises `CacheUnwritable`, naming its folder:
never an OSError a caller could mistake for its input's (an unreadable video is skipped; a cache error is not).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tasks.support.errors import AlprError, Remedy
from tasks.support.fsutil import atomic_dir, atomic_write_bytes


class CacheUnwritable(AlprError):
    """A cache folder cannot be written: the run stops with the folder named, whatever its inputs."""

    remedy = Remedy.CACHE


@dataclass
class Pruned:
    """What pruning a store removed (or, in a dry run, would remove) and kept, in entries and bytes."""

    total_bytes: int = 0
    pruned_bytes: int = 0
    pruned: list[str] = field(default_factory=list)
    kept: int = 0


@dataclass(frozen=True)
class CacheStore:
    """The entries under `root`: folders (`suffix` "") or files (`<key><suffix>`). `reserved`: names beside the
    entries that are not entries and are never pruned (the build cache's `last/` records). `setting`: the paths.*
    setting that names the cache (in its errors)."""

    root: Path
    suffix: str = ""
    reserved: frozenset[str] = frozenset()
    setting: str = ""

    def path(self, key: str) -> Path:
        """Where the entry of `key` is (whether or not it exists)."""
        return self.root / f"{key}{self.suffix}"

    def lookup(self, key: str) -> Path | None:
        """The entry of `key`, or None when there is none. Entries are written whole (`put`, `put_bytes`), so one
        that exists is complete; whether it holds what its key says is for its reader to check."""
        entry = self.path(key)
        return entry if entry.exists() else None

    @contextmanager
    def put(self, key: str) -> Iterator[Path]:
        """A fresh folder to fill; it becomes the entry of `key` when the block ends (replacing an older one), and
        is removed when it raises: a crash never leaves a half entry under a key. The block only writes into the
        entry, so an OSError in it is the cache's (`CacheUnwritable`)."""
        try:
            with atomic_dir(self.path(key)) as tmp:
                yield tmp
        except OSError as e:
            raise self.unwritable(e) from e

    def put_bytes(self, key: str, data: bytes) -> Path:
        """Store `data` as the (file) entry of `key`, atomically."""
        try:
            return atomic_write_bytes(self.path(key), data)
        except OSError as e:
            raise self.unwritable(e) from e

    def check_writable(self) -> None:
        """Fail with `CacheUnwritable` unless a new entry can be written here (creating the folder): checked before
        a run depends on the store, so it stops in seconds, before any work, and names the folder."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe-"):
                pass
        except OSError as e:
            raise self.unwritable(e) from e

    def unwritable(self, error: OSError) -> CacheUnwritable:
        """The error to raise for `error`, met writing this store."""
        where = f" ({self.setting})" if self.setting else ""
        return CacheUnwritable(
            f"the cache {self.root}{where} cannot be written: {type(error).__name__}: {error}",
            path=str(self.root),
            setting=self.setting,
        )

    def keys(self) -> set[str]:
        """The keys of the entries there (no temp leftovers, no reserved names)."""
        if not self.root.is_dir():
            return set()
        names = (p.name for p in self.root.iterdir() if not p.name.startswith(".") and p.name not in self.reserved)
        return {n.removesuffix(self.suffix) for n in names if n.endswith(self.suffix)}

    def remove_temps(self) -> None:
        """Remove the temp entries a killed run left behind (`atomic_dir` and `atomic_write_bytes` name them
        `.<name>-...`). One writer per store at a time (the project lock) makes this safe."""
        if self.root.is_dir():
            for tmp in self.root.glob(".*"):
                _remove(tmp, ignore_errors=True)

    def prune(self, keep: Collection[str], dry_run: bool = False) -> Pruned:
        """Remove every item of the store but the entries of `keep` and the reserved names: other entries, temp
        leftovers, anything else put there. Nothing is removed in a dry run; the result says what would be."""
        done = Pruned()
        if not self.root.is_dir():
            return done
        names = {self.path(k).name for k in keep} | set(self.reserved)
        for item in sorted(self.root.iterdir()):
            size = tree_bytes(item)
            done.total_bytes += size
            if item.name in names:
                done.kept += 1
                continue
            done.pruned_bytes += size
            done.pruned.append(item.name)
            if not dry_run:
                _remove(item)
        return done


def tree_bytes(path: Path) -> int:
    """Bytes of the files under `path` (a hard link counted once per area would need inode tracking: it is not)."""
    if path.is_file() or path.is_symlink():
        return path.lstat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).lstat().st_size
            except FileNotFoundError:
                continue
    return total


def _remove(path: Path, ignore_errors: bool = False) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=ignore_errors)
    else:
        path.unlink(missing_ok=True)


def copy_tree(src: Path, dst: Path) -> None:
    """Copy the contents of `src` into the existing folder `dst`, keeping modification times."""
    for item in src.iterdir():
        if item.is_dir():
            shutil.copytree(item, dst / item.name, copy_function=shutil.copy2)
        else:
            shutil.copy2(item, dst / item.name)
