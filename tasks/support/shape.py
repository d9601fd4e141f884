"""The input shape an engine is built at: the square `build.imgsz`, or the camera's own aspect (`build.shape`).

A gate camera's frame is 16:9; a square input spends 44% of every inference on letterbox padding. The camera
shape is the smallest input of the frame's aspect whose long side is `build.imgsz`, with a band of at least
`build.shape_margin` letterbox pixels above and below the frame (left and right for portrait footage), the short
side rounded UP to a multiple of the model stride: the frame is scaled exactly as the square input scaled it (so a
plate keeps the size the detector saw in the square), and no pixel is lost.

Why a band: the detector was trained on letterboxed images, whose grey borders its deep layers see past the frame's
edge. With almost no band (1280x720 at 640: 12 rows above and below, at 384x640), those layers read the
convolutions' zero padding instead, and boxes near the edge move. Measured on the demo's labelled holdout, FP32 on
OpenVINO: mAP50-95 0.663 square, 0.653 at 384x640 (mean IoU of the plates in the frame's bottom tenth 0.44 against
0.79 square), 0.667 at 416x640 (margin 16: a 28-row band). A band costs pixels (416x640 is 8% more than 384x640);
the default, 16, is the smallest band whose FP32 costs at most 0.3 pt on the demo's holdout and on another seed's
(benchmarks/shape_margin.py; docs/int8-builds.md: the letterbox band; docs/measured.md).

An engine built for the camera's region of interest (`build.roi`, tasks/pipeline/roi.py) takes the region at the
same scale (`roi_geometry`): its input is the region's size at that scale rounded up to the stride, and its crop the
region widened to the input's aspect, so plates keep their pixel size and the letterbox adds no band.

The footage's frame size comes from the extraction manifests (one row per frame, with its width and height). One
project is one camera group: footage of two frame sizes cannot share one shape, and the build refuses it naming
the videos (`MixedFootage`) rather than pick a shape that crops or pads one of the cameras.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tasks.support.errors import AlprError, Remedy

STRIDE = 32  # the largest stride of the YOLO detectors this project builds (P5 head): inputs are multiples of it

Shape = tuple[int, int]  # (height, width), as Ultralytics' `imgsz=(h, w)` and an engine's NCHW input


class MixedFootage(AlprError):
    """The project's videos do not share one frame size, so no one input shape fits them all."""

    remedy = Remedy.PARAMS


class FrameSizeUnknown(AlprError):
    """The build needs the footage's frame size and no extraction manifest records it."""

    remedy = Remedy.EXTRACT


def camera_shape(frame_hw: Shape, imgsz: int, margin: int = 0, stride: int = STRIDE) -> Shape:
    """(height, width) of the smallest input with the aspect of `frame_hw` whose long side is `imgsz` and which
    leaves at least `margin` letterbox pixels on each side of the frame's short side, rounded up to a multiple of
    `stride` (1280x720 at 640: (384, 640) with no margin, (416, 640) with 16; portrait 720x1280: the transpose)."""
    h, w = frame_hw
    if h <= 0 or w <= 0:
        raise ValueError(f"frame size must be positive, got {h}x{w} (height x width)")
    if imgsz % stride:
        raise ValueError(f"imgsz {imgsz} is not a multiple of the stride {stride}")
    if margin < 0:
        raise ValueError(f"margin must be 0 or more pixels, got {margin}")
    long_side, short_side = max(h, w), min(h, w)
    short = min(imgsz, math.ceil((short_side * imgsz / long_side + 2 * margin) / stride) * stride)
    return (imgsz, short) if h >= w else (short, imgsz)


def square(imgsz: int) -> Shape:
    return (imgsz, imgsz)


def input_shape(precision: str, how: str, imgsz: int, frame_hw: Shape | None, margin: int = 0) -> Shape:
    """The shape a candidate is built at: INT8 engines at the camera shape when `how` (`build.shape`) is camera;
    FP32/FP16 ones (the accuracy and speed references) square, so accuracy and speed are measured against the
    square model a user would deploy without this project. `margin`: `build.shape_margin` (`camera_shape`)."""
    if how == "camera" and precision == "int8":
        if frame_hw is None:
            raise FrameSizeUnknown("build.shape: camera needs the footage's frame size; extract the frames first")
        return camera_shape(frame_hw, imgsz, margin)
    return square(imgsz)


