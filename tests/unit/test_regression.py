"""The nightly gates as pure functions: which gate breaks on which numbers, and what the message says."""

from __future__ import annotations

import pickle

import pytest

from tasks.operations.regression import RegressionFailed, RegressionReport, judge
from tasks.support.config import NightlyConfig

CFG = NightlyConfig(max_agreement_drop=0.05, max_brightness_change=0.35, min_reference_boxes=1, min_agreement=0.8)
PROMOTED = {"agreement_map50_95": 0.9}


def measured(**changes: float) -> dict[str, float]:
    base = {"agreement_map50_95": 0.88, "brightness": 100.0, "baseline_brightness": 110.0, "newest_boxes_reference": 5}
    return {**base, **changes}


def report(metrics: dict[str, float], promoted: dict[str, float] = PROMOTED) -> RegressionReport:
    checks = judge(metrics, promoted, CFG)
    return RegressionReport(
        all(c.passed for c in checks), checks, metrics, "7", "ov-int8", "fp32", ("a.mp4",), 10, "all frames"
    )


def verdicts(metrics: dict[str, float], promoted: dict[str, float] = PROMOTED) -> dict[str, bool]:
    return {c.gate: c.passed for c in judge(metrics, promoted, CFG)}


def test_unchanged_numbers_pass_every_gate() -> None:
    assert verdicts(measured()) == {
        "agreement": True,
        "agreement_drop": True,
        "brightness_change": True,
        "reference_boxes": True,
    }


@pytest.mark.parametrize(
    ("changes", "broken"),
    [
        ({"agreement_map50_95": 0.79}, {"agreement", "agreement_drop"}),
        ({"agreement_map50_95": 0.84}, {"agreement_drop"}),  # above the floor, but 0.06 below promotion time
        ({"brightness": 30.0}, {"brightness_change"}),  # much darker
        ({"brightness": 160.0}, {"brightness_change"}),  # much brighter (over-exposed)
        ({"newest_boxes_reference": 0}, {"reference_boxes"}),
    ],
)
def test_each_gate_breaks_on_its_own_number(changes: dict[str, float], broken: set[str]) -> None:
    got = verdicts(measured(**changes))
    assert {g for g, ok in got.items() if not ok} == broken


def test_gates_at_their_threshold_pass() -> None:
    assert all(verdicts(measured(agreement_map50_95=0.85, brightness=110.0 * 0.65)).values())


def test_a_gate_without_its_inputs_is_left_out() -> None:
    no_baseline = {k: v for k, v in measured().items() if k != "baseline_brightness"}
    assert set(verdicts(no_baseline, promoted={})) == {"agreement", "reference_boxes"}


def test_the_message_names_the_gate_its_numbers_the_param_and_the_fix() -> None:
    r = report(measured(brightness=25.0))
    assert not r.passed and [c.gate for c in r.broken] == ["brightness_change"]
    text = r.explain()
    assert "FAIL: brightness_change 0.7727 > 0.35 (nightly.max_brightness_change)" in text
    assert "much darker" in text and "mean brightness 25 vs 110" in text
    assert "check the cameras" in text and "rebuild with the new videos" in text
    assert "pass: agreement 0.88 >= 0.8" in text
    drop = report(measured(agreement_map50_95=0.7)).explain()
    assert "(nightly.min_agreement)" in drop and "(nightly.max_agreement_drop)" in drop and "roll back" in drop


def test_the_failure_keeps_its_report_through_pickling() -> None:
    """Prefect may persist a failed run's exception: the report must survive it."""
    r = report(measured(newest_boxes_reference=0))
    again = pickle.loads(pickle.dumps(RegressionFailed(r)))
    assert again.report == r and str(again) == r.explain()


