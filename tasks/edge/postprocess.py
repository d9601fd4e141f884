"""Decode an Ultralytics YOLOv8/YOLO11 detect output without PyTorch: boxes, OpenCV's NMS, back to the frame.

The raw output is (batch, 4 + classes, anchors): centre-xywh in input pixels, then class scores. The steps are
Ultralytics' `non_max_suppression` (best class per anchor, confidence filter, class-aware NMS, `max_det`) with
OpenCV's batched NMS in place of torchvision's, then `scale_boxes` (undo the letterbox) and clipping.

Anything else decoded this way is silent garbage, so `check_output` refuses, when a model is opened, what is not that
output: an end-to-end (NMS-free) export, whose output is already (1, max_det, 6) boxes; an output whose class count
is not that of the export's `names`; a dynamic batch or channel dimension.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from tasks.edge.agreement import Detections
from tasks.edge.preprocess import Letterbox
from tasks.support.errors import AlprError, Remedy

MAX_NMS = 30000  # boxes into NMS at most (Ultralytics' max_nms)


class UnsupportedModel(AlprError):
    """The model's output is not the (1, 4 + classes, anchors) detect output the decoder reads; the message says
    what it is instead and how to export one that is."""

    remedy = Remedy.BUILD


def export_names(metadata: Mapping[str, Any]) -> dict[int, str] | None:
    """The class names of Ultralytics' export metadata, whichever way the format stores them (a dict in an engine
    header or metadata.yaml, its `str()` in ONNX metadata_props); None when the metadata has none."""
    names = metadata.get("names")
    if isinstance(names, str):
        try:
            names = ast.literal_eval(names)
        except (ValueError, SyntaxError):
            return None
    if not isinstance(names, Mapping) or not names:
        return None
    return {int(k): str(v) for k, v in names.items()}


def _flag(value: Any) -> bool:
    return value is True or str(value).strip().lower() == "true"


def check_output(shape: Sequence[int | None], metadata: Mapping[str, Any], what: str) -> None:
    """Refuse, with what it is, a model whose raw output `decode` would misread: `shape` is the first output's
    (None for a dynamic dimension), `metadata` Ultralytics' export metadata ({} when the artifact carries none)."""
    dims = list(shape)
    if _flag(metadata.get("end2end")):
        raise UnsupportedModel(
            f"{what}: an end-to-end (NMS-free) export (metadata end2end: {metadata.get('end2end')}, output {dims}): "
            "its output is boxes after the model's own top-k, (1, max_det, 6), not the raw (1, 4 + classes, anchors) "
            "this decoder reads; export it with end2end=False",
            output_shape=dims,
        )
    if len(dims) != 3:
        raise UnsupportedModel(f"{what}: output shape {dims}, expected (1, 4 + classes, anchors)", output_shape=dims)
    batch, channels, anchors = dims
    if batch is None or channels is None:
        which = "batch" if batch is None else "channel"
        raise UnsupportedModel(
            f"{what}: output {dims} has a dynamic {which} dimension; export with batch=1 and dynamic=False",
            output_shape=dims,
        )
    if batch != 1:
        raise UnsupportedModel(f"{what}: output batch {batch}; the gate runs one frame at a time (export batch=1)")
    names = export_names(metadata)
    if names is not None and channels != 4 + len(names):
        raise UnsupportedModel(
            f"{what}: output {dims} has {channels - 4} class scores per anchor, but the export's names list "
            f"{len(names)} classes ({sorted(names.values())[:5]}): not the model these names belong to",
            output_shape=dims,
            classes=len(names),
        )
    if channels < 5 or (anchors is not None and anchors <= channels):
        raise UnsupportedModel(
            f"{what}: output {dims} is not (1, 4 + classes, anchors) (fewer anchors than channels: the (1, max_det, "
            "6) of an end-to-end export?); export the detect model with end2end=False",
            output_shape=dims,
        )


def scale_boxes(xyxy: np.ndarray, box: Letterbox) -> np.ndarray:
    """Boxes in input pixels -> frame pixels, clipped (Ultralytics' `scale_boxes` with its letterbox rounding) to
    what was letterboxed, then moved by the crop's offset: full-frame pixels."""
    (h0, w0), (h1, w1) = box.frame_hw, box.input_hw
    gain = min(h1 / h0, w1 / w0)
    new_h, new_w = max(round(h0 * gain), 1), max(round(w0 * gain), 1)
    pad_x, pad_y = round((w1 - new_w) / 2 - 0.1), round((h1 - new_h) / 2 - 0.1)
    out = xyxy.astype(np.float32, copy=True)
    out[:, [0, 2]] = ((out[:, [0, 2]] - pad_x) / (new_w / w0)).clip(0, w0)
    out[:, [1, 3]] = ((out[:, [1, 3]] - pad_y) / (new_h / h0)).clip(0, h0)
    out[:, [0, 2]] += box.offset[0]
    out[:, [1, 3]] += box.offset[1]
    return out


def decode(output: np.ndarray, box: Letterbox, conf: float, iou: float, max_det: int = 300) -> Detections:
    """Detections of one image from its raw output (4 + classes, anchors)."""
    if np.ndim(output) != 2 or np.shape(output)[0] < 5:
        raise UnsupportedModel(f"one image's raw output has shape {np.shape(output)}, not (4 + classes, anchors)")
    pred = np.asarray(output, dtype=np.float32).T  # (anchors, 4 + classes)
    scores_all = pred[:, 4:]
    cls = scores_all.argmax(1)
    scores = scores_all[np.arange(len(pred)), cls]
    keep = scores > conf
    pred, cls, scores = pred[keep], cls[keep], scores[keep]
    if not len(pred):
        return Detections()
    if len(pred) > MAX_NMS:
        top = np.argsort(-scores, kind="stable")[:MAX_NMS]
        pred, cls, scores = pred[top], cls[top], scores[top]
    cx, cy, w, h = pred[:, 0], pred[:, 1], pred[:, 2], pred[:, 3]
    xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    rects = np.stack([xyxy[:, 0], xyxy[:, 1], w, h], axis=1)  # OpenCV's NMS takes x, y, width, height
    picked = cv2.dnn.NMSBoxesBatched(rects.tolist(), scores.tolist(), cls.tolist(), conf, iou)
    picked = np.asarray(picked, dtype=int).reshape(-1)[:max_det]  # in descending score order
    xyxy = scale_boxes(xyxy[picked], box)
    return Detections(
        tuple(tuple(round(float(v), 2) for v in b) for b in xyxy),
        tuple(round(float(s), 4) for s in scores[picked]),
        tuple(int(c) for c in cls[picked]),
    )
