"""Box matching behind the label-free agreement numbers, and the latency CDF (pure functions, no model)."""

import pytest

from tasks.pipeline.validate import Detections, agreement_counts, compare, latency_cdf

REF = Detections(((10, 10, 50, 30), (100, 100, 160, 130)), (0.9, 0.8), (0, 0))


def test_identical_detections_agree_fully() -> None:
    d = compare("f.jpg", REF, REF)
    assert (d.matched, d.gained, d.lost, d.conf_shift, d.score) == (2, 0, 0, 0, pytest.approx(0))


def test_lost_gained_and_confidence_shift() -> None:
    cand = Detections(((11, 10, 50, 31), (300, 300, 340, 320)), (0.7, 0.6), (0, 0))
    d = compare("f.jpg", REF, cand)
    assert (d.matched, d.gained, d.lost) == (1, 1, 1)
    assert d.conf_shift == pytest.approx(0.7 - 0.9)
    counts = agreement_counts([d, compare("g.jpg", REF, REF)])
    assert counts["boxes_reference"] == 4 and counts["boxes_matched"] == 3
    assert counts["boxes_gained"] == counts["boxes_lost"] == 1 and counts["frames_disagreeing"] == 1
    assert counts["conf_shift_mean"] == pytest.approx(-0.2 / 3, abs=1e-4)


def test_boxes_of_another_class_or_low_overlap_do_not_match() -> None:
    other_class = Detections((REF.xyxy[0],), (0.9,), (1,))
    assert compare("f.jpg", REF, other_class).matched == 0
    shifted = Detections(((40, 10, 80, 30),), (0.9,), (0,))  # IoU 1/7 with the first reference box
    d = compare("f.jpg", REF, shifted)
    assert (d.matched, d.gained, d.lost) == (0, 1, 2)
    assert compare("f.jpg", Detections(), Detections()).score == 0


def test_latency_cdf_is_sorted_and_ends_at_one() -> None:
    assert latency_cdf([3.0, 1.0, 2.0, 4.0]) == [(1.0, 0.25), (2.0, 0.5), (3.0, 0.75), (4.0, 1.0)]
