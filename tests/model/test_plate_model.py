"""The model tier: what the real FP32 detector does on generated gate frames whose plate boxes are known. The
generator (`tasks/demo/synth.py`) renders a frame and its label boxes from a seed, so a miss here is the model's."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from tasks.demo.synth import SynthConfig, make_video_scene, render_holdout_frame, render_scene_frame
from tasks.edge.agreement import box_iou
from tasks.pipeline.labels import Box

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CFG = SynthConfig()  # the demo's 1280x720 camera
SEED = 11  # holdout frames of a seed the other tests do not use
CONF, MIN_IOU = 0.25, 0.5  # a gate acts on detections above CONF; a box within MIN_IOU of the label found the plate
BRIGHTNESS = {  # (gain, offset) as cv2.convertScaleAbs applies them
    "dusk: half the light": (0.5, 0),
    "glare: +60 levels": (1.0, 60),
}


@pytest.fixture(scope="module")
def detector(plate_model: Path):
    from ultralytics import YOLO  # heavy import, only when a test of this tier runs

    return YOLO(str(plate_model), task="detect")


Corners = tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels


def detect(detector, frame: np.ndarray) -> list[tuple[Corners, float]]:
    """The detector's boxes (x1, y1, x2, y2 pixels) and confidences above CONF, at the demo's imgsz."""
    result = detector.predict(frame, imgsz=640, conf=CONF, device="cpu", verbose=False)[0]
    return [(tuple(b), float(c)) for b, c in zip(result.boxes.xyxy.tolist(), result.boxes.conf.tolist(), strict=True)]


def pixels(box: Box) -> Corners:
    """A label box (normalised to the frame) in the frame's pixels, as the detector reports boxes."""
    x1, y1, x2, y2 = box.xyxy
    return (x1 * CFG.width, y1 * CFG.height, x2 * CFG.width, y2 * CFG.height)


def assert_finds_only(found: list[tuple[Corners, float]], plate: Box) -> None:
    """The plate is found, and nothing else is."""
    ious = box_iou(np.asarray([b for b, _ in found], dtype=np.float32).reshape(-1, 4), np.asarray([pixels(plate)]))
    overlaps = [round(float(o), 2) for o in ious[:, 0]]
    assert any(o >= MIN_IOU for o in overlaps), f"plate {plate} not found: IoUs {overlaps} of {found}"
    assert all(o >= MIN_IOU for o in overlaps), f"boxes that are no plate: IoUs {overlaps} of {found}"


@pytest.mark.parametrize("i", range(3))
def test_finds_the_plate_in_a_clean_frame(detector, i: int) -> None:
    frame, boxes = render_holdout_frame(SEED, i, CFG)
    assert len(boxes) == 1, boxes  # a holdout frame shows one fully visible plate
    assert_finds_only(detect(detector, frame), boxes[0])


@pytest.mark.parametrize("shift", BRIGHTNESS)
@pytest.mark.parametrize("i", range(3))
def test_still_finds_the_plate_after_a_brightness_shift(detector, i: int, shift: str) -> None:
    """A gate camera's exposure changes with the time of day; the plate must survive it."""
    frame, boxes = render_holdout_frame(SEED, i, CFG)
    gain, offset = BRIGHTNESS[shift]
    shifted = cv2.convertScaleAbs(frame, alpha=gain, beta=offset)
    assert abs(float(shifted.mean()) - float(frame.mean())) > 20, "the shift did not change the frame's brightness"
    assert_finds_only(detect(detector, shifted), boxes[0])


@pytest.mark.parametrize("seed", range(3))
def test_finds_no_plate_in_an_empty_lane(detector, seed: int) -> None:
    """The gate scene of a video (camera, background, barrier arm, lighting, noise) with its cars taken out."""
    empty = dataclasses.replace(make_video_scene(seed, 0, 4.0, CFG), tracks=[])
    frame, boxes = render_scene_frame(empty, 0)
    assert not boxes
    assert detect(detector, frame) == [], "a plate detected in an empty lane"
