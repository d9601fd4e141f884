"""DVC sees extraction the way the frame cache does: `dvc repro` after adding or removing a video decodes only what
changed, and the stage's outputs (frames, manifests, report) are recorded truthfully."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import copy_project_code
from conftest import run_dvc as dvc

from tasks.demo.synth import SynthConfig
from testkit.clips import encode_clip, scene_frames

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SMALL = SynthConfig(width=160, height=120, fps=10)


def test_dvc_repro_decodes_only_new_videos(tmp_path: Path, make_params) -> None:
    params = make_params(tmp_path, extract={"interval_s": 0.5, "max_frames_per_video": 4, "holdout_fraction": 0.0})
    videos = params.paths.videos
    for i in range(2):
        encode_clip(videos / f"v{i}.mp4", scene_frames(i, 20, SMALL), SMALL.fps)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    dvc(tmp_path, "init", "-q")
    copy_project_code(tmp_path)
    shutil.copyfile(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    report = tmp_path / "data" / "calibration" / "report.json"

    dvc(tmp_path, "add", "-q", "data/videos")
    dvc(tmp_path, "repro", "extract")
    assert json.loads(report.read_text())["decoded_videos"] == 2
    assert "up to date" in dvc(tmp_path, "status", "extract")

    encode_clip(videos / "v2.mp4", scene_frames(2, 20, SMALL), SMALL.fps)  # a new video lands
    dvc(tmp_path, "add", "-q", "data/videos")
    assert "changed deps" in dvc(tmp_path, "status", "extract")
    dvc(tmp_path, "repro", "extract")  # DVC deletes the outputs first; the frame cache survives it
    doc = json.loads(report.read_text())
    assert doc["decoded_videos"] == 1 and doc["cached_videos"] == 2 and doc["videos"]["v2.mp4"]["decoded"]
    assert "up to date" in dvc(tmp_path, "status", "extract")

    (videos / "v0.mp4").unlink()
    dvc(tmp_path, "add", "-q", "data/videos")
    dvc(tmp_path, "repro", "extract")
    doc = json.loads(report.read_text())
    assert doc["decoded_videos"] == 0 and set(doc["videos"]) == {"v1.mp4", "v2.mp4"}
    manifest = (tmp_path / "data" / "calibration" / "manifest.csv").read_text()
    assert "v0.mp4" not in manifest and "v2.mp4" in manifest
    assert "didn't change" in dvc(tmp_path, "repro", "extract")
