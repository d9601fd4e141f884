"""Agreement of a candidate's detections with the FP32 reference's, box by box: one definition for the host's
validation (`tasks/pipeline/validate.py`) and the gate's engine check (`tasks/edge/gate_build.py`), so an engine
timed on the gate is judged exactly as a candidate validated on the host.
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


def compare(image: str, ref: Detections, cand: Detections, iou_threshold: float = 0.5) -> FrameDiff:
    """One-to-one match (Hungarian, SciPy's) of same-class boxes with IoU >= `iou_threshold`."""
    from scipy.optimize import linear_sum_assignment

    matched, conf_shift, iou_sum = 0, 0.0, 0.0
    if ref.xyxy and cand.xyxy:
        iou = box_iou(np.asarray(ref.xyxy), np.asarray(cand.xyxy))
        iou[np.asarray(ref.cls)[:, None] != np.asarray(cand.cls)[None, :]] = 0.0
        rows, cols = linear_sum_assignment(-iou)
        for r, c in zip(rows, cols, strict=True):
            if iou[r, c] >= iou_threshold:
                matched += 1
                iou_sum += float(iou[r, c])
                conf_shift += cand.conf[c] - ref.conf[r]
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