def test_the_nightly_check_refuses_a_tensorrt_champion_it_cannot_run(tmp_path) -> None:
    """A gate-built engine deployed as champion cannot be re-run on a host without its GPU and TensorRT: the check
    stops saying nothing was re-validated, never a pass. The engine file wraps placeholder bytes (not a runnable
    engine): what is checked is the refusal before any loader, not TensorRT."""
    from tasks.edge.tensorrt import save_engine
    from tasks.operations.regression import RegressionError, runnable_here
    from tasks.support.candidate import META_KEY, Candidate

    device = {"gpu": "Orin (nvgpu)", "compute_capability": "8.7", "tensorrt": "10.3.0"}
    save_engine(tmp_path / "trt-fp32.engine", {META_KEY: {"device": device}}, b"\x00placeholder plan")
    champ = Candidate(
        name="trt-fp32", backend="tensorrt", precision="fp32", folder=tmp_path, artifact="trt-fp32.engine",
        sha256="x", size_mb=0.0, base_model_sha256="b", frames_hash="f", imgsz=320, toolchain={}, build_seconds=0.0,
        built_at="", tensorrt={"built_on": "gate"},
    )  # fmt: skip
    with pytest.raises(RegressionError, match=r"did NOT re-validate it.*not a pass.*Orin"):
        runnable_here(champ, "7")


def test_a_regressed_champion_names_the_pending_challenger_that_would_fix_it() -> None:
    """The nightly line: the pending challenger's agreement with the same FP32 reference on the same frames,
    against the same floor and its own promotion-time agreement; footage gates are no model's to fix."""
    from pathlib import Path

    from tasks.operations.regression import Champion, PendingChallenger, pending_line

    pend = PendingChallenger("9", "fp32-ov", "file:///x", "ab" * 32, "store", "sqlite:///m.db", PROMOTED)
    champ = Champion(Path("/gate/releases/v7"), "7", "ov-int8", "run", PROMOTED, "7", pend)
    broken = judge(measured(agreement_map50_95=0.7), PROMOTED, CFG)
    fixes = pending_line(champ, measured(pending_agreement_map50_95=0.89), broken, CFG)
    assert "pending challenger version 9 (fp32-ov)" in fixes and "agreement 0.89 >= 0.8" in fixes
    assert "would fix the agreement gates (alpr-ops promote --approve 9)" in fixes
    assert "would NOT fix" in pending_line(champ, measured(pending_agreement_map50_95=0.75), broken, CFG)
    darker = judge(measured(brightness=30.0), PROMOTED, CFG)
    line = pending_line(champ, measured(brightness=30.0, pending_agreement_map50_95=0.9), darker, CFG)
    assert "would NOT fix" in line and "brightness_change concern the footage" in line
    no_pending = Champion(Path("/gate/releases/v7"), "7", "ov-int8", "run", PROMOTED, "7")
    assert pending_line(no_pending, measured(), broken, CFG).startswith("no pending challenger")
    # in the report: only when the champion regressed
    failed = RegressionReport(False, broken, {}, "7", "ov-int8", "fp32", ("a.mp4",), 10, "all", pending=fixes)
    assert f"  pending: {fixes}" in failed.explain()


# --- the region of interest: FP32 plates outside the champion's crop -------------------------------------------------

CROP = (400, 380, 1120, 700)  # a champion's crop in 1280x720 frames
INSIDE, OUTSIDE = (500.0, 500.0, 580.0, 520.0), (40.0, 100.0, 120.0, 120.0)


def frames_with(*boxes_per_frame: tuple) -> tuple[list, list]:
    """Full-frame FP32 detections, one frame per argument (each a tuple of (box, conf)), and their image paths."""
    from pathlib import Path

    from tasks.edge.agreement import Detections

    found = [Detections(tuple(b for b, _ in f), tuple(c for _, c in f), tuple(0 for _ in f)) for f in boxes_per_frame]
    return found, [Path(f"/newest/images/v_{i:03d}.jpg") for i in range(len(found))]


def test_plates_outside_the_crop_are_counted_with_their_frames() -> None:
    from tasks.operations.regression import outside_roi

    found, images = frames_with(
        ((INSIDE, 0.9),),
        ((OUTSIDE, 0.8), (INSIDE, 0.9)),
        ((OUTSIDE, 0.1),),  # below agreement_conf: not a plate
        ((OUTSIDE, 0.7), ((1000.0, 690.0, 1130.0, 710.0), 0.6)),  # the second one crosses the crop's edge
        (),
    )
    assert outside_roi(found, images, CROP, 0.25) == (3, ("v_001.jpg", "v_003.jpg"))
    assert outside_roi(found, images, (), 0.25) == (0, ())  # a full-frame champion: nothing is outside


