"""Ultralytics' letterbox without Ultralytics: the same frame reaches the engine on the gate as in validation.

Mirrors `ultralytics.data.augment.LetterBox` with `auto=False` (what Ultralytics' predictor uses for a fixed-shape
exported model): scale to fit, round each side, pad centred with 114, `cv2.INTER_LINEAR`. The padding split
(`round(d - 0.1)` before, `round(d + 0.1)` after) and `scale_boxes`' inverse in `postprocess.py` must stay equal to
Ultralytics'; `tests/integration/test_edge_pipeline.py` compares the boxes on the demo holdout.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PAD_VALUE = 114


@dataclass(frozen=True)
class Letterbox:
    """How a frame was fitted into the model input: to map boxes back to the frame."""

    frame_hw: tuple[int, int]
    input_hw: tuple[int, int]


def letterbox(frame: np.ndarray, input_hw: tuple[int, int]) -> np.ndarray:
    """`frame` (BGR, HxWx3) resized and padded to `input_hw` (height, width; may be non-square)."""
    h0, w0 = frame.shape[:2]
    h1, w1 = input_hw
    r = min(h1 / h0, w1 / w0)
    new_w, new_h = max(round(w0 * r), 1), max(round(h0 * r), 1)
    dw, dh = (w1 - new_w) / 2, (h1 - new_h) / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    if (w0, h0) != (new_w, new_h):
        frame = cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return cv2.copyMakeBorder(frame, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)


def preprocess(frames: list[np.ndarray], input_hw: tuple[int, int]) -> tuple[np.ndarray, list[Letterbox]]:
    """A float32 NCHW batch in [0, 1], RGB (what Ultralytics' exports expect), and each frame's letterbox."""
    boxes = [letterbox(f, input_hw) for f in frames]
    batch = np.stack(boxes)[..., ::-1].transpose(0, 3, 1, 2)  # BGR -> RGB, NHWC -> NCHW
    batch = np.ascontiguousarray(batch, dtype=np.float32) / 255.0
    return batch, [Letterbox((int(f.shape[0]), int(f.shape[1])), input_hw) for f in frames]
