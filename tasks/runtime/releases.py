"""The gate folder: `releases/v<version>/` and the `current` symlink the gate runtime follows.

Every path derived from the gate folder is built by `gate_paths`. `current` is switched with one rename of a fresh
symlink, so the gate sees the old release or the new one, never a partial copy. One promotion or rollback at a time
holds the gate folder's lock, and first clears what a killed one left behind (`recover`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tasks.support.candidate import CANDIDATE_JSON
from tasks.support.hashing import path_sha256
from tasks.support.locks import file_lock

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class GatePaths:
    """The paths of one gate folder."""

    root: Path
    current: Path  # symlink to the deployed release
    releases: Path  # one folder per deployed version: v<version>/
    lock: Path  # held by a promotion or rollback

    def release(self, version: str) -> Path:
        return self.releases / f"v{version}"


def gate_paths(gate_dir: Path) -> GatePaths:
    """Every path derived from a gate folder, built here only."""
    return GatePaths(gate_dir, gate_dir / "current", gate_dir / "releases", gate_dir / ".promote.lock")


def current_release(gate_dir: Path) -> Path | None:
    """The release `current` points at, or None before the first promotion."""
    link = gate_paths(gate_dir).current
    return (gate_dir / os.readlink(link)).resolve() if link.is_symlink() else None


def switch_current(gate_dir: Path, release: Path) -> None:
    """Point `current` at `release` with one atomic rename of a fresh symlink."""
    tmp = gate_dir / f".current.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(release.relative_to(gate_dir))
    os.replace(tmp, gate_paths(gate_dir).current)


def recover(gate_dir: Path) -> None:
    """Clear what a killed promotion left: temp symlinks, half-downloaded releases, trash; restore a moved-aside
    release whose replacement never arrived. Only called under the lock, so no other promotion is using them."""
    for tmp in gate_dir.glob(".current.*.tmp"):
        tmp.unlink(missing_ok=True)
    releases = gate_paths(gate_dir).releases
    if not releases.is_dir():
        return
    for item in releases.glob(".*"):
        if item.name.endswith("-old") and item.is_dir():
            for kept in item.iterdir():
                if not (releases / kept.name).exists():
                    os.replace(kept, releases / kept.name)
                    log.warning("restored %s, moved aside by a killed promotion", releases / kept.name)
        log.info("removing %s, left by a killed promotion", item)
        shutil.rmtree(item, ignore_errors=True) if item.is_dir() else item.unlink(missing_ok=True)


@contextlib.contextmanager
def promotion_lock(gate_dir: Path) -> Iterator[None]:
    """One promotion or rollback at a time per gate folder; recovers a killed one's leftovers on entry."""
    with file_lock(gate_paths(gate_dir).lock, "promotion or rollback", wait=False):
        recover(gate_dir)
        yield


def prune_releases(gate_dir: Path, keep: int) -> None:
    """Delete the oldest releases beyond `keep`, never the one `current` points at.

    Each is renamed to a hidden name first, so a kill mid-delete never leaves a half-deleted `v<N>` behind.
    """
    current = current_release(gate_dir)
    releases = sorted(gate_paths(gate_dir).releases.glob("v*"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in releases[keep:]:
        if old.resolve() != current:
            trash = old.with_name(f".{old.name}-trash")
            os.replace(old, trash)
            shutil.rmtree(trash, ignore_errors=True)


def release_is_complete(release: Path) -> bool:
    """True when `release` has a manifest and its artifact hashes to the manifest's sha256."""
    try:
        manifest = json.loads((release / MANIFEST).read_text())
        meta = json.loads((release / CANDIDATE_JSON).read_text())
        return manifest.get("sha256") == meta["sha256"] == path_sha256(release / meta["artifact"])
    except (OSError, ValueError, KeyError):
        return False
