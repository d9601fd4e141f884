"""Videos that arrive through DVC: a `git pull` brings a new `videos.dvc`; the watcher pulls the data and rebuilds."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import run_dvc as dvc

from tasks.operations.watch import Burst, Watcher
from tasks.support.config import WatchConfig

pytestmark = pytest.mark.integration

FAST = WatchConfig(poll_s=0.1, settle_s=0.5, debounce_s=0.5)


def git(root: Path, *args: str) -> None:
    cmd = ["git", "-c", "user.name=alpr-test", "-c", "user.email=alpr-test@localhost", *args]
    subprocess.run(cmd, cwd=root, check=True, capture_output=True)


def test_pulled_dvc_videos_start_one_rebuild(tmp_path: Path, sample_data: Path) -> None:
    sources = sorted((sample_data / "videos").iterdir())
    origin, remote, clone = tmp_path / "origin", tmp_path / "remote", tmp_path / "clone"
    origin.mkdir()
    git(origin, "init", "-q")
    dvc(origin, "init", "-q")
    dvc(origin, "remote", "add", "-d", "store", str(remote))
    (origin / "videos").mkdir()
    shutil.copy(sources[0], origin / "videos" / "a.mp4")
    dvc(origin, "add", "-q", "videos")
    dvc(origin, "push", "-q")
    git(origin, "add", "-A")
    git(origin, "commit", "-qm", "videos v1")

    git(tmp_path, "clone", "-q", str(origin), str(clone))
    dvc(clone, "pull", "-q")
    calls: list[Burst] = []
    watcher = Watcher(clone / "videos", FAST, clone / ".cache" / "watch.json", calls.append, clone / "videos.dvc")
    watcher.start()  # a.mp4 is the baseline

    shutil.copy(sources[1], origin / "videos" / "b.mp4")  # someone adds a video upstream
    dvc(origin, "add", "-q", "videos")
    dvc(origin, "push", "-q")
    git(origin, "commit", "-qam", "videos v2")
    git(clone, "pull", "-q")  # only the .dvc file changed here: the videos folder is stale
    assert not (clone / "videos" / "b.mp4").exists()

    deadline = time.monotonic() + 60
    while not calls and time.monotonic() < deadline:
        watcher.poll()
        time.sleep(FAST.poll_s)
    assert [b.added for b in calls] == [("b.mp4",)]
    assert (clone / "videos" / "b.mp4").read_bytes() == sources[1].read_bytes()
    for _ in range(int((FAST.settle_s + FAST.debounce_s) / FAST.poll_s) + 5):  # nothing more: one rebuild
        watcher.poll()
        time.sleep(FAST.poll_s)
    assert len(calls) == 1