def test_one_stray_frame_does_not_trip_the_roi_check_a_plate_on_several_frames_does() -> None:
    """The default `nightly.max_frames_outside_roi`: a false box outside on one frame passes; a plate outside on
    three frames (a vehicle passing where the champion never looks) is a regression naming the frames."""
    from tasks.operations.regression import Measurement, outside_roi, record_verdict

    cfg = CFG  # built without it: the default
    assert cfg.max_frames_outside_roi == NightlyConfig().max_frames_outside_roi == 2
    stray = frames_with(((OUTSIDE, 0.5),), ((INSIDE, 0.9),), ((INSIDE, 0.9),), ((INSIDE, 0.8),))
    moved = frames_with(((OUTSIDE, 0.9),), ((OUTSIDE, 0.9),), ((INSIDE, 0.9),), ((OUTSIDE, 0.8),))
    verdict = {}
    for name, (found, images) in {"stray": stray, "moved": moved}.items():
        plates, frames = outside_roi(found, images, CROP, 0.25)
        metrics = measured(roi_plates_outside=plates, roi_frames_outside=len(frames))
        checks = judge(metrics, PROMOTED, cfg)
        verdict[name] = RegressionReport(
            all(c.passed for c in checks), checks, metrics, "7", "ov-int8", "fp32", ("v.mp4",), 4, "all frames",
            roi_crop=CROP, roi_frame_shape=(720, 1280), outside_roi=frames,
        )  # fmt: skip
    assert verdict["stray"].passed and "pass: roi 1 <= 2" in verdict["stray"].explain()
    moved_report = verdict["moved"]
    assert not moved_report.passed and [c.gate for c in moved_report.broken] == ["roi"]
    text = moved_report.explain()
    assert "FAIL: roi 3 > 2 (3 FP32 plates outside the champion's crop) (nightly.max_frames_outside_roi)" in text
    assert "camera's view has changed" in text and "alpr-ops rebuild" in text
    assert "crop x 400-1120, y 380-700 (720x320 px) of 1280x720 frames" in text
    assert "frames: v_000.jpg, v_001.jpg, v_003.jpg" in text
    # the verdict file `status` reads carries the counts and the frames
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        doc = record_verdict(Path(tmp) / "nightly.json", moved_report)
    assert doc["broken"] == ["roi"] and doc["reason"].startswith("roi 3 > 2")
    assert doc["roi"] == {
        "crop": list(CROP), "frame_shape": [720, 1280], "plates_outside": 3, "frames_outside": 3,
        "frames": ["v_000.jpg", "v_001.jpg", "v_003.jpg"],
    }  # fmt: skip
    assert Measurement({}).crop == ()  # a full-frame champion's measurement


def test_a_pending_challenger_built_for_the_new_region_would_fix_the_roi_gate() -> None:
    from pathlib import Path

    from tasks.operations.regression import Champion, PendingChallenger, pending_line

    pend = PendingChallenger("9", "ov-int8-mixed", "file:///x", "ab" * 32, "store", "sqlite:///m.db", PROMOTED)
    champ = Champion(Path("/gate/releases/v7"), "7", "ov-int8", "run", PROMOTED, "7", pend)
    moved = measured(roi_plates_outside=5, roi_frames_outside=4, pending_agreement_map50_95=0.89)
    broken = judge(moved, PROMOTED, CFG)
    assert [c.gate for c in broken if not c.passed] == ["roi"]
    fixes = pending_line(champ, {**moved, "pending_roi_frames_outside": 0}, broken, CFG)
    assert "roi 0 <= 2" in fixes and "would fix the agreement and roi gates" in fixes
    same_crop = pending_line(champ, {**moved, "pending_roi_frames_outside": 4}, broken, CFG)
    assert "roi 4 > 2" in same_crop and "would NOT fix" in same_crop
