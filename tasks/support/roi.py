"""A gate camera's region of interest: where plates appear in its frame, and the crop an engine is built for.

A camera bolted to a pole sees plates in one part of its frame. `build.roi` (auto, full, or [x1, y1, x2, y2] in
frame fractions) names that region; the build learns `auto` from the FP32 reference's plates on the calibration
frames and writes what it decided, with its evidence, as a `RoiRecord` (`roi.json` beside the candidates). An
engine built for a region carries its `crop` (frame pixels) and the `frame_shape` it applies to in its contract
(`candidate.json`, the artifact's embedded metadata, the release manifest): the detector crops every frame to it,
and maps boxes back to full-frame pixels. An empty crop is the full frame.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tasks.support.fsutil import atomic_write_text

ROI_JSON = "roi.json"

Crop = tuple[int, int, int, int]  # (x1, y1, x2, y2) in frame pixels, x2/y2 exclusive; () is the full frame


@dataclass(frozen=True)
class RoiRecord:
    """What the build decided about the region of interest, and why (logged on the rebuild's run, drawn in reports)."""

    mode: str  # auto | full | fixed (build.roi)
    frame_shape: tuple[int, ...]  # (height, width) of the footage the crop applies to
    roi: tuple[float, ...] = ()  # (x1, y1, x2, y2) frame fractions after the margin; () = the full frame
    crop: tuple[int, ...] = ()  # the engine's crop in frame pixels (the ROI widened to the input's aspect); ()
    input_shape: tuple[int, ...] = ()  # (height, width) of the engines built at the crop
    plates: int = 0  # plates the FP32 reference found on the frames the ROI was learned from
    frames: int = 0  # frames it was learned from
    margin: float = 0.0  # the margin applied, in frame fractions
    reason: str = ""  # why: e.g. "learned from 212 plates on 160 frames", "only 3 plates (< build.roi_min_plates)"
    evidence: dict[str, Any] = field(default_factory=dict)  # e.g. the union of plate boxes before the margin

    def __post_init__(self) -> None:
        for name in ("frame_shape", "roi", "crop", "input_shape"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    @property
    def full_frame(self) -> bool:
        return not self.crop


def write_roi(path: Path, record: RoiRecord) -> Path:
    return atomic_write_text(path, json.dumps(asdict(record), indent=2, sort_keys=True) + "\n")


def read_roi(path: Path) -> RoiRecord:
    return RoiRecord(**json.loads(path.read_text()))


def inside(box: Sequence[float], crop: Sequence[int]) -> bool:
    """Whether a box (x1, y1, x2, y2, frame pixels) lies wholly inside `crop` (an empty crop is the whole frame)."""
    if not crop:
        return True
    x1, y1, x2, y2 = box
    cx1, cy1, cx2, cy2 = crop
    return x1 >= cx1 and y1 >= cy1 and x2 <= cx2 and y2 <= cy2
