"""Decode an Ultralytics YOLOv8/YOLO11 detect output without PyTorch: boxes, OpenCV's NMS, back to the frame.

The raw output is (batch, 4 + classes, anchors): centre-xywh in input pixels, then class scores. The steps are
Ultralytics' `non_max_suppression` (best class per anchor, confidence filter, class-aware NMS, `max_det`) with
OpenCV's batched NMS in place of torchvision's, then `scale_boxes` (undo the letterbox) and clipping.
"""

from __future__ import annotations

import cv2
import numpy as np

from tasks.edge.agreement import Detections
from tasks.edge.preprocess import Letterbox

MAX_NMS = 30000  # boxes into NMS at most (Ultralytics' max_nms)


def scale_boxes(xyxy: np.ndarray, box: Letterbox) -> np.ndarray:
    """Boxes in input pixels -> frame pixels, clipped (Ultralytics' `scale_boxes` with its letterbox rounding)."""
    (h0, w0), (h1, w1) = box.frame_hw, box.input_hw
    gain = min(h1 / h0, w1 / w0)
    new_h, new_w = max(round(h0 * gain), 1), max(round(w0 * gain), 1)
    pad_x, pad_y = round((w1 - new_w) / 2 - 0.1), round((h1 - new_h) / 2 - 0.1)
    out = xyxy.astype(np.float32, copy=True)
    out[:, [0, 2]] = ((out[:, [0, 2]] - pad_x) / (new_w / w0)).clip(0, w0)
    out[:, [1, 3]] = ((out[:, [1, 3]] - pad_y) / (new_h / h0)).clip(0, h0)
    return out


def decode(output: np.ndarray, box: Letterbox, conf: float, iou: float, max_det: int = 300) -> Detections:
    """Detections of one image from its raw output (4 + classes, anchors)."""
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