Crop = tuple[int, ...]  # (x1, y1, x2, y2) frame pixels, x2/y2 exclusive; () the full frame (tasks/support/roi.py)


def roi_pixels(roi: Sequence[float], frame_hw: Shape) -> Crop:
    """A region in frame fractions (x1, y1, x2, y2) as frame pixels, rounded outward (never a plate pixel less) and
    clipped to the frame."""
    h, w = frame_hw
    x1, y1, x2, y2 = roi
    return (
        max(0, math.floor(x1 * w)),
        max(0, math.floor(y1 * h)),
        min(w, math.ceil(x2 * w)),
        min(h, math.ceil(y2 * h)),
    )


def _widen(lo: int, hi: int, size: int, limit: int) -> tuple[int, int]:
    """[lo, hi) widened to `size` pixels about its centre and shifted inside [0, limit); clipped when size > limit."""
    if size >= limit:
        return 0, limit
    start = math.floor((lo + hi - size) / 2)
    start = min(max(start, 0), limit - size)
    return start, start + size


def _axis(lo: int, hi: int, limit: int, scale: float, margin: int, stride: int) -> tuple[int, int, int]:
    """(input side, crop start, crop end) on one axis of `roi_geometry`."""
    side = max(stride, math.ceil((hi - lo) * scale / stride) * stride)
    c_lo, c_hi = _widen(lo, hi, round(side / scale), limit)
    if margin and (c_lo == 0 or c_hi == limit):  # the crop's edge is the frame's: keep the letterbox band there
        side = max(stride, math.ceil(((hi - lo) * scale + 2 * margin) / stride) * stride)
        c_lo, c_hi = _widen(lo, hi, max(hi - lo, min(limit, math.floor((side - 2 * margin) / scale))), limit)
    return side, c_lo, c_hi


def roi_geometry(
    frame_hw: Shape, imgsz: int, roi: Sequence[int], margin: int = 0, stride: int = STRIDE
) -> tuple[Shape, Crop]:
    """(input shape, crop) of an engine that looks at the region `roi` (frame pixels) of the camera's frame.

    The region is scaled as the camera shape scales the frame (`imgsz` over the frame's long side: a plate keeps the
    pixel size the detector sees in the square and camera inputs), each side rounded UP to `stride`. The crop is the
    region widened, about its centre and shifted inside the frame, to the input's own aspect at that scale, so the
    letterbox adds no band inside the frame. Where the crop reaches the frame's edge on its short axis (top or bottom
    of a landscape frame), plates there would meet the convolutions' zero padding, as in a camera shape without a
    band: as `camera_shape` does, that axis keeps a letterbox band of at least `margin` pixels (`build.shape_margin`)
    on each side, and the crop is widened only as far as that allows; the long axis is fitted exactly, so plates
    keep the camera scale.
    An empty region, or one whose crop is the whole frame, is the full frame: `camera_shape` with the band of
    `margin` pixels, and crop ().
    """
    h, w = frame_hw
    full = camera_shape(frame_hw, imgsz, margin, stride)
    if not roi:
        return full, ()
    x1, y1, x2, y2 = (int(v) for v in roi)
    if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
        raise ValueError(f"region {[x1, y1, x2, y2]} is not inside the {w}x{h} (width x height) frame")
    scale = imgsz / max(h, w)
    in_h, cy1, cy2 = _axis(y1, y2, h, scale, margin if h <= w else 0, stride)
    in_w, cx1, cx2 = _axis(x1, x2, w, scale, margin if w < h else 0, stride)
    crop = (cx1, cy1, cx2, cy2)
    if crop == (0, 0, w, h):
        return full, ()
    return (in_h, in_w), crop


