"""The region of interest in operation: the rebuild's MLflow run records it and its drawing (real sqlite store),
`alpr-ops report` embeds both, and the gate runtime's printout says what an engine looks at."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tasks.operations.report import NO_ROI, load_rebuild, write_report
from tasks.pipeline.roi_image import BLUE, GREEN, YELLOW, draw_roi
from tasks.pipeline.track import log_roi
from tasks.support.config import Params
from tasks.support.roi import ROI_JSON, RoiRecord, write_roi
from tasks.support.tracking import KIND_TAG, client, experiment_id

GREY = 128
RECORD = RoiRecord(
    mode="auto", frame_shape=(360, 640), roi=(0.3, 0.5, 0.9, 0.95), crop=(160, 170, 608, 350), input_shape=(128, 320),
    plates=12, frames=8, margin=0.04, reason="learned from 12 plates on 8 frames",
)  # fmt: skip


def grey(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((360, 640, 3), GREY, dtype=np.uint8))
    return path


@pytest.fixture
def project(tmp_path: Path) -> Params:
    """A project's paths and a sqlite store under tmp_path; a labelled holdout of two frames (the second with two
    plates) and one calibration frame, all plain grey."""
    base = Params()
    paths = base.paths.model_copy(
        update={k: tmp_path / k for k in ("candidates", "calibration", "holdout", "holdout_frames", "reports")}
    )
    tracking = base.tracking.model_copy(
        update={"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "artifacts": tmp_path / "mlartifacts"}
    )
    grey(paths.calibration / "images" / "c_000.png")
    for name, labels in {"h_000": "0 0.5 0.8 0.1 0.05\n", "h_001": "0 0.5 0.8 0.1 0.05\n0 0.7 0.7 0.1 0.05\n"}.items():
        grey(paths.holdout / "images" / f"{name}.png")
        (paths.holdout / "labels").mkdir(parents=True, exist_ok=True)
        (paths.holdout / "labels" / f"{name}.txt").write_text(labels)
    paths.candidates.mkdir(parents=True)
    return base.model_copy(update={"paths": paths, "tracking": tracking})


def rebuild_run(params: Params) -> str:
    mc = client(params.tracking)
    run = mc.create_run(experiment_id(mc, params.tracking), tags={KIND_TAG: "rebuild"})
    return run.info.run_id


def test_the_rebuild_run_records_the_roi_and_the_report_draws_it(project: Params, tmp_path: Path) -> None:
    write_roi(project.paths.candidates / ROI_JSON, RECORD)
    rid = rebuild_run(project)
    mc = client(project.tracking)
    assert log_roi(mc, rid, project)
    mc.set_terminated(rid)
    run = mc.get_run(rid)
    assert run.data.params["roi"] == "0.3,0.5,0.9,0.95" and run.data.params["roi_mode"] == "auto"
    assert run.data.params["roi_crop"] == "crop x 160-608, y 170-350 (448x180 px) of 640x360 frames"
    assert run.data.metrics["roi_plates"] == 12 and run.data.metrics["roi_area_fraction"] == pytest.approx(0.27)
    assert {f.path for f in mc.list_artifacts(rid, "roi")} == {"roi/roi.json", "roi/roi.png"}

    png = cv2.imread(mc.download_artifacts(rid, "roi/roi.png", str(tmp_path / "got")))
    assert png.shape == (360, 640, 3)
    assert tuple(png[180, 400]) == GREEN  # the ROI's top edge (y 0.5 of 360)
    assert tuple(png[349, 400]) == BLUE  # the crop's bottom edge, where the ROI (y 0.95) stops short of it
    assert tuple(png[300, 20]) == (57,) * 3  # outside the crop: dimmed
    assert tuple(png[250, 300]) == (GREY,) * 3  # inside: as the frame is
    assert tuple(png[243, 416]) == YELLOW  # the second labelled plate of h_001: drawn on the frame with the most

    view = load_rebuild(project.tracking, rid)
    assert view.roi["reason"] == RECORD.reason and view.roi["area"] == "27% of the frame"
    folder = write_report(project.tracking, view, project.paths.reports)
    md, html = (folder / "report.md").read_text(), (folder / "report.html").read_text()
    assert "![region of interest on a frame](images/roi.png)" in md and 'src="images/roi.png"' in html
    for text in (md, html):
        assert "learned from 12 plates on 8 frames" in text and "12 plates on 8 frames" in text
        assert "x 0.30-0.90, y 0.50-0.95" in text and "0.04 of the frame" in text
    assert cv2.imread(str(folder / "images" / "roi.png")).shape == (360, 640, 3)


def test_nothing_is_logged_without_roi_json(project: Params) -> None:
    rid = rebuild_run(project)
    mc = client(project.tracking)
    assert not log_roi(mc, rid, project)
    mc.set_terminated(rid)
    run = mc.get_run(rid)
    assert not {"roi", "roi_mode"} & set(run.data.params) and "roi_plates" not in run.data.metrics
    assert mc.list_artifacts(rid, "roi") == []
    folder = write_report(project.tracking, load_rebuild(project.tracking, rid), project.paths.reports)
    assert NO_ROI in (folder / "report.md").read_text() and NO_ROI in (folder / "report.html").read_text()


def test_a_full_frame_record_is_drawn_without_dimming() -> None:
    full = RoiRecord(mode="full", frame_shape=(360, 640), reason="build.roi: full")
    frame = np.full((360, 640, 3), GREY, dtype=np.uint8)
    drawn = draw_roi(frame, full)
    assert (drawn[60:] == GREY).all() and (frame == GREY).all()  # below the caption: untouched; the input: a copy


def test_the_gate_shows_what_each_release_looks_at() -> None:
    from tasks.runtime.gate import crop_text

    assert crop_text((), ()) == "full frame"
    assert crop_text((160, 170, 608, 350), (360, 640)) == "crop x 160-608, y 170-350 (448x180 px) of 640x360 frames"


def test_the_margin_shown_is_the_one_the_region_was_widened_by() -> None:
    """The learning widens by `build.roi_margin` or its plate heights, whichever is wider: the drawing and the report
    say which, in pixels, rather than the setting alone."""
    from dataclasses import replace

    from tasks.pipeline.roi_image import margin_text

    assert margin_text(RECORD) == "0.04 of the frame"  # a record without the learning's evidence (fixed, older)
    learned = replace(RECORD, evidence={"margin_px": [142.7, 142.7], "margin_plate_heights": 3})
    assert margin_text(learned) == "0.04 of the frame or 3 plate heights, whichever is wider: 143 px"
