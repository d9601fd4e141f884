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
