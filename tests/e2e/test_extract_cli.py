"""`alpr-ops extract` as a user and the DVC stage run it: both frame sets, the report and the closing summary."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tasks.support.config import Params

pytestmark = pytest.mark.e2e


def test_extract_writes_both_frame_sets_and_prints_a_summary(project: Params, cli) -> None:
    root = project.paths.videos.parents[1]
    (project.paths.videos / "broken.mp4").write_bytes(b"\x00" * 100)
    done = cli(root, "extract")
    assert "Extracted frames" in done.stdout and "broken.mp4" in done.stdout and "gate_" in done.stdout
    report = json.loads((project.paths.calibration / "report.json").read_text())
    assert report["decoded_videos"] == 3 and "broken.mp4" in report["skipped"]
    calib = pd.read_csv(project.paths.calibration / "manifest.csv")
    hold = pd.read_csv(project.paths.holdout_frames / "manifest.csv")
    assert len(calib) == report["calibration_frames"] > 0 and len(hold) == report["holdout_frames"]
    assert set(calib["video"]).isdisjoint(hold["video"])

    again = cli(root, "extract")  # unchanged: every video comes from the frame cache
    assert "cached" in again.stdout
    report = json.loads((project.paths.calibration / "report.json").read_text())
    assert report["decoded_videos"] == 0 and report["decoded_frames"] == 0
    assert (project.paths.frame_cache / "entries").is_dir()


def test_extract_refuses_a_folder_of_files_and_an_unwritable_cache_with_advice(project: Params, tmp_path) -> None:
    """Issue items 2 and 5 as a user meets them: `--calibration` (paths.calibration) at a folder of files deletes
    nothing and says which setting to change; a frame cache that cannot be written (a regular file where its folder
    goes: that stops root too) is a cache error naming the cache, exit 1, never "videos cannot be read" and
    `sample-videos`."""
    from conftest import run_cli  # extract runs no flow: no Prefect server needed

    root = project.paths.videos.parents[1]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "important.txt").write_text("keep me")
    done = run_cli(root, "extract", "--calibration", str(mine), check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    err = " ".join(done.stderr.split())
    assert f"{mine} (paths.calibration) holds files" in err and "new or empty folder" in err
    assert sorted(p.name for p in mine.iterdir()) == ["important.txt"]

    (tmp_path / "blocker").write_text("a file where the cache's folder goes")
    done = run_cli(root, "extract", "--frame-cache", str(tmp_path / "blocker" / "frames"), check=False)
    err = " ".join(done.stderr.split())
    assert done.returncode == 3 and "Traceback" not in done.stderr
    assert f"the cache {tmp_path / 'blocker' / 'frames'}" in err and "(paths.frame_cache) cannot be written" in err
    assert "writable" in err and "sample-videos" not in err and "cannot be read" not in err
    assert not project.paths.calibration.exists()
