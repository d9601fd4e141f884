"""The one detection metric: detections scored against truth detections frame by frame, with Ultralytics' own
matching (`BaseValidator.match_predictions`: IoU 0.5-0.95, class-aware) and AP (`DetMetrics`, `ap_per_class`).

Every number validation, the build's INT8 gate, the nightly check, the smoke test and the gate step report comes
from `score`: labelled mAP (truth: the holdout's boxes) and agreement mAP (truth: the FP32 reference's detections at
`validate.agreement_conf`, one box per distinct box). Boxes are in frame pixels; IoU does not change under the
letterbox's uniform scale and shift, so they score as Ultralytics' validator scores letterboxed ones.

Tied confidences are common (`Detections.conf` is rounded to 1e-4, and an INT8 model gives few distinct values),
and AP depends on the order of tied boxes. `score` fixes that order: within a frame `ranked` (confidence
descending, then x1, y1, x2, y2, class ascending), across frames by frame order, then that rank. `ap_per_class`
re-sorts with a non-stable `argsort(-conf)`, so each tied confidence is lowered by its rank in its tie times a step
far below the 1e-4 rounding (`tie_step`): the order is then the only one a sort can give, and no two boxes with
different confidences swap.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.edge.agreement import Detections, FrameDiff, above, agreement_counts, compare, ranked

log = logging.getLogger(__name__)

MAX_TIE_STEP = 1e-9  # confidence lowered per rank among tied boxes (smaller when distinct confidences are closer)


def distinct(d: Detections) -> Detections:
    """One box per distinct (class, box), confidence 1: the reference's detections as agreement truth (an untrained
    head's priors give equal boxes, which are one object, as Ultralytics' label loader would make them)."""
    seen = dict.fromkeys(zip(d.cls, d.xyxy, strict=True))
    return Detections(tuple(b for _, b in seen), tuple(1.0 for _ in seen), tuple(c for c, _ in seen))


def agreement_truth(reference: Sequence[Detections], agreement_conf: float) -> list[Detections]:
    """What a candidate's agreement is scored against: the reference's distinct boxes at `agreement_conf`."""
    return [distinct(above(d, agreement_conf)) for d in reference]


def tie_step(conf: np.ndarray) -> tuple[float, np.ndarray]:
    """(step, rank of each box among the boxes of its confidence, in the order given). The step keeps the largest
    tie's total shift below half the smallest gap between distinct confidences, and at most `MAX_TIE_STEP`."""
    order = np.argsort(-conf, kind="stable")  # ties keep the order given: frame order, then `ranked`
    values = conf[order]
    starts = np.r_[0, np.flatnonzero(np.diff(values) != 0) + 1]
    sizes = np.diff(np.r_[starts, len(values)])
    rank = np.empty(len(conf), dtype=np.int64)
    rank[order] = np.arange(len(values)) - np.repeat(starts, sizes)
    gaps = np.diff(np.unique(values))
    smallest = float(gaps.min()) if gaps.size else 1.0
    return min(MAX_TIE_STEP, smallest / (2 * max(int(sizes.max(initial=1)), 1))), rank


@dataclass(frozen=True)
class Matched:
    """Per-frame match results of predictions against truth, as Ultralytics' validator makes them: for each frame
    the true-positive matrix of its boxes at IoU 0.5-0.95 (`tp`), their confidences and classes (in `ranked`
    order) and the truth's classes. What AP is computed from, over all frames or over a resample of them."""

    tp: tuple[np.ndarray, ...]
    conf: tuple[np.ndarray, ...]
    pred_cls: tuple[np.ndarray, ...]
    target_cls: tuple[np.ndarray, ...]

    @property
    def frames(self) -> int:
        return len(self.tp)

    def stacked(self, frames: Sequence[int] | None = None) -> dict[str, np.ndarray]:
        """The frames' stats concatenated in the given order (all, in order, by default), tied confidences untied
        as the module docstring says: what `ap_per_class` takes."""
        idx = range(self.frames) if frames is None else frames
        conf = np.concatenate([self.conf[i] for i in idx]) if len(idx) else np.zeros(0)
        step, rank = tie_step(conf)
        return {
            "tp": np.concatenate([self.tp[i] for i in idx]) if len(idx) else np.zeros((0, 10), dtype=bool),
            "conf": conf - step * rank,  # float64 end to end: DetMetrics and ap_per_class keep the dtype
            "pred_cls": np.concatenate([self.pred_cls[i] for i in idx]) if len(idx) else np.zeros(0),
            "target_cls": np.concatenate([self.target_cls[i] for i in idx]) if len(idx) else np.zeros(0),
        }