def shape_text(shape: Sequence[int]) -> str:
    """`384x640` (height x width): how a shape is written in metrics rows, MLflow and the README."""
    h, w = shape
    return f"{h}x{w}"


def manifest_frame_sizes(manifest: Path) -> dict[str, set[Shape]]:
    """Each video's frame sizes (height, width) as extraction recorded them in a `manifest.csv`."""
    sizes: dict[str, set[Shape]] = {}
    with manifest.open(newline="") as f:
        for row in csv.DictReader(f):
            try:
                size = (int(row["height"]), int(row["width"]))
            except (KeyError, TypeError, ValueError) as e:
                raise FrameSizeUnknown(
                    f"{manifest}: a row without a frame width and height ({e}); extract the frames again"
                ) from e
            sizes.setdefault(row["video"], set()).add(size)
    return sizes


def footage_frame_size(manifests: Iterable[Path]) -> Shape:
    """The one frame size (height, width) of every video the `manifests` list; `MixedFootage` when they differ."""
    by_size: dict[Shape, set[str]] = {}
    read = []
    for manifest in manifests:
        read.append(manifest)
        for video, sizes in manifest_frame_sizes(manifest).items():
            for size in sizes:
                by_size.setdefault(size, set()).add(video)
    if not by_size:
        raise FrameSizeUnknown(f"no frame listed in {[str(m) for m in read]}: extract the frames first")
    if len(by_size) > 1:
        groups = "; ".join(
            f"{w}x{h} (width x height): {', '.join(sorted(videos))}" for (h, w), videos in sorted(by_size.items())
        )
        raise MixedFootage(
            f"the project's videos have {len(by_size)} frame sizes ({groups}), and build.shape: camera builds one "
            "input shape for the footage. One project is one camera group: move each camera's videos to a project "
            "of its own (one project per frame size), or set build.shape: square to build square engines for all",
            sizes={shape_text(s): sorted(v) for s, v in by_size.items()},
        )
    return next(iter(by_size))


@dataclass(frozen=True)
class Geometry:
    """What an engine sees of a frame: its input (height, width), and the crop (x1, y1, x2, y2 frame pixels) of a
    frame of `frame_shape` (height, width) it is fed; `crop` () is the full frame. Two engines of one geometry see
    the same pixels, so the difference of their numbers is what quantization alone cost (docs/int8-builds.md)."""

    input_shape: Shape
    crop: tuple[int, ...] = ()
    frame_shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in ("input_shape", "crop", "frame_shape"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if self.crop and (len(self.crop) != 4 or len(self.frame_shape) != 2):
            raise ValueError(f"crop {list(self.crop)} needs [x1, y1, x2, y2] and the frame size it applies to")

    @property
    def text(self) -> str:
        """`384x640`, or `384x640 of crop [x1, y1, x2, y2] of 720x1280`: how a geometry is written in rows and logs."""
        shown = shape_text(self.input_shape)
        if self.crop:
            shown += f" of crop {list(self.crop)} of {shape_text(self.frame_shape)}"
        return shown

    @property
    def slug(self) -> str:
        """The geometry in a candidate's name (a folder, a run name): `384x640`, `384x640-roi420_396_1120_700`."""
        return shape_text(self.input_shape) + (f"-roi{'_'.join(str(v) for v in self.crop)}" if self.crop else "")


class _HasGeometry(Protocol):
    input_shape: tuple[int, ...]
    crop: tuple[int, ...]
    frame_shape: tuple[int, ...]


def geometry_of(candidate: _HasGeometry) -> Geometry:
    """A built candidate's geometry (`tasks.support.candidate.Candidate`): its input shape and crop."""
    h, w = (int(v) for v in candidate.input_shape)
    return Geometry((h, w), tuple(int(v) for v in candidate.crop), tuple(int(v) for v in candidate.frame_shape))


def geometry_reference_name(reference: str, geometry: Geometry) -> str:
    """The name of the FP32 model the build derives at `geometry` from the accuracy reference `reference`
    (`fp32@384x640`): `@` is refused in a declared candidate's name, so it never clashes with one."""
    return f"{reference}@{geometry.slug}"
