"""The region of interest: learned from the FP32 reference's plates (planted here), the engine geometry it gives
(widened to the input's aspect, clipped at the frame's edges, rounded to the stride; `full` is the camera shape),
and the crop and its inverse on the detector's path (boxes back in full-frame pixels, a frame of another size
refused)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from tasks.edge.postprocess import scale_boxes
from tasks.edge.preprocess import FrameSizeMismatch, Letterbox, crop_frame, preprocess
from tasks.pipeline.roi import MARGIN_PLATE_HEIGHTS, learned_roi, region_of_interest, with_geometry
from tasks.support.config import BuildConfig
from tasks.support.roi import RoiRecord, inside, read_roi, write_roi
from tasks.support.shape import camera_shape, input_shape, roi_geometry, roi_pixels

pytestmark = pytest.mark.timeout(60)

FRAME = (720, 1280)  # (height, width): the demo's camera


def test_the_region_is_the_union_of_the_plates_widened_by_the_margin_and_clipped() -> None:
    # plates 30 px tall in x 440-1110, y 400-690: 3 plate heights (90 px) beat 0.02 of the frame (25.6 / 14.4 px)
    boxes = [(440, 400, 520, 430), (900, 600, 1000, 630), (1010, 660, 1110, 690)] * 10
    record = learned_roi(boxes, frames=12, frame_hw=FRAME, margin=0.02, min_plates=20)
    assert record.mode == "auto" and record.plates == 30 and record.frames == 12
    pad = MARGIN_PLATE_HEIGHTS * 30
    assert record.roi == pytest.approx(((440 - pad) / 1280, (400 - pad) / 720, (1110 + pad) / 1280, 1.0), abs=1e-4)
    assert record.evidence["union"] == pytest.approx([440 / 1280, 400 / 720, 1110 / 1280, 690 / 720], abs=1e-4)
    assert "learned from 30 plates on 12 calibration frames" in record.reason
    # every planted plate is inside the region's pixels
    region = roi_pixels(record.roi, FRAME)
    assert all(inside(b, region) for b in boxes)
    # a wide margin setting wins over the plate heights
    wide = learned_roi(boxes, 12, FRAME, 0.1, 20)
    assert wide.roi[0] == pytest.approx((440 - 128) / 1280, abs=1e-4)


def test_too_few_plates_is_the_full_frame_and_says_why() -> None:
    record = with_geometry(learned_roi([(10, 10, 50, 30)] * 3, 40, FRAME, 0.02, 20), 640, 0)
    assert record.roi == () and record.crop == () and record.full_frame
    assert "only 3 plates on 40 calibration frames (< build.roi_min_plates 20)" in record.reason
    assert record.input_shape == camera_shape(FRAME, 640)


@pytest.mark.parametrize(
    ("region", "expected_shape", "expected_crop"),
    [
        # the demo's plates (x 0.34-0.87, y 0.55-0.97): 339 x 151 px at scale 0.5 -> 352 x 160, crop widened to 704 x
        # 320 frame px (the input's aspect: no letterbox band), centred on the region
        ((435, 396, 1114, 699), (160, 352), (422, 387, 1126, 707)),
        # near the bottom edge: shifted up, inside the frame
        ((600, 690, 700, 720), (32, 64), (586, 656, 714, 720)),
        # at the left edge: shifted right, inside the frame
        ((0, 300, 40, 340), (32, 32), (0, 288, 64, 352)),
        # as tall as the frame: the crop is clipped to the frame and the letterbox fills the rest
        ((500, 0, 700, 720), (384, 128), (472, 0, 728, 720)),
    ],
)
def test_the_crop_keeps_the_camera_scale_and_is_widened_to_the_input_aspect(
    region: tuple, expected_shape: tuple, expected_crop: tuple
) -> None:
    shape, crop = roi_geometry(FRAME, 640, region)
    assert shape == expected_shape and crop == expected_crop
    assert shape[0] % 32 == 0 and shape[1] % 32 == 0
    x1, y1, x2, y2 = crop
    assert x1 >= 0 and y1 >= 0 and x2 <= 1280 and y2 <= 720
    assert inside(region, crop)
    scale = 640 / 1280  # the camera shape's: plates keep their pixel size
    if y2 - y1 < 720:  # widened to the input's aspect: no band
        assert (y2 - y1) * scale == pytest.approx(shape[0], abs=1) and (x2 - x1) * scale == pytest.approx(
            shape[1], abs=1
        )
    assert shape[0] >= (region[3] - region[1]) * scale and shape[1] >= (region[2] - region[0]) * scale


@pytest.mark.parametrize("margin", [0, 16])
def test_a_crop_at_the_frame_s_edge_keeps_the_letterbox_band_there(margin: int) -> None:
    """The demo's learned region reaches the frame's right and bottom edges: plates at the bottom would read the
    convolutions' zero padding (the camera shape's 1-pt cost without a band), so the short axis keeps `margin`
    pixels of letterbox on each side, as the camera shape does; the long axis is fitted exactly (the plates keep
    the camera shape's scale)."""
    region = (192, 144, 1280, 720)
    shape, crop = roi_geometry(FRAME, 640, region, margin)
    scale = 640 / 1280
    if margin == 0:  # no band asked: widened to the input's aspect, as everywhere else
        assert (shape, crop) == ((288, 544), region)
        return
    assert shape == (320, 544) and crop == region
    x1, y1, x2, y2 = crop
    r = min(shape[0] / (y2 - y1), shape[1] / (x2 - x1))  # the letterbox's scale (tasks/edge/preprocess.py)
    assert r == pytest.approx(scale)  # plates keep their pixel size
    assert (shape[0] - (y2 - y1) * r) / 2 >= margin  # the band above and below
    # a region away from the edges is widened to the input's aspect with or without a band
    assert roi_geometry(FRAME, 640, (435, 396, 1114, 699), margin) == roi_geometry(FRAME, 640, (435, 396, 1114, 699))


def test_full_is_today_s_camera_shape() -> None:
    for margin in (0, 16):
        assert roi_geometry(FRAME, 640, (), margin) == (camera_shape(FRAME, 640, margin), ())
        assert roi_geometry(FRAME, 640, (0, 0, 1280, 720), margin) == (camera_shape(FRAME, 640, margin), ())
        full = region_of_interest(BuildConfig(roi="full", shape_margin=margin), FRAME, None, [], 0.25, 0.7)
        assert full.mode == "full" and full.crop == () and full.roi == ()
        assert full.input_shape == input_shape("int8", "camera", 640, FRAME, margin)
    # a fixed region needs no reference; rounded outward to pixels
    fixed = region_of_interest(BuildConfig(roi=(0.34, 0.55, 0.87, 0.97)), FRAME, None, [], 0.25, 0.7)
    assert fixed.mode == "fixed" and fixed.crop and fixed.input_shape == (160, 352)
    assert roi_pixels(fixed.roi, FRAME) == (435, 396, 1114, 699)


def test_the_record_round_trips(tmp_path) -> None:
    record = with_geometry(learned_roi([(440, 400, 520, 430)] * 25, 25, FRAME, 0.02, 20), 640, 0)
    write_roi(tmp_path / "roi.json", record)
    assert read_roi(tmp_path / "roi.json") == record


def test_build_roi_settings_fail_closed() -> None:
    assert BuildConfig().roi == "auto"
    assert BuildConfig(roi=[0.1, 0.2, 0.9, 1.0]).roi == (0.1, 0.2, 0.9, 1.0)
    for bad in ([0.5, 0.2, 0.4, 1.0], [0.1, 0.2, 0.9, 1.2], [-0.1, 0, 1, 1], "half", [0.1, 0.2, 0.3]):
        with pytest.raises(ValidationError, match="roi"):
            BuildConfig(roi=bad)
    with pytest.raises(ValidationError, match=r"build\.shape: camera"):
        BuildConfig(roi=[0.1, 0.2, 0.9, 1.0], shape="square")
    with pytest.raises(ValidationError):
        BuildConfig(roi_margin=-0.1)
    with pytest.raises(ValidationError):
        BuildConfig(roi_min_plates=0)


def test_boxes_in_the_crop_map_back_to_full_frame_pixels_exactly() -> None:
    crop, input_hw = (422, 400, 1126, 720), (160, 352)
    frame = np.zeros((720, 1280, 3), dtype=np.uint8)
    frame[600:630, 900:1000] = 255  # a plate at (900, 600)-(1000, 630) in the frame
    batch, (box,) = preprocess([frame], input_hw, crop, FRAME)
    assert batch.shape == (1, 3, 160, 352) and box == Letterbox((320, 704), input_hw, (422, 400))
    # the plate's pixels are where the crop and the scale put them in the input (no band: scale 0.5 exactly)
    rows, cols = np.nonzero(batch[0, 0] > 0.5)
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (100, 115, 239, 289)
    back = scale_boxes(np.array([[239, 100, 289, 115]], dtype=np.float32), box)
    assert back.tolist() == [[900.0, 600.0, 1000.0, 630.0]]


def test_a_frame_of_another_size_is_refused_naming_both_sizes() -> None:
    with pytest.raises(FrameSizeMismatch, match=r"engine.onnx: a frame of 640x360 .* built for 1280x720 frames"):
        crop_frame(np.zeros((360, 640, 3), np.uint8), (422, 400, 1126, 720), FRAME, "engine.onnx")
    same = np.zeros((360, 640, 3), np.uint8)
    assert crop_frame(same, (), (), "x")[0] is same  # no crop: any size, untouched


def test_a_full_frame_record_has_no_crop() -> None:
    assert RoiRecord("full", FRAME).full_frame
