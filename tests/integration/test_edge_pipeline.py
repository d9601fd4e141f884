"""The gate's torch-free inference path (`tasks.edge`) against Ultralytics' own predictor, on the demo holdout.

Same model, same runtime, same frames: only pre-processing (letterbox), decoding, NMS and box scaling differ, so
the boxes must be the same ones. A non-square fixed input (192x320 on 640x360 frames) makes every letterbox detail
count: the scale, the rounding of each side, the centred split of the padding and its inverse.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tasks.edge.agreement import Detections, box_iou
from tasks.edge.detect import Detector

pytestmark = pytest.mark.integration

CONF, IOU = 0.25, 0.7


def ultralytics_detections(artifact: Path, image: Path, input_hw: tuple[int, int]) -> Detections:
    from ultralytics import YOLO

    boxes = (
        YOLO(str(artifact), task="detect")
        .predict(str(image), imgsz=input_hw, conf=CONF, iou=IOU, device="cpu", verbose=False)[0]
        .boxes
    )
    return Detections(
        tuple(tuple(float(v) for v in b) for b in boxes.xyxy.numpy()),
        tuple(float(c) for c in boxes.conf.numpy()),
        tuple(int(c) for c in boxes.cls.numpy()),
    )


def assert_same_boxes(artifact: Path, images: list[Path]) -> int:
    """Ours and Ultralytics' on every image: same count, each box IoU >= 0.9 with its pair (by confidence rank),
    same class, confidence within 0.01. Returns the number of boxes compared."""
    detector = Detector.open(artifact)
    compared = 0
    for image in images:
        ours = detector(cv2.imread(str(image)), CONF, IOU)
        theirs = ultralytics_detections(artifact, image, detector.input_hw)
        assert len(ours.conf) == len(theirs.conf), f"{artifact.name} on {image.name}: {ours} vs {theirs}"
        if not ours.conf:
            continue
        o, t = np.argsort(ours.conf)[::-1], np.argsort(theirs.conf)[::-1]
        iou = box_iou(np.asarray(ours.xyxy)[o], np.asarray(theirs.xyxy)[t]).diagonal()
        assert (iou >= 0.9).all(), f"{artifact.name} on {image.name}: IoU {iou} ({ours.xyxy} vs {theirs.xyxy})"
        assert np.allclose(np.asarray(ours.conf)[o], np.asarray(theirs.conf)[t], atol=0.01)
        assert list(np.asarray(ours.cls)[o]) == list(np.asarray(theirs.cls)[t])
        compared += len(ours.conf)
    return compared


@pytest.fixture(scope="module")
def holdout(sample_data: Path) -> list[Path]:
    return sorted((sample_data / "holdout" / "images").iterdir())


def test_onnx_runtime_path_matches_ultralytics_on_a_non_square_input(
    plate_model: Path, holdout: list[Path], tmp_path: Path
) -> None:
    import shutil

    from ultralytics import YOLO

    shutil.copyfile(plate_model, tmp_path / "best.pt")
    onnx = Path(YOLO(str(tmp_path / "best.pt")).export(format="onnx", imgsz=(192, 320), dynamic=False))
    assert Detector.open(onnx).input_hw == (192, 320)
    assert assert_same_boxes(onnx, holdout) >= 3, "too few boxes on the holdout for the comparison to mean much"


def test_openvino_path_matches_ultralytics(built: tuple, holdout: list[Path]) -> None:
    _, candidates = built
    ov = next(c for c in candidates if c.path.is_dir())  # an OpenVINO IR folder (ov-int8)
    assert assert_same_boxes(ov.path, holdout) >= 3
