"""An engine built for a region of interest: the one detector path crops, letterboxes, infers and maps boxes back to
full-frame pixels (a plate drawn at a known place is reported there, on ONNX Runtime, the stand-in for the TensorRT
worker, and on OpenVINO), refuses a frame of another size, and a build records the crop in every INT8 candidate's
contract (`candidate.json`, the embedded metadata, `roi.json`)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from tasks.edge.agreement import box_iou
from tasks.edge.detect import Detector
from tasks.edge.metadata import embed_metadata, read_embedded_metadata
from tasks.edge.preprocess import FrameSizeMismatch
from tasks.support.roi import ROI_JSON, read_roi
from tasks.support.shape import roi_geometry

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

FRAME = (360, 640)  # the test clips' frame (height, width), at imgsz 320: scale 0.5
CONF, IOU = 0.25, 0.7


@pytest.fixture(scope="module")
def plate_frame() -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """A synthetic gate frame with one plate drawn at a known place: (frame, its box in frame pixels)."""
    from tasks.demo.synth import SynthConfig, render_holdout_frame

    frame, boxes = render_holdout_frame(3, 0, SynthConfig(width=FRAME[1], height=FRAME[0], fps=10))
    (box,) = boxes
    h, w = FRAME
    xyxy = ((box.cx - box.w / 2) * w, (box.cy - box.h / 2) * h, (box.cx + box.w / 2) * w, (box.cy + box.h / 2) * h)
    return frame, xyxy


@pytest.fixture(scope="module")
def geometry(plate_frame) -> tuple[tuple[int, int], tuple[int, ...]]:
    """An input shape and crop for a region around the plate that leaves most of the frame out (at imgsz 640: scale
    1, so the 36x13 px plate keeps its pixels)."""
    _, (x1, y1, x2, y2) = plate_frame
    region = (max(0, int(x1) - 60), max(0, int(y1) - 40), min(FRAME[1], int(x2) + 60), min(FRAME[0], int(y2) + 40))
    shape, crop = roi_geometry(FRAME, 640, region)
    assert crop and (crop[2] - crop[0]) * (crop[3] - crop[1]) < 0.5 * FRAME[0] * FRAME[1]
    return shape, crop


def _export(plate_model: Path, folder: Path, fmt: str, shape: tuple[int, int], crop: tuple[int, ...]) -> Path:
    from ultralytics import YOLO

    folder.mkdir(parents=True)
    shutil.copyfile(plate_model, folder / "best.pt")
    artifact = Path(YOLO(str(folder / "best.pt")).export(format=fmt, imgsz=list(shape), dynamic=False))
    embed_metadata(artifact, {"name": fmt, "crop": list(crop), "frame_shape": list(FRAME)})
    return artifact


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_a_plate_in_the_crop_is_reported_at_its_place_in_the_frame(
    plate_model: Path, plate_frame, geometry, fmt: str, tmp_path: Path
) -> None:
    from ultralytics import YOLO

    frame, plate = plate_frame
    shape, crop = geometry
    artifact = _export(plate_model, tmp_path / fmt, fmt, shape, crop)
    detector = Detector.open(artifact)
    try:
        assert detector.input_hw == shape and detector.crop == crop and detector.frame_hw == FRAME
        ours = detector(frame, CONF, IOU)
        # reported where the plate was drawn, in full-frame pixels
        assert len(ours.conf) == 1, ours
        assert box_iou(np.asarray(ours.xyxy), np.asarray([plate]))[0, 0] >= 0.7, (ours.xyxy, plate)
        # exactly Ultralytics' boxes on the crop, moved by the crop's offset
        x1, y1, x2, y2 = crop
        theirs = YOLO(str(artifact), task="detect").predict(
            np.ascontiguousarray(frame[y1:y2, x1:x2]), conf=CONF, iou=IOU, device="cpu", verbose=False
        )[0]
        moved = theirs.boxes.xyxy.numpy() + np.array([x1, y1, x1, y1], dtype=np.float32)
        assert box_iou(np.asarray(ours.xyxy), moved)[0, 0] >= 0.98
        assert ours.conf[0] == pytest.approx(float(theirs.boxes.conf[0]), abs=0.01)
        # a frame of another size would be cropped at the wrong place: refused, naming the artifact and both sizes
        with pytest.raises(FrameSizeMismatch, match=rf"{artifact.name}: a frame of 320x180 .*built for 640x360"):
            detector(cv2.resize(frame, (320, 180)), CONF, IOU)
    finally:
        detector.close()


def test_a_build_for_a_region_records_its_crop_in_every_int8_contract(
    plate_model: Path, sample_data: Path, tmp_path: Path
) -> None:
    from tasks.pipeline.build import build_candidates
    from tasks.pipeline.extract import extract_frames
    from tasks.support.config import BuildConfig, CandidateConfig, ExtractConfig

    cfg = ExtractConfig(interval_s=0.5, max_frames_per_video=3, holdout_fraction=0)
    frames = extract_frames(sample_data / "videos", tmp_path / "cal", tmp_path / "cal.yaml", cfg, ("plate",))
    build = BuildConfig(
        imgsz=320,
        speed_reference=None,
        roi=(0.25, 0.4, 0.75, 1.0),
        candidates=(
            CandidateConfig(name="fp32", precision="fp32", backend="onnxruntime"),
            CandidateConfig(name="ov-int8", precision="int8", backend="openvino"),
        ),
    )
    out = tmp_path / "c"
    fp32, int8, derived = build_candidates(plate_model, frames.dataset_yaml, out, build, "m" * 64, frames.frames_hash)
    roi = read_roi(out / ROI_JSON)
    assert roi.mode == "fixed" and roi.frame_shape == FRAME and roi.roi == (0.25, 0.4, 0.75, 1.0)
    shape, crop = roi_geometry(FRAME, 320, (160, 144, 480, 360), build.shape_margin)
    # the region reaches the frame's bottom edge: a band of shape_margin (16) above and below, 108 + 32 -> 160 rows
    assert roi.crop == crop and roi.input_shape == shape == (160, 160)
    # the square FP32 reference stays as it is: full frame, square
    assert fp32.input_shape == (320, 320) and fp32.crop == () and fp32.frame_shape == ()
    assert read_embedded_metadata(fp32.path)["crop"] == []
    assert int8.input_shape == shape and int8.crop == crop and int8.frame_shape == FRAME
    # the FP32 model at the INT8 geometry, which quantization is measured against, is fed the same crop
    assert derived.precision == "fp32" and derived.name == f"fp32@{shape[0]}x{shape[1]}-roi{'_'.join(map(str, crop))}"
    assert (derived.input_shape, derived.crop, derived.frame_shape) == (shape, crop, FRAME)
    assert read_embedded_metadata(derived.path)["crop"] == list(crop)
    beside = json.loads((int8.folder / "candidate.json").read_text())
    inside = read_embedded_metadata(int8.path)
    assert beside["crop"] == inside["crop"] == list(crop)
    assert beside["frame_shape"] == inside["frame_shape"] == list(FRAME)
    detector = Detector.open(int8.path)  # the engine takes the crop's letterbox and crops by its own metadata
    assert detector.input_hw == shape and detector.crop == crop
    # auto: learned from the square FP32 reference's plates on the calibration frames, cached by content
    from tasks.pipeline.quantize import calibration_images
    from tasks.pipeline.roi import ROI_CACHE, plate_boxes, region_of_interest
    from tasks.support.roi import inside as box_inside
    from tasks.support.shape import roi_pixels

    images, cache = calibration_images(frames.dataset_yaml), tmp_path / "cache"
    auto = build.model_copy(update={"roi": "auto", "roi_min_plates": 1})
    learned = region_of_interest(auto, FRAME, fp32, images, CONF, IOU, cache)
    boxes = plate_boxes(fp32, images, CONF, IOU, cache)
    assert learned.mode == "auto" and learned.plates == len(boxes) >= 1 and learned.frames == len(images)
    assert all(box_inside(b, roi_pixels(learned.roi, FRAME)) for b in boxes)
    assert all(box_inside(b, learned.crop) for b in boxes) if learned.crop else learned.full_frame
    assert len(list((cache / ROI_CACHE).glob("*.json"))) == 1
    gone = dataclasses.replace(fp32, artifact="missing.onnx")  # the same sha256, no artifact: read from the cache
    assert plate_boxes(gone, images, CONF, IOU, cache) == boxes

    # a full-frame build of the same candidate is another artifact under another key
    full = build.model_copy(update={"roi": "full", "shape_margin": 0})
    _, again, _ = build_candidates(plate_model, frames.dataset_yaml, tmp_path / "f", full, "m" * 64, frames.frames_hash)
    assert again.crop == () and again.input_shape == (192, 320) and again.cache_key != int8.cache_key
    assert read_roi(tmp_path / "f" / ROI_JSON).mode == "full"


def test_a_labelled_plate_outside_the_region_is_a_miss_in_validation(
    plate_model: Path, plate_frame, geometry, tmp_path: Path
) -> None:
    """Validation feeds full frames, so an engine whose region leaves a labelled plate out loses it in recall and
    mAP (`map_drop`), where the same model looking at the plate's region finds it."""
    from tasks.edge.agreement import Detections
    from tasks.pipeline.scoring import score, summary

    frame, plate = plate_frame
    shape, crop = geometry
    h, w = FRAME
    # the mirror image of the plate's region: the same size, on the other side of the frame
    away = (w - crop[2], h - crop[3], w - crop[0], h - crop[1])
    assert not (away[0] < plate[2] and plate[0] < away[2] and away[1] < plate[3] and plate[1] < away[3])
    truth = [Detections((plate,), (1.0,), (0,))]
    recall = {}
    for name, region in (("plate's region", crop), ("elsewhere", away)):
        artifact = _export(plate_model, tmp_path / name.replace("'", ""), "onnx", shape, region)
        detector = Detector.open(artifact)
        try:
            found = [detector(frame, 0.001, IOU)]
        finally:
            detector.close()
        recall[name] = summary(score(truth, found, {0: "plate"}, ["frame"]))["box_recall"]
    assert recall == {"plate's region": 1.0, "elsewhere": 0.0}, recall
