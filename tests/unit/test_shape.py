"""The input shape an engine is built at: the camera's aspect, long side imgsz, short side up to the stride."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tasks.support.candidate import CANDIDATE_JSON, Candidate, read_candidate
from tasks.support.shape import (
    FrameSizeUnknown,
    MixedFootage,
    camera_shape,
    footage_frame_size,
    input_shape,
    shape_text,
)

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    ("frame_hw", "imgsz", "expected"),
    [
        ((720, 1280), 640, (384, 640)),  # the demo's 16:9 camera: 360 rows of frame, rounded up to 384
        ((1280, 720), 640, (640, 384)),  # portrait footage: the transpose
        ((1080, 1920), 640, (384, 640)),  # 1080p is the same aspect
        ((360, 640), 320, (192, 320)),  # the test suite's clips at its imgsz: 180 -> 192
        ((960, 1280), 640, (480, 640)),  # 4:3: 480 is already a multiple of 32
        ((600, 800), 640, (480, 640)),  # smaller than imgsz: scaled up, as the square input scales it
        ((640, 640), 640, (640, 640)),  # a square camera keeps the square
        ((200, 1920), 640, (96, 640)),  # very wide: 66.7 rows -> 96, never below one stride
        ((1, 1920), 640, (32, 640)),
    ],
)
def test_camera_shape(frame_hw: tuple[int, int], imgsz: int, expected: tuple[int, int]) -> None:
    h, w = camera_shape(frame_hw, imgsz)
    assert (h, w) == expected
    assert h % 32 == 0 and w % 32 == 0
    # the frame's scale is the square input's (long side to imgsz), and all of the frame fits: no pixel lost
    scale = imgsz / max(frame_hw)
    assert round(frame_hw[0] * scale) <= h and round(frame_hw[1] * scale) <= w
    assert min(h, w) - min(frame_hw) * scale < 32  # the smallest such input: less than one stride of padding


@pytest.mark.parametrize(
    ("frame_hw", "margin", "expected"),
    [
        ((720, 1280), 0, (384, 640)),  # 12 rows of letterbox above and below
        ((720, 1280), 12, (384, 640)),  # already there
        ((720, 1280), 16, (416, 640)),  # 360 + 2 x 16 = 392 -> 416: 28 rows each side
        ((1280, 720), 16, (640, 416)),  # portrait: the band is left and right
        ((960, 1280), 16, (512, 640)),  # 4:3: 480 + 32
        ((640, 640), 16, (640, 640)),  # never past the square
        ((720, 1280), 200, (640, 640)),
    ],
)
def test_camera_shape_keeps_a_letterbox_band_of_margin_pixels(
    frame_hw: tuple[int, int], margin: int, expected: tuple[int, int]
) -> None:
    h, w = camera_shape(frame_hw, 640, margin)
    assert (h, w) == expected
    scale = 640 / max(frame_hw)
    band = (min(h, w) - min(frame_hw) * scale) / 2  # letterbox rows (columns) on each side of the frame
    assert band >= margin or min(h, w) == 640
    assert band - 32 < margin or margin == 0  # the smallest such input: one stride less would not leave the band


def test_camera_shape_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="positive"):
        camera_shape((0, 1280), 640)
    with pytest.raises(ValueError, match="multiple of the stride"):
        camera_shape((720, 1280), 650)
    with pytest.raises(ValueError, match="margin"):
        camera_shape((720, 1280), 640, -1)


def test_only_int8_candidates_take_the_camera_shape() -> None:
    assert input_shape("int8", "camera", 640, (720, 1280)) == (384, 640)
    assert input_shape("fp32", "camera", 640, (720, 1280)) == (640, 640)  # the references stay square
    assert input_shape("int8", "square", 640, (720, 1280)) == (640, 640)
    assert input_shape("int8", "camera", 640, (720, 1280), 16) == (416, 640)  # build.shape_margin
    assert input_shape("fp32", "camera", 640, (720, 1280), 16) == (640, 640)
    assert input_shape("int8", "square", 640, (720, 1280), 16) == (640, 640)
    with pytest.raises(FrameSizeUnknown):
        input_shape("int8", "camera", 640, None)
    assert shape_text((384, 640)) == "384x640"


def _manifest(path: Path, rows: list[tuple[str, int, int]]) -> Path:
    lines = ["image,video,width,height"] + [f"images/{v}_{i}.jpg,{v},{w},{h}" for i, (v, w, h) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_footage_frame_size_reads_the_manifests_and_refuses_mixed_footage(tmp_path: Path) -> None:
    calib = _manifest(tmp_path / "a.csv", [("gate1.mp4", 1280, 720), ("gate2.mp4", 1280, 720)])
    held = _manifest(tmp_path / "b.csv", [("gate3.mp4", 1280, 720)])
    assert footage_frame_size([calib, held]) == (720, 1280)
    other = _manifest(tmp_path / "c.csv", [("lane2.mp4", 640, 480), ("lane3.mp4", 640, 480)])
    with pytest.raises(MixedFootage) as err:
        footage_frame_size([calib, other])
    message = str(err.value)
    assert "1280x720 (width x height): gate1.mp4, gate2.mp4" in message
    assert "640x480 (width x height): lane2.mp4, lane3.mp4" in message
    assert "one project per frame size" in message and "build.shape: square" in message
    assert err.value.facts["sizes"] == {"720x1280": ["gate1.mp4", "gate2.mp4"], "480x640": ["lane2.mp4", "lane3.mp4"]}
    with pytest.raises(FrameSizeUnknown):
        footage_frame_size([_manifest(tmp_path / "empty.csv", [])])


def test_a_candidate_json_without_input_shape_reads_as_square(tmp_path: Path) -> None:
    cand = Candidate(
        name="old", backend="openvino", precision="int8", folder=tmp_path, artifact="m", sha256="0" * 64,
        size_mb=1.0, base_model_sha256="b", frames_hash="f", imgsz=320, toolchain={}, build_seconds=1.0, built_at="t",
    )  # fmt: skip
    assert cand.input_shape == (320, 320)
    doc = json.loads(cand.to_json())
    del doc["input_shape"]  # what a build before shapes existed wrote
    (tmp_path / CANDIDATE_JSON).write_text(json.dumps(doc))
    assert read_candidate(tmp_path).input_shape == (320, 320)
    shaped = dataclasses.replace(cand, input_shape=(192, 320))
    (tmp_path / CANDIDATE_JSON).write_text(shaped.to_json())
    assert json.loads(shaped.to_json())["input_shape"] == [192, 320]
    assert read_candidate(tmp_path).input_shape == (192, 320)


def test_the_build_derives_fp32_at_each_int8_geometry_and_none_for_square_builds() -> None:
    """Issue 26: one FP32 model of the reference's method and backend per distinct INT8 geometry other than the
    square reference's, after the declared candidates; none when every candidate is square."""
    from tasks.pipeline.build import build_plan
    from tasks.support.config import BuildConfig
    from tasks.support.shape import Geometry, geometry_of, geometry_reference_name

    camera = BuildConfig()  # params.yaml's: shape camera (margin 16), fp32 on ONNX Runtime the reference
    plan = build_plan(camera, (720, 1280))
    names = [c.name for c, _ in plan]
    assert names == [c.name for c in camera.candidates] + ["fp32@416x640"]
    derived, geometry = plan[-1]
    assert geometry == Geometry((416, 640)) and derived.precision == "fp32"
    assert (derived.backend, derived.method) == ("onnxruntime", "ultralytics")
    assert {g for c, g in plan if c.precision == "int8"} == {geometry}
    assert [c.name for c, _ in build_plan(camera.model_copy(update={"shape": "square"}), (720, 1280))] == [
        c.name for c in camera.candidates
    ]
    fp32_only = camera.model_copy(update={"candidates": camera.candidates[:2]})
    assert len(build_plan(fp32_only, (720, 1280))) == 2  # no INT8 candidate: no geometry to measure
    # once the region of interest is decided, every INT8 candidate and the derived FP32 model take its geometry
    from tasks.support.roi import RoiRecord

    region = RoiRecord("auto", (720, 1280), (0.15, 0.2, 1.0, 1.0), (192, 144, 1280, 720), (288, 544), plates=52)
    at_roi = build_plan(camera, (720, 1280), region)
    roi_geometry = Geometry((288, 544), (192, 144, 1280, 720), (720, 1280))
    assert {g for c, g in at_roi if c.precision == "int8"} == {roi_geometry}
    assert at_roi[-1][0].name == "fp32@288x544-roi192_144_1280_720" and at_roi[-1][1] == roi_geometry
    assert {g for c, g in at_roi if c.name in ("fp32", "fp32-ov")} == {Geometry((640, 640))}  # the squares stay
    # a crop is part of the geometry and of the derived name (a region of interest, tasks/support/roi.py)
    cropped = Geometry((384, 640), (420, 396, 1120, 700), (720, 1280))
    assert geometry_reference_name("fp32", cropped) == "fp32@384x640-roi420_396_1120_700"
    assert "crop [420, 396, 1120, 700] of 720x1280" in cropped.text

    class Built:
        input_shape, crop, frame_shape = (384, 640), (420, 396, 1120, 700), (720, 1280)

    assert geometry_of(Built()) == cropped
