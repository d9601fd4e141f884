"""The gate folder: `releases/v<version>/` and the `current` symlink the gate runtime follows.

Every path derived from the gate folder is built by `gate_paths`. `current` is switched with one rename of a fresh
symlink, so the gate sees the old release or the new one, never a partial copy. One promotion or rollback at a time
holds the gate folder's lock, and first clears what a killed one left behind (`recover`).

The folder's own state is checked, never assumed: `current` must resolve to a `releases/v<version>` of this folder
(a symlink leading elsewhere is refused, not run, reported or repaired to), and the folder's id (`gate.json`, which
names its registry aliases) is also recorded in every release's manifest, so a lost `gate.json` is recovered from
them instead of a new id silently orphaning the folder's `previous` alias.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.support.candidate import Candidate
from tasks.support.fsutil import atomic_write_text, fsync_dir
from tasks.support.hashing import sha256_bytes
from tasks.support.locks import file_lock
from tasks.support.verify import VerificationError, verify_artifact

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
GATE_ID_FILE = "gate.json"  # {"id": ...}: names this gate folder's registry aliases (champion-<id>, ...)
# in the manifest: where the artifact's sha256 was checked at promotion (the MLflow run / registry version record)
VERIFIED_KEY = "verified_against"
GATE_ID_KEY = "gate_id"  # in the manifest: the id of the gate folder it was deployed into (recovers a lost gate.json)
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class GateFolderError(VerificationError):
    """The gate folder's own state (`current`, `gate.json`) is not what promotion and rollback leave: nothing in it
    is run, reported as deployed or repaired to until a person has put it right."""


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


def stored_gate_id(gate_dir: Path) -> str | None:
    """The id in the folder's `gate.json` (None: no such file)."""
    path = gate_dir / GATE_ID_FILE
    if not path.is_file():
        return None
    try:
        value = str(json.loads(path.read_text())["id"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise GateFolderError(
            f"{path}: unreadable gate id ({e}); restore it from a backup, or delete it to recover the id from the "
            "releases' manifests"
        ) from e
    if not _ID.fullmatch(value):
        raise GateFolderError(f"{path}: gate id '{value}' is not [A-Za-z0-9_-]{{1,64}}")
    return value


def manifest_gate_id(gate_dir: Path) -> str | None:
    """The gate id the releases' manifests record (None: none records one, e.g. all deployed before they did).
    Releases that disagree are refused: the folder holds another folder's releases, and guessing would move the
    other folder's aliases."""
    found: dict[str, list[str]] = {}
    for release in sorted(gate_paths(gate_dir).releases.glob("v*")):
        try:
            value = read_manifest(release).get(GATE_ID_KEY)
        except VerificationError:
            continue  # an unreadable manifest is refused where the release is loaded, not here
        if value is not None:
            found.setdefault(str(value), []).append(release.name)
    if len(found) > 1:
        raise GateFolderError(
            f"{gate_dir / GATE_ID_FILE}: missing, and the releases' manifests record different gate ids ({found}); "
            f'write this folder\'s id into it ({{"id": "<id>"}}) or remove the releases of the other folder'
        )
    value = next(iter(found), None)
    if value is not None and not _ID.fullmatch(value):
        raise GateFolderError(f"{gate_dir / 'releases'}: manifests record gate id '{value}', not [A-Za-z0-9_-]{{1,64}}")
    return value


def gate_id(gate_dir: Path) -> str | None:
    """The folder's id: its `gate.json`, else the id its releases' manifests record (a lost `gate.json`). None:
    nothing was promoted into it since ids exist."""
    stored = stored_gate_id(gate_dir)
    return stored if stored is not None else manifest_gate_id(gate_dir)


def ensure_gate_id(gate_dir: Path, from_registry: Callable[[], str | None] = lambda: None) -> tuple[str, bool]:
    """The gate folder's id, under the promotion lock. A lost `gate.json` is recovered (and rewritten) from the
    releases' manifests, else from `from_registry` (the aliases of a release deployed before manifests recorded the
    id); only when neither knows it is a new one made: the folder's name and a hash of its absolute path, so two
    folders named alike get different ids and moving a folder keeps its id. Returns (id, created)."""
    stored = stored_gate_id(gate_dir)
    if stored is not None:
        return stored, False
    recovered, source = manifest_gate_id(gate_dir), "the releases' manifests"
    if recovered is None:
        recovered, source = from_registry(), "the registry's aliases"
    if recovered is not None:
        atomic_write_text(gate_dir / GATE_ID_FILE, json.dumps({"id": recovered}) + "\n")
        log.warning("%s was missing: id %s recovered from %s", gate_dir / GATE_ID_FILE, recovered, source)
        return recovered, False
    slug = re.sub(r"[^A-Za-z0-9_]+", "_", gate_dir.resolve().name)[:40] or "gate"
    new = f"{slug}-{sha256_bytes(str(gate_dir.resolve()).encode())[:8]}"
    atomic_write_text(gate_dir / GATE_ID_FILE, json.dumps({"id": new}) + "\n")
    log.info("gate folder %s: id %s (its registry aliases are champion-%s, previous-%s)", gate_dir, new, new, new)
    return new, True


def current_release(gate_dir: Path) -> Path | None:
    """The release `current` points at, or None before the first promotion. `current` must resolve to a
    `releases/v<version>` folder of this gate folder: anything else (an absolute symlink elsewhere, `..`, a
    hidden temp folder, a plain file or folder named `current`) raises `GateFolderError` naming it."""
    paths = gate_paths(gate_dir)
    link = paths.current
    if not link.is_symlink():
        if link.exists():
            raise GateFolderError(
                f"{link}: not a symlink; promotion and rollback switch it as one. Move it away and point {link} at a "
                f"release (ln -sfn releases/v<version> {link}), or promote again"
            )
        return None
    target = os.readlink(link)
    release = (gate_dir / target).resolve()
    if release.parent != paths.releases.resolve() or not release.name.startswith("v"):
        raise GateFolderError(
            f"{link} -> {target} resolves to {release}, not a release in {paths.releases}: it is not run, reported "
            f"as deployed or trusted to repair aliases. Point it back at the release you mean "
            f"(ln -sfn releases/v<version> {link}; the registry's champion alias names it)"
        )
    return release


def switch_current(gate_dir: Path, release: Path) -> None:
    """Point `current` at `release` with one atomic rename of a fresh symlink."""
    tmp = gate_dir / f".current.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(release.relative_to(gate_dir))
    os.replace(tmp, gate_paths(gate_dir).current)
    fsync_dir(gate_dir)  # the switch itself survives a power cut, not only the release it points at


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


def read_manifest(release: Path) -> dict[str, Any]:
    """A release's `manifest.json` (what promotion verified and deployed)."""
    try:
        return json.loads((release / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise VerificationError(f"{release / MANIFEST}: missing or unreadable: {e}") from e


def verify_release(release: Path, expected_sha256: str | None = None) -> Candidate:
    """A deployed release, checked (`tasks.support.verify`) against the manifest promotion wrote after verifying
    the artifact with the MLflow store's record, and against `expected_sha256` (that record) when given. A
    manifest without the verification record (deployed before it existed) is refused until adopted."""
    manifest = read_manifest(release)
    if not manifest.get(VERIFIED_KEY):
        raise VerificationError(
            f"{release / MANIFEST}: no verification record (deployed before artifacts were verified); run a "
            "promotion or rollback once to adopt it"
        )
    sha = str(manifest.get("sha256", ""))
    if expected_sha256 is not None and sha != expected_sha256:
        raise VerificationError(f"{release / MANIFEST}: sha256 {sha} is not the recorded {expected_sha256}")
    cand = verify_artifact(release, sha, str(release / MANIFEST))
    if manifest.get("artifact", cand.artifact) != cand.artifact:
        raise VerificationError(f"{release}: candidate.json names '{cand.artifact}', its manifest another artifact")
    return cand


def release_is_complete(release: Path, expected_sha256: str | None = None) -> bool:
    """True when `release` has a manifest and passes `verify_release` (against `expected_sha256` when given)."""
    try:
        verify_release(release, expected_sha256)
    except VerificationError as e:
        if (release / MANIFEST).exists():
            log.warning("%s", e)
        return False
    return True
