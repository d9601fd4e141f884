"""`alpr-ops init --from DIR` takes the videos by the rules of every import: regular files inside DIR. A video-named
entry that is not one is named, and nothing of the project changes; other entries are listed as skipped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tasks.operations.onboarding import InitError, init_project, source_videos
from tasks.support.config import Params, load_params
from tasks.support.errors import Remedy


def params_at(root: Path) -> Params:
    (root / "params.yaml").write_text((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    return load_params(root / "params.yaml")


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_dead_symlink_and_other_non_videos_are_named_and_nothing_changes(tmp_path: Path) -> None:
    root = tmp_path / "project"
    root.mkdir()
    params = params_at(root)
    p = params.paths
    p.videos.mkdir(parents=True)
    (p.videos / "old.mp4").write_bytes(b"the project's video")  # replaced only with --force, and only on success
    p.model.parent.mkdir(parents=True)
    p.model.write_bytes(b"not the pinned detector")  # init never gets as far as verifying it
    before = _files(root)
    source = tmp_path / "camera"
    source.mkdir()
    (source / "gate_01.mp4").write_bytes(b"a video")
    (source / "gate_02.mp4").symlink_to(tmp_path / "archive" / "gate_02.mp4")  # the archive is not mounted
    (tmp_path / "secret.mp4").write_bytes(b"somebody else's file")
    (source / "gate_03.mp4").symlink_to(tmp_path / "secret.mp4")
    (source / "gate_04.mp4").mkdir()
    (source / "gate_05.mp4").write_bytes(b"")
    os.mkfifo(source / "gate_06.mp4")
    with pytest.raises(InitError) as e:
        init_project(root, params, source, force=True)
    assert str(e.value).splitlines() == [
        f"{source}: 5 of its videos cannot be taken; replace them with the video files themselves or move them out "
        "of the folder:",
        f"  gate_02.mp4: a broken symlink (to {tmp_path / 'archive' / 'gate_02.mp4'}): the file it names does not "
        "exist",
        f"  gate_03.mp4: leads to {tmp_path / 'secret.mp4'}, outside {source}: only files inside the folder are "
        "imported (copy the file in)",
        "  gate_04.mp4: not a regular file (a folder)",
        "  gate_05.mp4: an empty file (0 bytes)",
        "  gate_06.mp4: not a regular file (a FIFO)",
    ]
    assert e.value.remedy is Remedy.SAMPLE_VIDEOS
    assert _files(root) == before
    assert sorted(f.name for f in root.iterdir()) == ["data", "models", "params.yaml"]
    assert sorted(f.name for f in p.videos.parent.iterdir()) == ["videos"], "a temp folder was left behind"


def test_what_is_taken_and_what_is_skipped(tmp_path: Path) -> None:
    source = tmp_path / "camera"
    (source / "raw").mkdir(parents=True)
    (source / "raw" / "b.mov").write_bytes(b"a video")
    (source / "a.mp4").write_bytes(b"a video")
    (source / "b.mov").symlink_to(source / "raw" / "b.mov")  # inside the folder: a video of it
    (source / "notes.txt").write_text("gate 7, north")
    (source / "old.txt").symlink_to(tmp_path / "gone.txt")
    (source / ".DS_Store").write_bytes(b"")
    videos, skipped = source_videos(source)
    assert videos == [source / "a.mp4", source / "b.mov"]
    assert skipped == {
        "notes.txt": "not a video file (.txt)",
        "old.txt": f"a broken symlink (to {tmp_path / 'gone.txt'}): the file it names does not exist",
        "raw": "not a regular file (a folder)",
    }
    with pytest.raises(InitError, match="no such folder"):
        source_videos(tmp_path / "missing")
