"""Agreement of a candidate's detections with the FP32 reference's, box by box: one definition for the host's
validation (`tasks/pipeline/validate.py`) and the gate's engine check (`tasks/edge/gate_build.py`), so an engine
timed on the gate is judged exactly as a candidate validated on the host.

Boxes are paired with Ultralytics' own rule (`BaseValidator.match_predictions`, greedy: each detection in
descending confidence order takes the unclaimed same-class box it overlaps most), here in NumPy because the gate
has no PyTorch; `tests/unit/test_agreement.py` checks it against Ultralytics' on random boxes. So a box counted as
matched here is a true positive at IoU 0.5 of the agreement mAP (`tasks/pipeline/scoring.py`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Detections:
    """Boxes of one frame: pixel xyxy, confidence, class."""

    xyxy: tuple[tuple[float, float, float, float], ...] = ()
    conf: tuple[float, ...] = ()
    cls: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Detections:
        return cls(
            tuple(tuple(float(v) for v in b) for b in doc["xyxy"]),  # type: ignore[misc]
            tuple(float(c) for c in doc["conf"]),
            tuple(int(c) for c in doc["cls"]),
        )


@dataclass(frozen=True)
class FrameDiff:
    """How a candidate's detections on one frame differ from the reference's."""

    image: str
    reference: Detections
    candidate: Detections
    matched: int
    gained: int  # candidate boxes with no reference box (IoU >= 0.5, same class)
    lost: int  # reference boxes the candidate missed
    conf_shift: float  # sum over matched boxes of candidate conf - reference conf
    iou_sum: float  # sum of IoU over matched boxes

    @property
    def score(self) -> float:
        """Disagreement: unmatched boxes count 1 each, matched ones by their IoU deficit and confidence change."""
        return self.gained + self.lost + (self.matched - self.iou_sum) + abs(self.conf_shift)


def box_iou(a: np.ndarray, b: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Pairwise IoU of xyxy boxes (N, 4) x (M, 4), in float32 like Ultralytics' `box_iou`."""
    a, b = a.astype(np.float32)[:, None, :], b.astype(np.float32)[None, :, :]
    wh = (np.minimum(a[..., 2:], b[..., 2:]) - np.maximum(a[..., :2], b[..., :2])).clip(0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / (area_a + area_b - inter + np.float32(eps))


def above(found: Detections, conf: float) -> Detections:
    """The detections with confidence >= `conf` (NMS is greedy by score, so filtering after it at a higher
    threshold gives what NMS at that threshold gives, up to `max_det`): a candidate runs once per frame at the
    lowest threshold any metric needs, and the others are derived from that run."""
    keep = [i for i, c in enumerate(found.conf) if c >= conf]
    return Detections(
        tuple(found.xyxy[i] for i in keep), tuple(found.conf[i] for i in keep), tuple(found.cls[i] for i in keep)
    )


def ranked(d: Detections) -> Detections:
    """The same boxes in one stable order: confidence descending, then x1, y1, x2, y2, class ascending. Matching
    and AP take detections in confidence order; this makes the order of tied confidences (frequent in INT8 output)
    a property of the boxes, not of the order they arrived in."""
    order = sorted(range(len(d.conf)), key=lambda i: (-d.conf[i], *d.xyxy[i], d.cls[i]))
    return Detections(tuple(d.xyxy[i] for i in order), tuple(d.conf[i] for i in order), tuple(d.cls[i] for i in order))


def match(iou: np.ndarray, truth_cls: np.ndarray, pred_cls: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Ultralytics' `match_predictions` (its greedy rule) in NumPy: `iou` is (truth, predictions) with predictions
    in descending confidence order; returns, per threshold, the truth box each prediction claimed (-1: none), shape
    (predictions, thresholds). A prediction claims the unclaimed same-class truth box of highest IoU (the first of
    equals) when that IoU reaches the threshold."""
    iou = np.where(truth_cls[:, None] == pred_cls[None, :], iou, 0.0)
    thresholds = np.asarray(thresholds, dtype=iou.dtype).reshape(-1)
    claimed = np.full((iou.shape[1], len(thresholds)), -1, dtype=int)
    taken = np.zeros((iou.shape[0], len(thresholds)), dtype=bool)
    if not iou.size:
        return claimed
    columns = np.arange(len(thresholds))
    for j in np.flatnonzero((iou >= thresholds.min()).any(0)):
        available = np.where(taken, 0, iou[:, j, None])
        k = available.argmax(0)
        hit = available[k, columns] >= thresholds
        claimed[j] = np.where(hit, k, -1)
        taken[k, columns] |= hit
    return claimed


def compare(image: str, ref: Detections, cand: Detections, iou_threshold: float = 0.5) -> FrameDiff:
    """Same-class boxes paired at IoU >= `iou_threshold` by `match` (Ultralytics' rule), both sides `ranked`, so
    the pairs do not depend on the order the boxes arrived in."""
    matched, conf_shift, iou_sum = 0, 0.0, 0.0
    if ref.xyxy and cand.xyxy:
        r_, c_ = ranked(ref), ranked(cand)
        iou = box_iou(np.asarray(r_.xyxy), np.asarray(c_.xyxy))
        claimed = match(iou, np.asarray(r_.cls), np.asarray(c_.cls), np.array([iou_threshold]))[:, 0]
        for j, r in enumerate(claimed):
            if r >= 0:
                matched += 1
                iou_sum += float(iou[r, j])
                conf_shift += c_.conf[j] - r_.conf[r]
    return FrameDiff(image, ref, cand, matched, len(cand.xyxy) - matched, len(ref.xyxy) - matched, conf_shift, iou_sum)


def agreement_counts(diffs: list[FrameDiff]) -> dict[str, float]:
    """Boxes gained and lost against the reference, and the mean confidence shift of matched boxes."""
    matched = sum(d.matched for d in diffs)
    return {
        "boxes_reference": float(sum(len(d.reference.conf) for d in diffs)),
        "boxes_matched": float(matched),
        "boxes_gained": float(sum(d.gained for d in diffs)),
        "boxes_lost": float(sum(d.lost for d in diffs)),
        "conf_shift_mean": round(sum(d.conf_shift for d in diffs) / matched, 5) if matched else 0.0,
        "matched_iou_mean": round(sum(d.iou_sum for d in diffs) / matched, 5) if matched else 0.0,
        "frames_disagreeing": float(sum(1 for d in diffs if d.gained or d.lost)),
    }