def match(truth: Sequence[Detections], preds: Sequence[Detections]) -> Matched:
    """Each frame's predictions matched against its truth with Ultralytics' own matching
    (`DetectionValidator.match_predictions`: IoU 0.5-0.95, class-aware); boxes in `ranked` order."""
    import tempfile

    import torch
    from ultralytics.models.yolo.detect import DetectionValidator
    from ultralytics.utils.metrics import box_iou

    if len(truth) != len(preds) or not preds:
        raise ValueError(f"score: {len(truth)} truth frames and {len(preds)} prediction frames (need equal, > 0)")
    with tempfile.TemporaryDirectory(prefix="alpr-score-") as tmp:
        validator = DetectionValidator(save_dir=Path(tmp), args={"plots": False})
    niou = len(validator.iouv)
    tps, confs, p_classes, t_classes = [], [], [], []
    for t, p in zip(truth, preds, strict=True):
        t, p = ranked(t), ranked(p)
        t_cls = np.asarray(t.cls, dtype=np.float32).reshape(-1)
        p_cls = np.asarray(p.cls, dtype=np.float32).reshape(-1)
        tp = np.zeros((len(p_cls), niou), dtype=bool)
        if len(t_cls) and len(p_cls):
            iou = box_iou(
                torch.tensor(t.xyxy, dtype=torch.float32).reshape(-1, 4),
                torch.tensor(p.xyxy, dtype=torch.float32).reshape(-1, 4),
            )
            tp = validator.match_predictions(torch.from_numpy(p_cls), torch.from_numpy(t_cls), iou).cpu().numpy()
        tps.append(tp)
        confs.append(np.asarray(p.conf, dtype=np.float64).reshape(-1))
        p_classes.append(p_cls)
        t_classes.append(t_cls)
    return Matched(tuple(tps), tuple(confs), tuple(p_classes), tuple(t_classes))


def score(
    truth: Sequence[Detections],
    preds: Sequence[Detections],
    names: dict[int, str],
    frames: Sequence[str] | None = None,
) -> Any:
    """Ultralytics' box metrics (`DetMetrics.box`: mAP50, mAP50-95, precision, recall, per class, PR curve) of
    `preds` against `truth`, one entry of each per frame (`frames`: their names, for the per-image metrics).

    Deterministic under tied confidences: the order is stated in the module docstring, and permuting the boxes of
    a frame never changes the result."""
    from ultralytics.utils.metrics import DetMetrics

    matched = match(truth, preds)
    frames = list(frames) if frames is not None else [str(i) for i in range(len(preds))]
    untied = matched.stacked()["conf"]
    metrics = DetMetrics(names=names)
    start = 0
    for i, name in enumerate(frames):
        stop = start + len(matched.conf[i])
        t_cls = matched.target_cls[i]
        metrics.update_stats(
            {"tp": matched.tp[i], "conf": untied[start:stop], "pred_cls": matched.pred_cls[i], "target_cls": t_cls,
             "target_img": np.unique(t_cls), "im_name": name}
        )  # fmt: skip
        start = stop
    metrics.process()
    return metrics.box


def map50_95(matched: Matched, frames: Sequence[int] | None = None) -> float:
    """mAP50-95 of the matched frames (all, or a resample: frame indices, repeats allowed) with Ultralytics'
    `ap_per_class`, as `score` computes it (`DetMetrics.box.map`: 0 when no frame holds a truth box)."""
    from ultralytics.utils.metrics import ap_per_class

    stats = matched.stacked(frames)
    if not len(stats["target_cls"]):
        return 0.0
    ap = ap_per_class(stats["tp"], stats["conf"], stats["pred_cls"], stats["target_cls"])[5]
    return float(ap.mean()) if len(ap) else 0.0


