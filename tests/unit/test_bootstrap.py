"""How sure a labelled drop is (issue 26, decision 5): the paired bootstrap over the holdout's images, on synthetic
detections scored with the one metric (`tasks/pipeline/scoring.py`: Ultralytics' matching and `ap_per_class`)."""

from __future__ import annotations

import numpy as np

from tasks.edge.agreement import Detections
from tasks.pipeline.scoring import bootstrap_maps, drop_interval, map50_95, match, resamples, score

NAMES = {0: "plate"}


def _holdout(frames: int = 30, seed: int = 3) -> tuple[list[Detections], list[Detections]]:
    """One or two plates a frame (truth), and a detector that finds each a pixel or two off, plus a false box."""
    rng = np.random.default_rng(seed)
    truth, found = [], []
    for _ in range(frames):
        boxes = [
            (float(x), float(y), float(x + 80), float(y + 24)) for x, y in rng.uniform(0, 500, (rng.integers(1, 3), 2))
        ]
        near = [tuple(v + float(rng.normal(0, 1.5)) for v in b) for b in boxes]
        false = [(float(a), float(b), float(a + 60), float(b + 20)) for a, b in rng.uniform(0, 500, (1, 2))]
        truth.append(Detections(tuple(boxes), tuple(1.0 for _ in boxes), tuple(0 for _ in boxes)))
        conf = [round(float(c), 4) for c in rng.uniform(0.5, 1.0, len(near))] + [0.3]
        found.append(Detections(tuple(near + false), tuple(conf), tuple(0 for _ in conf)))
    return truth, found


def test_the_resampled_map_of_all_frames_is_the_metrics_own() -> None:
    truth, found = _holdout()
    assert map50_95(match(truth, found)) == score(truth, found, NAMES).map


def test_identical_models_drop_nothing_and_a_missed_plate_is_a_positive_interval() -> None:
    truth, found = _holdout()
    draws = resamples(len(truth), 200)
    base = bootstrap_maps(match(truth, found), draws)
    assert drop_interval(base, base, 0.95) == (0.0, 0.0)
    # the same detector missing the plates of every third frame: a drop that no resample can make negative
    worse = [Detections((), (), ()) if i % 3 == 0 else d for i, d in enumerate(found)]
    low, high = drop_interval(base, bootstrap_maps(match(truth, worse), draws), 0.95)
    point = map50_95(match(truth, found)) - map50_95(match(truth, worse))
    assert 0 < low < point < high
    assert drop_interval(base, bootstrap_maps(match(truth, worse), draws), 0.5)[0] > low  # narrower at 50%


def test_the_same_seed_gives_the_same_interval() -> None:
    truth, found = _holdout()
    worse = [Detections(d.xyxy[1:], d.conf[1:], d.cls[1:]) if i % 4 == 0 else d for i, d in enumerate(found)]
    a, b = match(truth, found), match(truth, worse)

    def run(seed: int) -> tuple[float, float]:
        draws = resamples(len(truth), 100, seed)
        return drop_interval(bootstrap_maps(a, draws), bootstrap_maps(b, draws), 0.95)

    assert run(0) == run(0)
    assert np.array_equal(resamples(30, 5), resamples(30, 5))
    assert (np.diff(resamples(30, 5), axis=1) >= 0).all()  # sorted: tied boxes keep frame order
