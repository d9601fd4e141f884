"""The reference plate detector finds the synthetic holdout plates: the generator is useful for accuracy checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.demo.synth import write_holdout

pytestmark = pytest.mark.integration


def test_detector_recall_on_synthetic_holdout(plate_model: Path, tmp_path: Path) -> None:
    from ultralytics import YOLO  # heavy import, only when the test runs

    out = write_holdout(tmp_path / "holdout", 12, seed=7)
    data = tmp_path / "data.yaml"
    data.write_text(f"path: {out}\ntrain: images\nval: images\nnames:\n  0: License_Plate\n")
    metrics = YOLO(str(plate_model)).val(
        data=str(data),
        imgsz=640,
        batch=1,
        rect=False,
        plots=False,
        verbose=False,
        device="cpu",
        project=str(tmp_path / "runs"),
        name="val",
    )
    assert metrics.box.r.mean() >= 0.85, f"recall {metrics.box.r}"
    assert metrics.box.map50 >= 0.8, f"mAP50 {metrics.box.map50}"