BOOTSTRAP_SEED = 0  # fixed: the same holdout, models and settings give the same intervals (docs/int8-builds.md)


def resamples(frames: int, count: int, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """`count` bootstrap resamples of `frames` frame indices (with replacement), each sorted so that tied boxes
    keep frame order (`score`'s tie rule). Every model of a validation is scored on these same resamples."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.integers(0, frames, size=(count, frames)), axis=1)


def bootstrap_maps(matched: Matched, draws: np.ndarray) -> np.ndarray:
    """mAP50-95 of one model on each resample of `draws` (`resamples`)."""
    return np.array([map50_95(matched, row) for row in draws], dtype=np.float64)


def drop_interval(base: np.ndarray, other: np.ndarray, level: float) -> tuple[float, float]:
    """The paired bootstrap's central `level` interval of the mAP drop `base - other`: both arrays hold the two
    models' mAP50-95 on the same resamples (`bootstrap_maps` with one `resamples`), so what varies between the
    images cancels and the interval measures the drop itself (percentile interval)."""
    if base.shape != other.shape or not base.size:
        raise ValueError(f"drop_interval: {base.shape} and {other.shape} resampled mAPs (need equal, > 0)")
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(base - other, [tail, 1.0 - tail])
    return round(float(low), 5), round(float(high), 5)


def summary(box: Any) -> dict[str, float]:
    """The overall numbers of `score`'s result."""
    return {
        "map50": float(box.map50),
        "map50_95": float(box.map),
        "box_precision": float(box.mp),
        "box_recall": float(box.mr),
    }


def per_class(box: Any, names: dict[int, str]) -> dict[str, float]:
    """Precision, recall, mAP50, mAP50-95 of each class that has labels, as `class.<name>.<metric>` keys."""
    out: dict[str, float] = {}
    for i, c in enumerate(box.ap_class_index):
        p, r, ap50, ap = box.class_result(i)
        name = names.get(int(c), str(c))
        out |= {
            f"class.{name}.precision": float(p),
            f"class.{name}.recall": float(r),
            f"class.{name}.map50": float(ap50),
            f"class.{name}.map50_95": float(ap),
        }
    return out


def pr_curve(box: Any, names: dict[int, str], points: int = 101) -> dict[str, list[float]]:
    """The precision-recall curve at IoU 0.5 per class (Ultralytics' own, resampled to `points` recalls)."""
    px = np.asarray(box.px)
    idx = np.linspace(0, len(px) - 1, points).round().astype(int)
    curve: dict[str, list[float]] = {"recall": [round(float(x), 4) for x in px[idx]]}
    for row, c in zip(np.asarray(box.prec_values), box.ap_class_index, strict=False):
        curve[names.get(int(c), str(c))] = [round(float(x), 4) for x in row[idx]]
    return curve


def accuracy(
    truth: Sequence[Detections], preds: Sequence[Detections], names: dict[int, str], images: Sequence[Path]
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Labelled accuracy: the overall and per-class numbers, and the PR curve, of `preds` against the holdout's
    boxes (`preds` at `validate.conf`)."""
    box = score(truth, preds, names, [str(i) for i in images])
    return {**summary(box), **per_class(box, names)}, pr_curve(box, names)


def agreement(
    reference: Sequence[Detections],
    candidate: Sequence[Detections],
    images: Sequence[Path],
    names: dict[int, str],
    agreement_conf: float,
) -> tuple[dict[str, float], list[FrameDiff]]:
    """Agreement of a candidate with the FP32 reference on `images`: mAP of the candidate's detections (at
    `validate.conf`, as they come) against `agreement_truth`, box counts of both at `agreement_conf` (`compare`),
    and each frame's differences (for the image grid), in frame order."""
    box = score(agreement_truth(reference, agreement_conf), candidate, names, [str(i) for i in images])
    row = {"agreement_map50": float(box.map50), "agreement_map50_95": float(box.map)}
    diffs = [
        compare(str(i), above(r, agreement_conf), above(c, agreement_conf))
        for i, r, c in zip(images, reference, candidate, strict=True)
    ]
    return {**row, **agreement_counts(diffs)}, diffs
