"""The video inventory: which files of the videos folder are videos, their content hashes, and the snapshot of them
a rebuild records (lineage, MLflow datasets, the DVC commit's check, the unchanged-rebuild fingerprint).

A video's sha256 is memoised in the frame cache (`<frame cache>/hashes/`) under its path, size, mtime and inode,
so an unchanged rerun does not read gate videos again. Only reading the video makes a video "unreadable"; a memo
that cannot be written is the cache's error (`tasks.support.cache.CacheUnwritable`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from tasks.support.cache import CacheStore
from tasks.support.errors import AlprError, Remedy
from tasks.support.hashing import sha256_bytes, sha256_file

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm", ".mjpeg", ".mjpg", ".ts"})
HASHES = "hashes"  # the frame cache's folder of memoised video hashes


class VideosMissing(AlprError):
    """The videos folder is not there."""

    remedy = Remedy.SAMPLE_VIDEOS


class VideosFolderMissing(AlprError):
    """A videos folder that held videos is not there, cannot be listed, or is suddenly empty (an unmounted share
    usually leaves its empty mount point): never read as "no videos", which would drop everything made from them
    (the watcher's rebuild of nothing, gc's pruning of the whole frame cache)."""


@dataclass(frozen=True)
class VideoInput:
    """One video as the rebuild read it when extraction started: the snapshot every record of the rebuild uses
    (lineage tags, MLflow datasets, the DVC commit's check), never the folder as it is later."""

    name: str
    size_bytes: int
    mtime_ns: int
    sha256: str


def list_videos(videos_dir: Path) -> tuple[list[Path], dict[str, str]]:
    """Video files in `videos_dir` (sorted) and the other files there with the reason they are not used."""
    if not videos_dir.is_dir():
        raise VideosMissing(f"{videos_dir}: no such folder")
    videos, skipped = [], {}
    for path in sorted(p for p in videos_dir.iterdir() if p.is_file() and not p.name.startswith(".")):
        if path.suffix.lower() in VIDEO_SUFFIXES:
            videos.append(path)
        else:
            skipped[path.name] = f"not a video file ({path.suffix or 'no suffix'})"
    return videos, skipped


def hash_memo_key(path: Path) -> str:
    """The name a file's hash is memoised under in `<cache>/hashes/` (`HASHES`): its path, size, mtime and inode."""
    st = path.stat()
    return sha256_bytes(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}".encode())


def snapshot_videos(videos: list[Path], cache_dir: Path, skipped: dict[str, str]) -> tuple[VideoInput, ...]:
    """The videos as they are now: name, size, mtime and sha256 (memoised). An unreadable one goes to `skipped`."""
    out = []
    for video in videos:
        try:
            st = video.stat()
            sha = file_sha256(video, cache_dir)
        except OSError as e:
            skipped[video.name] = f"cannot be read: {e}"
            continue
        out.append(VideoInput(video.name, st.st_size, st.st_mtime_ns, sha))
    return tuple(out)


def videos_unchanged(videos_dir: Path, inputs: Collection[VideoInput]) -> list[str]:
    """What differs between `videos_dir` now and the snapshot (added, removed or rewritten files, by name, size and
    mtime); [] when nothing does."""
    now = {v.name: (v.stat().st_size, v.stat().st_mtime_ns) for v in list_videos(videos_dir)[0]}
    then = {i.name: (i.size_bytes, i.mtime_ns) for i in inputs}
    changes = [f"added {n}" for n in sorted(set(now) - set(then))]
    changes += [f"removed {n}" for n in sorted(set(then) - set(now))]
    changes += [f"changed {n}" for n in sorted(set(now) & set(then)) if now[n] != then[n]]
    return changes


def file_sha256(path: Path, cache_dir: Path) -> str:
    """The file's sha256, memoised under (path, size, mtime, inode) so an unchanged rerun does not re-read videos."""
    memos = hash_memos(cache_dir)
    key = hash_memo_key(path)
    with contextlib.suppress(OSError):
        known = memos.path(key).read_text().strip()
        if len(known) == 64:
            return known
    digest = sha256_file(path)
    memos.put_bytes(key, digest.encode())
    return digest


def hash_memos(cache_dir: Path) -> CacheStore:
    """The memoised video hashes in the frame cache (`<frame cache>/hashes/`): one file per `hash_memo_key`."""
    return CacheStore(cache_dir / HASHES, setting="paths.frame_cache")
