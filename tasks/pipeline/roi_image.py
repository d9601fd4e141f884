"""The region of interest drawn on a frame of the camera: the one picture of it, logged on the rebuild's MLflow run
(tasks/pipeline/track.py) and embedded in `alpr-ops report` (tasks/operations/report.py).

A number such as "x 0.34-0.87, y 0.55-0.97" does not tell a reviewer whether the region covers the lane; the frame
does. The ROI (green) and the engine's crop (blue: the ROI widened to the input's aspect) are drawn on the labelled
holdout image with the most plates, with its labelled plates (yellow), which should all lie inside the crop: a
labelled plate outside it is a miss in validation. Without a labelled holdout, on the first calibration frame.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tasks.support.errors import AlprError
from tasks.support.roi import ROI_JSON, RoiRecord, write_roi

log = logging.getLogger(__name__)

ROI_DIR = "roi"  # the rebuild run's artifact folder: roi.json (the record) and roi.png (the drawing)
ROI_PNG = "roi.png"
GREEN, BLUE, YELLOW = (60, 200, 60), (230, 120, 30), (0, 220, 255)  # BGR
Corners = tuple[float, float, float, float]


def roi_text(record: RoiRecord) -> str:
    """The region as frame fractions, or "full frame"."""
    if not record.roi:
        return "full frame"
    x1, y1, x2, y2 = record.roi
    return f"x {x1:.2f}-{x2:.2f}, y {y1:.2f}-{y2:.2f}"


def area_fraction(record: RoiRecord) -> float:
    """Share of the frame the engine looks at: the ROI's area (its crop's when no ROI is recorded; 1: full frame)."""
    if record.roi:
        x1, y1, x2, y2 = record.roi
        return round((x2 - x1) * (y2 - y1), 4)
    if record.crop and len(record.frame_shape) == 2:
        x1, y1, x2, y2 = record.crop
        return round((x2 - x1) * (y2 - y1) / (record.frame_shape[0] * record.frame_shape[1]), 4)
    return 1.0


def margin_text(record: RoiRecord) -> str:
    """The margin the region was widened by: `build.roi_margin`, or the plate heights when they were wider (what the
    learning recorded in its evidence)."""
    text = f"{record.margin:g} of the frame"
    px, heights = record.evidence.get("margin_px"), record.evidence.get("margin_plate_heights")
    if px and heights:
        text += f" or {heights} plate heights, whichever is wider: {max(px):.0f} px"
    return text


def evidence(record: RoiRecord) -> dict[str, str]:
    """What the report lists beside the drawing: what was decided and why."""
    from tasks.runtime.gate import crop_text

    return {
        "mode": record.mode,
        "region": roi_text(record),
        "crop": crop_text(record.crop, record.frame_shape),
        "engine input": "x".join(str(v) for v in record.input_shape) or "-",
        "area": f"{area_fraction(record):.0%} of the frame",
        "plates": f"{record.plates} plates on {record.frames} frames",
        "margin": margin_text(record),
        "reason": record.reason or "-",
    }


def pick_frame(holdout_dir: Path, names: Sequence[str], frames_dirs: Sequence[Path]) -> tuple[Path | None, list]:
    """The frame to draw on and its labelled plates (normalised corners): the labelled holdout image with the most
    plates (ties: by name), else the first image of the first of `frames_dirs` that has one; (None, []) if none."""
    from tasks.pipeline.labels import check_labels
    from tasks.support.images import frames_folder, list_images

    if (holdout_dir / "labels").is_dir():
        try:
            items = check_labels(holdout_dir, names).images
        except AlprError as e:  # validation refused it already; the drawing falls back to a calibration frame
            log.warning("roi image: the holdout's labels are not usable (%s); drawing on a calibration frame", e)
            items = ()
        ranked = sorted(items, key=lambda i: (-len(i.boxes), i.image.name))
        if ranked and ranked[0].boxes:
            return ranked[0].image, [b.xyxy for b in ranked[0].boxes]
    for folder in frames_dirs:
        where = frames_folder(folder)
        images = list_images(where) if where is not None else []
        if images:
            return images[0], []
    return None, []


def draw_roi(frame: np.ndarray, record: RoiRecord, plates: Sequence[Corners] = ()) -> np.ndarray:
    """A copy of `frame` with the outside of the crop dimmed, the ROI (green), the crop (blue), the labelled
    `plates` (yellow, normalised corners) and a caption. A frame of another size than the record's `frame_shape`
    is drawn to scale."""
    import cv2

    img = frame.copy()
    h, w = img.shape[:2]
    fh, fw = record.frame_shape if len(record.frame_shape) == 2 else (h, w)
    sx, sy = w / fw, h / fh
    thick = max(2, round(w / 400))
    if record.crop:
        x1, y1, x2, y2 = (round(v * s) for v, s in zip(record.crop, (sx, sy, sx, sy), strict=True))
        dim = (img * 0.45).astype(np.uint8)
        dim[y1:y2, x1:x2] = img[y1:y2, x1:x2]
        img = dim
        cv2.rectangle(img, (x1, y1), (x2 - 1, y2 - 1), BLUE, thick)
    if record.roi:
        rx1, ry1, rx2, ry2 = record.roi
        cv2.rectangle(img, (round(rx1 * w), round(ry1 * h)), (round(rx2 * w) - 1, round(ry2 * h) - 1), GREEN, thick)
    for px1, py1, px2, py2 in plates:
        cv2.rectangle(img, (round(px1 * w), round(py1 * h)), (round(px2 * w), round(py2 * h)), YELLOW, thick)
    facts = evidence(record)
    lines = [
        f"ROI ({record.mode}): {facts['region']}, {facts['crop']}",
        f"{facts['plates']}, margin {facts['margin']}; {facts['reason']}",
    ]
    scale = max(0.4, w / 1600)
    for i, text in enumerate(lines):
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        y = (i + 1) * (th + base + 8)
        cv2.rectangle(img, (0, y - th - base - 4), (min(w, tw + 12), y + 4), (0, 0, 0), -1)
        cv2.putText(img, text, (6, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def write_roi_artifacts(record: RoiRecord, frame: Path | None, plates: Sequence[Corners], out_dir: Path) -> Path:
    """`out_dir/roi.json` (the record) and `out_dir/roi.png` (drawn on `frame`, or on a grey frame of the record's
    size when there is none); returns `out_dir`."""
    import cv2

    out_dir.mkdir(parents=True, exist_ok=True)
    image = None if frame is None else cv2.imread(str(frame))
    if image is None:
        h, w = record.frame_shape if len(record.frame_shape) == 2 else (720, 1280)
        image, plates = np.full((h, w, 3), 96, dtype=np.uint8), ()
    write_roi(out_dir / ROI_JSON, record)
    if not cv2.imwrite(str(out_dir / ROI_PNG), draw_roi(image, record, plates)):
        raise OSError(f"{out_dir / ROI_PNG}: OpenCV could not write the image")
    return out_dir


def roi_run_values(record: RoiRecord) -> tuple[dict[str, str], dict[str, float]]:
    """The rebuild run's params (`roi`, `roi_mode`, `roi_crop`) and metrics (`roi_plates`, `roi_area_fraction`)."""
    from tasks.runtime.gate import crop_text

    region = ",".join(f"{v:g}" for v in record.roi) if record.roi else "full"
    params = {"roi": region, "roi_mode": record.mode, "roi_crop": crop_text(record.crop, record.frame_shape)}
    return params, {"roi_plates": float(record.plates), "roi_area_fraction": area_fraction(record)}
