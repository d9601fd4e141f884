"""Day one on your own footage: a fresh clone of the project takes a folder of real gate videos.

`init_project` copies (or links) the videos into `paths.videos`, puts them and the pinned detector under DVC, and
writes no synthetic data. It never writes over a project's data unless asked to: videos already there, or a
labelled holdout, are somebody's work.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tasks.pipeline.fetch import fetch_model
from tasks.support.config import Params
from tasks.support.dvc import dvc_track
from tasks.support.errors import AlprError, Remedy
from tasks.support.fsutil import atomic_dir
from tasks.support.images import imported_file_problem
from tasks.support.videos import VIDEO_SUFFIXES, list_videos

log = logging.getLogger(__name__)


class InitError(AlprError):
    """The source folder holds no video, or the project already has data that `init` would replace."""


@dataclass(frozen=True)
class InitResult:
    videos: tuple[str, ...]
    linked: bool
    skipped: dict[str, str]
    dvc_files: tuple[Path, ...]


def init_project(root: Path, params: Params, source: Path, *, link: bool = False, force: bool = False) -> InitResult:
    """Bring the videos of `source` into the project at `root` (copied, or symlinked with `link`), fetch the
    detector, and put both under DVC. With `link`, DVC is told to link its workspace copies (cache.type
    hardlink,symlink), so a large archive is stored once more (in the DVC cache), not twice."""
    p = params.paths
    videos, skipped = source_videos(source)
    if not videos:
        raise InitError(f"{source}: no video files ({', '.join(skipped) or 'the folder is empty'})")
    existing = [v.name for v in list_videos(p.videos)[0]] if p.videos.is_dir() else []
    if (existing or (p.holdout / "images").is_dir()) and not force:
        what = f"{len(existing)} videos in {p.videos}" if existing else f"a labelled holdout in {p.holdout}"
        raise InitError(f"{root} already has data ({what}); init would replace it", remedy=Remedy.REPLACE_DATA)
    with atomic_dir(p.videos) as tmp:
        for video in videos:
            if link:
                (tmp / video.name).symlink_to(video.resolve())
            else:
                shutil.copy2(video, tmp / video.name)
    log.info("%s %d videos from %s into %s", "linked" if link else "copied", len(videos), source, p.videos)
    if link:
        _dvc_config(root, "cache.type", "hardlink,symlink")
    fetch_model(p.model, params.model.package, params.model.member, params.model.sha256)
    dvc_files = dvc_track(root, [p.videos, p.model], ["paths.videos", "paths.model"])
    return InitResult(tuple(v.name for v in videos), link, skipped, tuple(dvc_files))


def source_videos(source: Path) -> tuple[list[Path], dict[str, str]]:
    """The videos of `source` (sorted) and the other entries with why they are not taken (hidden ones are not
    listed). Only regular files inside `source` are taken, by the rules of every import (`imported_file_problem`):
    an entry named as a video that is not one (a broken symlink, a symlink out of the folder, a folder, a FIFO, an
    empty file) is an InitError naming every such entry, before anything is copied."""
    if not source.is_dir():
        raise InitError(f"{source}: no such folder", remedy=Remedy.SAMPLE_VIDEOS)
    videos: list[Path] = []
    skipped: dict[str, str] = {}
    refused: list[str] = []
    for path in sorted(p for p in source.iterdir() if not p.name.startswith(".")):
        problem = imported_file_problem(path, source)
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            skipped[path.name] = problem or f"not a video file ({path.suffix or 'no suffix'})"
            continue
        if problem is None and path.stat().st_size == 0:
            problem = "an empty file (0 bytes)"
        if problem:
            refused.append(f"{path.name}: {problem}")
        else:
            videos.append(path)
    if refused:
        raise InitError(
            f"{source}: {len(refused)} of its videos cannot be taken; replace them with the video files themselves "
            "or move them out of the folder:" + "".join(f"\n  {r}" for r in refused),
            remedy=Remedy.SAMPLE_VIDEOS,
            refused=refused,
        )
    return videos, skipped


def _dvc_config(root: Path, key: str, value: str) -> None:
    cmd = [sys.executable, "-m", "dvc", "config", "--local", key, value]
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise InitError(f"`dvc config --local {key} {value}` in {root} failed: {done.stderr.strip()}")
