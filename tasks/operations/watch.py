"""Watch the videos folder and start one rebuild per burst of new videos, once every file has stopped growing.

Polling, not inotify: gate videos arrive over network shares and through `dvc pull`, where file events are missing
or unreliable, and a scan of one folder every few seconds costs nothing. A file has *landed* when its size and
mtime stayed unchanged for `settle_s`; a burst ends `debounce_s` after the last file landed. Then the trigger runs
once for the whole burst. What was last triggered is kept in a state file, so a restarted watcher neither misses
videos that landed while it was down nor rebuilds again for videos it already handled.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tasks.support.config import WatchConfig
from tasks.support.errors import LockBusy
from tasks.support.fsutil import atomic_write_text
from tasks.support.hashing import sha256_file
from tasks.support.locks import file_lock
from tasks.support.videos import VIDEO_SUFFIXES, VideosFolderMissing

log = logging.getLogger(__name__)

# Names copy tools and browsers give a file while it is still being written.
PARTIAL_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".download", "~")

Snapshot = dict[str, tuple[int, int]]  # file name -> (size, mtime_ns)


def scan(folder: Path) -> Snapshot:
    """The video files of `folder` with their size and mtime; hidden and partially-downloaded files are skipped.

    A folder that is not there, or cannot be listed, raises `VideosFolderMissing`: read as empty, an unmounted
    share would look like every video removed (a failing rebuild), then every video added (a full one)."""
    try:
        entries = list(folder.iterdir())
    except OSError as e:  # FileNotFoundError, NotADirectoryError, PermissionError, a stale network mount
        raise VideosFolderMissing(
            f"{folder}: the watched videos folder cannot be read ({e.strerror or e}); is its share mounted?",
            path=str(folder),
        ) from e
    out: Snapshot = {}
    for path in entries:
        name = path.name
        if name.startswith(".") or name.lower().endswith(PARTIAL_SUFFIXES):
            continue
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            continue
        try:
            st = path.stat()
        except FileNotFoundError:  # removed between listing and stat
            continue
        if path.is_file():
            out[name] = (st.st_size, st.st_mtime_ns)
    return out


@dataclass(frozen=True)
class Burst:
    """What changed in the folder since the last rebuild was triggered."""

    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]
    snapshot: Snapshot = field(repr=False)

    def describe(self) -> str:
        parts = [f"{label} {', '.join(names)}" for label, names in (
            ("new:", self.added), ("changed:", self.changed), ("removed:", self.removed)) if names]  # fmt: skip
        return "; ".join(parts) or "no change"


def diff(known: Snapshot, now: Snapshot) -> Burst:
    return Burst(
        added=tuple(sorted(set(now) - set(known))),
        changed=tuple(sorted(n for n in set(now) & set(known) if now[n] != known[n])),
        removed=tuple(sorted(set(known) - set(now))),
        snapshot=dict(now),
    )


@dataclass
class Landing:
    """The pure part of the watcher: fed one scan at a time, it says when a burst has landed.

    Any change in the folder (a file appearing, growing, being touched or removed) restarts the quiet period, so
    a slow copy in chunks, or several files copied one after another, make one burst that ends `settle_s +
    debounce_s` after the last byte was written.
    """

    known: Snapshot
    settle_s: float
    debounce_s: float
    _last: Snapshot | None = None
    _last_change: float = 0.0

    def update(self, now: float, snapshot: Snapshot) -> Burst | None:
        if snapshot != self._last:
            self._last, self._last_change = dict(snapshot), now
        if snapshot == self.known:
            return None
        if now - self._last_change < self.settle_s + self.debounce_s:
            return None
        return diff(self.known, snapshot)

    def done(self, burst: Burst) -> None:
        """The trigger accepted `burst`: its files are now the known set."""
        self.known = dict(burst.snapshot)


def load_state(state_file: Path) -> Snapshot | None:
    """The snapshot the last rebuild was triggered for; None when this project was never watched."""
    if not state_file.is_file():
        return None
    try:
        doc = json.loads(state_file.read_text())
        return {name: (int(v[0]), int(v[1])) for name, v in doc["videos"].items()}
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise ValueError(
            f"{state_file}: unreadable watcher state ({e}). Delete it: the watcher then takes the videos present "
            "now as already rebuilt, and rebuilds on the next change."
        ) from e


def save_state(state_file: Path, snapshot: Snapshot, dvc_md5: str | None) -> None:
    doc = {"videos": {n: list(v) for n, v in sorted(snapshot.items())}, "dvc_md5": dvc_md5}
    state_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(state_file, json.dumps(doc, indent=1) + "\n")


def dvc_file_md5(dvc_file: Path) -> str | None:
    """The hash a `.dvc` file records for the videos folder (changes when `git pull` brings new videos)."""
    if not dvc_file.is_file():
        return None
    try:
        outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs") or []
    except yaml.YAMLError:
        return None  # being rewritten: read it again on the next poll
    if not outs:
        return None
    return str(outs[0].get("md5") or sha256_file(dvc_file))


def dvc_in_sync(dvc_file: Path) -> bool:
    """Whether the folder already holds what `dvc_file` records (e.g. a rebuild's own `dvc commit` changed it)."""
    cmd = [sys.executable, "-m", "dvc", "status", "--json", dvc_file.name]
    done = subprocess.run(cmd, cwd=dvc_file.parent, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"`dvc status {dvc_file}` failed:\n{done.stdout}{done.stderr}")
    return json.loads(done.stdout or "{}") == {}


def dvc_pull(dvc_file: Path) -> None:
    """Bring the videos folder to what `dvc_file` records (from the DVC cache, else the remote)."""
    cmd = [sys.executable, "-m", "dvc", "pull", "--quiet", dvc_file.name]
    done = subprocess.run(cmd, cwd=dvc_file.parent, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"`dvc pull {dvc_file}` failed:\n{done.stdout}{done.stderr}")


@dataclass
class Watcher:
    """Polls `videos`; calls `trigger(burst)` once per landed burst. `trigger` returns once the rebuild is queued
    (it must not wait for the rebuild to finish); if it raises, the burst is retried on the next poll."""

    videos: Path
    cfg: WatchConfig
    state_file: Path
    trigger: Callable[[Burst], None]
    dvc_file: Path | None = None  # `<videos>.dvc`: a changed hash there (after `git pull`) makes the watcher pull
    lock_file: Path | None = None  # the project lock: no `dvc pull` while a rebuild (or extract) reads the videos
    clock: Callable[[], float] = time.monotonic
    _landing: Landing | None = None
    _dvc_md5: str | None = None
    _missing: bool = False  # the folder was not there at the last scan (said once per outage)

    def start(self) -> None:
        """Load the state; on the first run the videos present now count as already rebuilt."""
        known = load_state(self.state_file)
        self._dvc_md5 = self._read_state_md5()
        if known is None:
            known = scan(self.videos)
            self._dvc_md5 = dvc_file_md5(self.dvc_file) if self.dvc_file else None
            save_state(self.state_file, known, self._dvc_md5)
            log.info("watching %s: %d video(s) present, new ones will start a rebuild", self.videos, len(known))
        else:
            log.info("watching %s (state %s: %d video(s) rebuilt last)", self.videos, self.state_file, len(known))
        self._landing = Landing(known, self.cfg.settle_s, self.cfg.debounce_s)

    def _read_state_md5(self) -> str | None:
        if not self.state_file.is_file():
            return None
        try:
            return json.loads(self.state_file.read_text()).get("dvc_md5")
        except ValueError:
            return None

    def poll(self) -> Burst | None:
        """One scan; returns the burst it triggered a rebuild for, if any."""
        if self._landing is None:
            self.start()
        assert self._landing is not None
        self._check_dvc()
        now = self.clock()
        try:
            snapshot = scan(self.videos)
            if not snapshot and self._landing.known:  # an unmounted share usually leaves its empty mount point
                raise VideosFolderMissing(
                    f"{self.videos}: the watched videos folder is empty but held {len(self._landing.known)} videos; "
                    "is its share mounted? (to really remove every video, stop the watcher first)",
                    path=str(self.videos),
                )
        except VideosFolderMissing as e:
            if not self._missing:
                log.error('%s Not read as "all videos removed": waiting for it to come back.', e)
            self._missing = True
            return None
        if self._missing:
            log.warning("%s is back; watching it again", self.videos)
            self._missing = False
        burst = self._landing.update(now, snapshot)
        if burst is None:
            return None
        log.info("videos landed in %s (%s): starting a rebuild", self.videos, burst.describe())
        try:
            self.trigger(burst)
        except Exception as e:  # the Prefect API restarting, the deployment not registered yet: try again later
            log.warning("could not start the rebuild (%s: %s); retrying on the next scan", type(e).__name__, e)
            return None
        self._landing.done(burst)
        save_state(self.state_file, burst.snapshot, self._dvc_md5)
        return burst

    def _check_dvc(self) -> None:
        """Videos versioned with DVC: when `<videos>.dvc` records new data (a `git pull`), pull it into the folder;
        the pulled files then land like any others."""
        if self.dvc_file is None:
            return
        md5 = dvc_file_md5(self.dvc_file)
        if md5 is None or md5 == self._dvc_md5:
            return  # unchanged
        # under the project lock (never waiting: a rebuild runs, and its own `dvc commit` rewrites the file; look
        # again later), so no rebuild or extract reads the folder while the pull writes it
        held = file_lock(self.lock_file, "watcher dvc pull", wait=False) if self.lock_file else nullcontext()
        try:
            with held:
                if not dvc_in_sync(self.dvc_file):
                    log.info("%s records videos this folder lacks: dvc pull", self.dvc_file)
                    dvc_pull(self.dvc_file)
        except LockBusy:
            return
        except RuntimeError as e:
            log.warning("%s; retrying on the next scan", e)
            return
        self._dvc_md5 = md5

    def run(self, stop: threading.Event) -> None:
        """Poll every `poll_s` until `stop` is set."""
        self.start()
        while not stop.is_set():
            self.poll()
            stop.wait(self.cfg.poll_s)
