"""Box matching behind the label-free agreement numbers, the one detection metric (`scoring.score`) under tied
confidences, and the latency CDF (pure functions, no model)."""

import dataclasses
import random

import numpy as np
import pytest

from tasks.edge.agreement import Detections, above, agreement_counts, box_iou, compare, match, ranked
from tasks.pipeline.scoring import agreement_truth, distinct, score, tie_step
from tasks.pipeline.validate import latency_cdf

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


def random_frame(rng: np.random.Generator, n: int, classes: int = 2, levels: int = 0) -> Detections:
    """`n` boxes clustered so that many overlap; `levels` > 0: confidences from that few values (INT8-like ties)."""
    centre = rng.uniform(40, 60, size=(n, 2))
    half = rng.uniform(5, 15, size=(n, 2))
    xyxy = np.round(np.concatenate([centre - half, centre + half], axis=1), 2)
    conf = rng.choice(np.linspace(0.3, 0.9, levels), n) if levels else rng.uniform(0.01, 1, n)
    return Detections(
        tuple(tuple(float(v) for v in b) for b in xyxy),
        tuple(round(float(c), 4) for c in conf),
        tuple(int(c) for c in rng.integers(0, classes, n)),
    )


def test_match_is_ultralytics_match_predictions_on_random_boxes() -> None:
    """The edge's NumPy matcher gives Ultralytics' own true positives at every IoU threshold (its 10 of mAP50-95)."""
    import tempfile
    from pathlib import Path

    import torch
    from ultralytics.models.yolo.detect import DetectionValidator

    with tempfile.TemporaryDirectory() as tmp:
        validator = DetectionValidator(save_dir=Path(tmp), args={"plots": False})
    thresholds = validator.iouv.numpy()
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(200):
        truth, pred = random_frame(rng, int(rng.integers(0, 8))), ranked(random_frame(rng, int(rng.integers(0, 10))))
        iou = box_iou(np.asarray(truth.xyxy).reshape(-1, 4), np.asarray(pred.xyxy).reshape(-1, 4))
        t_cls, p_cls = np.asarray(truth.cls, dtype=np.float32), np.asarray(pred.cls, dtype=np.float32)
        theirs = validator.match_predictions(torch.from_numpy(p_cls), torch.from_numpy(t_cls), torch.from_numpy(iou))
        ours = match(iou, t_cls, p_cls, thresholds) >= 0
        assert (ours == theirs.numpy()).all()
        hits += int(ours.sum())
    assert hits > 100, "the random boxes overlap too little for the comparison to mean much"


def test_compare_pairs_greedily_by_confidence_like_ultralytics() -> None:
    # one reference box, two candidates over it: the more confident one claims it, even with the lower IoU
    ref = Detections(((0, 0, 10, 10),), (0.9,), (0,))
    cand = Detections(((0, 0, 10, 9),), (0.5,), (0,))
    cand = dataclasses.replace(cand, xyxy=((0, 0, 10, 9), (0, 0, 10, 7)), conf=(0.5, 0.8), cls=(0, 0))
    d = compare("f.jpg", ref, cand)
    assert (d.matched, d.gained, d.lost) == (1, 1, 0)
    assert d.conf_shift == pytest.approx(0.8 - 0.9) and d.iou_sum == pytest.approx(0.7)


def test_above_and_distinct_make_the_agreement_truth() -> None:
    found = Detections(((1, 1, 5, 5), (1, 1, 5, 5), (2, 2, 6, 6)), (0.9, 0.3, 0.1), (0, 0, 0))
    assert above(found, 0.25).conf == (0.9, 0.3)
    assert distinct(above(found, 0.25)) == Detections(((1, 1, 5, 5),), (1.0,), (0,))
    assert agreement_truth([found], 0.05) == [Detections(((1, 1, 5, 5), (2, 2, 6, 6)), (1.0, 1.0), (0, 0))]


def shuffled(d: Detections, rng: random.Random) -> Detections:
    order = list(range(len(d.conf)))
    rng.shuffle(order)
    return Detections(tuple(d.xyxy[i] for i in order), tuple(d.conf[i] for i in order), tuple(d.cls[i] for i in order))


def test_score_does_not_depend_on_the_order_of_tied_boxes() -> None:
    """INT8-like output (few distinct confidences, many ties): permuting the boxes of each frame, and so the order in
    which tied boxes arrive, never changes mAP, precision, recall or the PR curve."""
    rng, shuffle = np.random.default_rng(1), random.Random(1)
    names = {0: "a", 1: "b"}
    truth = [random_frame(rng, int(rng.integers(1, 6))) for _ in range(12)]
    preds = [random_frame(rng, int(rng.integers(0, 10)), levels=4) for _ in range(12)]
    assert sum(len(p.conf) for p in preds) > len({c for p in preds for c in p.conf}) + 20, "ties"
    first = score(truth, preds, names)
    results = {(round(float(first.map), 12), round(float(first.mp), 12), round(float(first.mr), 12))}
    for _ in range(8):
        again = score([shuffled(t, shuffle) for t in truth], [shuffled(p, shuffle) for p in preds], names)
        results.add((round(float(again.map), 12), round(float(again.mp), 12), round(float(again.mr), 12)))
        assert np.array_equal(np.asarray(again.prec_values), np.asarray(first.prec_values))
    assert len(results) == 1, results
    assert 0 < first.map < first.map50 < 1


def test_tie_breaking_never_swaps_distinct_confidences() -> None:
    conf = np.array([0.5, 0.5001, 0.5, 0.9, 0.5001, 0.5], dtype=np.float64)
    step, rank = tie_step(conf)
    assert rank.tolist() == [0, 0, 1, 0, 1, 2] and 0 < step <= 1e-9
    untied = conf - step * rank
    assert len(set(untied.tolist())) == len(conf)
    assert np.array_equal(np.argsort(-untied, kind="stable"), np.argsort(-conf, kind="stable"))


def test_score_of_the_truth_itself_is_ultralytics_perfect_ap() -> None:
    truth = [
        Detections(((10, 10, 50, 30),), (1.0,), (0,)),
        Detections(((5, 5, 20, 20), (30, 30, 60, 50)), (1.0,) * 2, (0, 0)),
    ]
    preds = [dataclasses.replace(t, conf=tuple(0.8 for _ in t.conf)) for t in truth]
    box = score(truth, preds, {0: "plate"})
    assert float(box.map) == pytest.approx(0.995) and float(box.map50) == pytest.approx(0.995)
    assert float(score(truth, [Detections(), Detections()], {0: "plate"}).map) == 0.0
