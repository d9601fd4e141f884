"""Learn a gate camera's region of interest from its footage, and the geometry every INT8 engine is built at.

A camera bolted to a pole sees plates in one part of its frame (the demo's: x 0.34-0.87, y 0.55-0.97, a fifth of
its area), so an engine that looks only there does a fraction of the work at the same plate size. `build.roi: auto`
learns the region as the union of the FP32 reference's plate boxes (`build.reference`, square, on full frames, at
`validate.agreement_conf`) over every calibration frame, the frames of the videos neither reserved for labelling
nor held out (tasks/pipeline/extract.py), through the gate's own detector (`tasks.edge.detect.Detector`); widened on
each side by `build.roi_margin` of the frame and by at least `MARGIN_PLATE_HEIGHTS` plate heights (a plate that
stops a little further along the lane stays inside), clipped to the frame. Fewer than `build.roi_min_plates`
plates: the full frame, and the record says why. `full` is the whole frame, `[x1, y1, x2, y2]` a region the
installer chose. What was decided, with its evidence, is a `RoiRecord` (`roi.json` beside the candidates).

The detections cost a few seconds per hundred frames; they are cached by content (the reference's artifact hash,
the frames' hashes, the thresholds) in the build cache's `roi/` folder, so a rebuild with the same reference and
frames reuses them.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from tasks.support.cache import CacheStore
from tasks.support.candidate import Candidate
from tasks.support.config import BuildConfig
from tasks.support.hashing import content_key, files_sha256
from tasks.support.roi import RoiRecord
from tasks.support.shape import Shape, roi_geometry, roi_pixels

log = logging.getLogger(__name__)

MARGIN_PLATE_HEIGHTS = 3  # the learned region reaches at least this many (median) plate heights past every plate
ROI_CACHE = "roi"  # the build cache's folder of cached plate detections (one `<key>.json` per reference and frames)
LEARN_VERSION = 1  # part of the detections' cache key: bump when what is cached changes

Box = Sequence[float]  # (x1, y1, x2, y2) frame pixels


def learned_roi(boxes: Sequence[Box], frames: int, frame_hw: Shape, margin: float, min_plates: int) -> RoiRecord:
    """The region of `boxes` (every plate the reference found on `frames` frames of size `frame_hw`): their union,
    widened on each side by `margin` of the frame's width (x) and height (y), and by at least
    `MARGIN_PLATE_HEIGHTS` median plate heights, clipped to the frame, in frame fractions. Fewer than `min_plates`
    boxes: the full frame, saying why. Pure: the geometry is added by `with_geometry`."""
    h, w = frame_hw
    if len(boxes) < min_plates:
        reason = (
            f"only {len(boxes)} plates on {frames} calibration frames (< build.roi_min_plates {min_plates}): the full "
            "frame"
        )
        return RoiRecord("auto", (h, w), plates=len(boxes), frames=frames, margin=margin, reason=reason)
    x1 = min(b[0] for b in boxes)
    y1 = min(b[1] for b in boxes)
    x2 = max(b[2] for b in boxes)
    y2 = max(b[3] for b in boxes)
    plate_h = statistics.median(b[3] - b[1] for b in boxes)
    mx = max(margin * w, MARGIN_PLATE_HEIGHTS * plate_h)
    my = max(margin * h, MARGIN_PLATE_HEIGHTS * plate_h)
    roi = (max(0.0, (x1 - mx) / w), max(0.0, (y1 - my) / h), min(1.0, (x2 + mx) / w), min(1.0, (y2 + my) / h))
    return RoiRecord(
        "auto",
        (h, w),
        roi=tuple(round(v, 4) for v in roi),
        plates=len(boxes),
        frames=frames,
        margin=margin,
        reason=f"learned from {len(boxes)} plates on {frames} calibration frames",
        evidence={
            "union": [round(x1 / w, 4), round(y1 / h, 4), round(x2 / w, 4), round(y2 / h, 4)],
            "median_plate_height_px": round(float(plate_h), 1),
            "margin_px": [round(float(mx), 1), round(float(my), 1)],
            "margin_plate_heights": MARGIN_PLATE_HEIGHTS,
        },
    )


def with_geometry(record: RoiRecord, imgsz: int, shape_margin: int) -> RoiRecord:
    """`record` with the INT8 engines' input shape and crop for its region (`tasks.support.shape.roi_geometry`): the
    full frame at the camera shape with `shape_margin` when it has no region (or its crop is the whole frame)."""
    frame_hw = (int(record.frame_shape[0]), int(record.frame_shape[1]))
    region = roi_pixels(record.roi, frame_hw) if record.roi else ()
    shape, crop = roi_geometry(frame_hw, imgsz, region, shape_margin)
    return replace(record, input_shape=shape, crop=crop)


def plate_boxes(
    reference: Candidate, images: Sequence[Path], conf: float, iou: float, cache_dir: Path | None = None
) -> list[list[float]]:
    """Every plate box (frame pixels) the FP32 `reference` finds above `conf` on `images`, through the gate's own
    detector on full frames; cached by content in `<cache_dir>/roi/` when a cache is given."""
    store = CacheStore(cache_dir / ROI_CACHE, suffix=".json", setting="paths.build_cache") if cache_dir else None
    key = content_key(
        {
            "reference_sha256": reference.sha256,
            "frames": files_sha256(images, images[0].parent) if images else "",
            "conf": conf,
            "iou": iou,
            "version": LEARN_VERSION,
        }
    )
    entry = store.lookup(key) if store is not None else None
    if entry is not None:
        try:
            boxes = json.loads(entry.read_text())["boxes"]
            log.info("roi: the reference's %d plates on %d frames from the build cache", len(boxes), len(images))
            return [list(map(float, b)) for b in boxes]
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("roi: cache entry %s unreadable; detecting again", entry)
    import cv2

    from tasks.edge.detect import Detector

    boxes: list[list[float]] = []
    detector = Detector.open(reference.path)
    try:
        for image in images:
            frame = cv2.imread(str(image))
            if frame is None:
                raise ValueError(f"{image}: cannot be read as an image")
            found = detector(frame, conf, iou)
            boxes += [[float(v) for v in b] for b in found.xyxy]
    finally:
        detector.close()
    if store is not None:
        store.put_bytes(key, json.dumps({"boxes": boxes, "frames": len(images)}).encode())
    return boxes


def region_of_interest(
    cfg: BuildConfig,
    frame_hw: Shape,
    reference: Candidate | None,
    images: Sequence[Path],
    conf: float,
    iou: float,
    cache_dir: Path | None = None,
) -> RoiRecord:
    """What `build.roi` decides for footage of `frame_hw`, with the INT8 engines' input shape and crop: `auto`
    learns it from `reference`'s plates on `images` (the calibration frames), `full` is the whole frame, a fixed
    region is taken as given."""
    h, w = frame_hw
    if cfg.roi == "full":
        record = RoiRecord("full", (h, w), reason="build.roi: full")
    elif isinstance(cfg.roi, tuple):
        record = RoiRecord("fixed", (h, w), roi=tuple(cfg.roi), margin=0.0, reason=f"build.roi: {list(cfg.roi)}")
    else:
        if reference is None:
            raise ValueError("build.roi: auto needs the FP32 reference built first")
        boxes = plate_boxes(reference, images, conf, iou, cache_dir)
        record = learned_roi(boxes, len(images), (h, w), cfg.roi_margin, cfg.roi_min_plates)
    record = with_geometry(record, cfg.imgsz, cfg.shape_margin)
    log.info(
        "roi (%s): %s; region %s, crop %s, INT8 input %s",
        record.mode, record.reason, list(record.roi) or "the full frame", list(record.crop) or "none",
        "x".join(map(str, record.input_shape)),
    )  # fmt: skip
    return record
