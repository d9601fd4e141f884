"""Ultralytics' letterbox without Ultralytics: the same frame reaches the engine on the gate as in validation.

Mirrors `ultralytics.data.augment.LetterBox` with `auto=False` (what Ultralytics' predictor uses for a fixed-shape
exported model): scale to fit, round each side, pad centred with 114, `cv2.INTER_LINEAR`. The padding split
(`round(d - 0.1)` before, `round(d + 0.1)` after) and `scale_boxes`' inverse in `postprocess.py` must stay equal to
Ultralytics'; `tests/integration/test_edge_pipeline.py` compares the boxes on the demo holdout.

An engine built for a region of interest (tasks/support/roi.py) takes a crop of the frame: `preprocess` cuts the
crop out first and letterboxes the crop; `Letterbox.offset` is where the crop sits in the frame, which
`postprocess.scale_boxes` adds back, so boxes come out in full-frame pixels whatever the engine looked at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from tasks.support.errors import AlprError, Remedy

PAD_VALUE = 114


class FrameSizeMismatch(AlprError):
    """A frame is not the size the engine's crop was built for: cropping it would look at the wrong place."""

    remedy = Remedy.REBUILD


@dataclass(frozen=True)
class Letterbox:
    """How a frame was fitted into the model input: to map boxes back to the frame."""

    frame_hw: tuple[int, int]  # (height, width) of what was letterboxed: the crop, or the whole frame
    input_hw: tuple[int, int]
    offset: tuple[int, int] = (0, 0)  # (x, y) of the crop's top-left corner in the frame; (0, 0) without a crop


def crop_frame(
    frame: np.ndarray, crop: Sequence[int], frame_shape: Sequence[int], what: str = "model"
) -> tuple[np.ndarray, tuple[int, int]]:
    """(the part of `frame` the engine looks at, its (x, y) offset in the frame). An empty `crop` is the whole frame;
    a frame whose (height, width) is not `frame_shape`, the size the crop was built for, is refused."""
    if not crop:
        return frame, (0, 0)
    got = (int(frame.shape[0]), int(frame.shape[1]))
    if got != tuple(int(v) for v in frame_shape):
        raise FrameSizeMismatch(
            f"{what}: a frame of {got[1]}x{got[0]} (width x height), but its crop {list(crop)} was built for "
            f"{frame_shape[1]}x{frame_shape[0]} frames: feed it the camera's own frames, or rebuild for this camera",
            frame_shape=list(got),
            expected=list(frame_shape),
        )
    x1, y1, x2, y2 = (int(v) for v in crop)
    return frame[y1:y2, x1:x2], (x1, y1)


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


def preprocess(
    frames: list[np.ndarray],
    input_hw: tuple[int, int],
    crop: Sequence[int] = (),
    frame_shape: Sequence[int] = (),
    what: str = "model",
) -> tuple[np.ndarray, list[Letterbox]]:
    """A float32 NCHW batch in [0, 1], RGB (what Ultralytics' exports expect), and each frame's letterbox. With a
    `crop` (x1, y1, x2, y2 frame pixels) each frame, which must be `frame_shape` (`crop_frame`), is cropped first."""
    cropped = [crop_frame(f, crop, frame_shape, what) for f in frames]
    boxes = [letterbox(f, input_hw) for f, _ in cropped]
    batch = np.stack(boxes)[..., ::-1].transpose(0, 3, 1, 2)  # BGR -> RGB, NHWC -> NCHW
    batch = np.ascontiguousarray(batch, dtype=np.float32) / 255.0
    return batch, [Letterbox((int(f.shape[0]), int(f.shape[1])), input_hw, offset) for f, offset in cropped]
