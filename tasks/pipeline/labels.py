"""The labelled holdout: the one label checker (and YOLO label reader), the one holdout writer, YOLO import, and
pre-label review stats.

A holdout folder is `images/`, `labels/` (YOLO txt `class cx cy w h`, normalised 0-1, one file per image; an empty
file means "no plate") and `holdout.json` (where it came from, its counts). Why one strict checker: Ultralytics'
validator drops a whole image over one bad line or class id and removes duplicate rows without failing, so a broken
holdout would quietly give different metrics. Every holdout is checked here before it is written or used.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import re
import shutil
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from tasks.edge.agreement import box_iou
from tasks.support.errors import AlprError, Remedy
from tasks.support.fsutil import atomic_dir
from tasks.support.images import IMAGE_SUFFIXES, file_kind, image_problem, imported_file_problem, list_images

log = logging.getLogger(__name__)

HOLDOUT_JSON = "holdout.json"
CLASSES_TXT = "classes.txt"  # Label Studio's YOLO export: one class name per line, in id order
EPS = 1e-6  # tolerance for boxes touching the image edge and for duplicate coordinates
# box_iou's eps for normalised boxes: its default (1e-7) is sized for pixel areas, a normalised box's is ~1e-3; this
# one still keeps two empty boxes at IoU 0 (not NaN) without biasing a real pair (identical boxes: exactly 1.0)
IOU_EPS = 1e-12
MAX_SHOWN = 20  # problems listed in a LabelError's message (all of them are in `problems`)
# the largest label file read: a plate image holds a few boxes and Ultralytics keeps at most 300 (max_det), ~16 KB of
# lines with scores; 256 KiB (thousands of boxes) is checked in under a second. A bigger file is no label, and is
# refused without reading it (a symlink to /dev/zero would be read without end)
MAX_LABEL_BYTES = 256 * 1024
_INT = re.compile(r"[+-]?\d+")


class LabelError(AlprError):
    """The labelled holdout (or a label export) is missing or wrong; `problems` lists every `file:line: what`."""

    remedy = Remedy.HOLDOUT

    def __init__(self, message: str, problems: Sequence[str] = (), **facts: Any) -> None:
        super().__init__(message, **facts)
        self.problems: tuple[str, ...] = tuple(problems)


def _label_error(where: Path, problems: Sequence[str]) -> LabelError:
    """One error listing the first MAX_SHOWN problems; every one stays in `problems`."""
    noun = "problem" if len(problems) == 1 else "problems"
    shown = "".join(f"\n  {p}" for p in _first(problems))
    return LabelError(f"{where}: {len(problems)} label {noun}:{shown}", problems, path=str(where))


def _first(items: Sequence[str]) -> list[str]:
    """The first MAX_SHOWN items, then "and N more"."""
    more = [f"and {len(items) - MAX_SHOWN} more"] if len(items) > MAX_SHOWN else []
    return [*items[:MAX_SHOWN], *more]


@dataclass(frozen=True)
class Box:
    """One YOLO box: class id and centre/size normalised to the image (0-1). `conf`: the detector's confidence when
    the box is a pre-label read with `scores=True` (None for a label a person drew or checked)."""

    cls: int
    cx: float
    cy: float
    w: float
    h: float
    conf: float | None = None

    @classmethod
    def from_xyxy(cls, class_id: int, x1: float, y1: float, x2: float, y2: float) -> Box:
        """From normalised corners (what a detector gives after dividing by the image size)."""
        return cls(class_id, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        """Normalised corners x1, y1, x2, y2."""
        return (self.cx - self.w / 2, self.cy - self.h / 2, self.cx + self.w / 2, self.cy + self.h / 2)


@dataclass(frozen=True)
class LabelledImage:
    """An image of the holdout and its boxes (empty: checked to show no plate)."""

    image: Path
    label: Path
    boxes: tuple[Box, ...]


@dataclass(frozen=True)
class LabelSet:
    """A checked holdout. Whether zero boxes overall is acceptable is the caller's decision (see `boxes`)."""

    root: Path
    names: tuple[str, ...]
    images: tuple[LabelledImage, ...]

    @property
    def boxes(self) -> int:
        return sum(len(item.boxes) for item in self.images)

    @property
    def empty_images(self) -> int:
        """Images whose label file is empty: labelled as showing no plate."""
        return sum(1 for item in self.images if not item.boxes)

    @property
    def boxes_by_image(self) -> dict[str, tuple[Box, ...]]:
        """Boxes keyed by image file name (what `compare_to_prelabels` takes)."""
        return {item.image.name: item.boxes for item in self.images}


class HoldoutItem(NamedTuple):
    """One image for `write_holdout`: its file name in the holdout, the file to copy, its boxes."""

    name: str
    image: Path
    boxes: Sequence[Box]


def _class_problem(token: str, nc: int, names: Sequence[str] | None) -> str | None:
    allowed = f"allowed: 0..{nc - 1}" if nc else "no classes are allowed"
    if names is not None:
        allowed += " (" + ", ".join(f"{i}={n}" for i, n in enumerate(names)) + ")"
    if not _INT.fullmatch(token):
        return f"class id {token!r} is not an integer; {allowed}"
    if int(token) not in range(nc):
        return f"class id {int(token)} out of range; {allowed}"
    return None


def _parse(
    text: str, where: str, nc: int, names: Sequence[str] | None = None, *, scores: bool = False
) -> tuple[list[Box], list[str]]:
    """Boxes and `where:line: what` problems of one label file's text. Blank lines are skipped (Ultralytics does
    too); every other line must be a valid, in-image, non-duplicate box. `scores`: a line may carry a sixth number,
    a pre-label's confidence (0-1); a holdout's labels never do."""
    boxes: list[Box] = []
    kept = _Kept()
    problems: list[str] = []
    columns = "5 or 6 numbers (class cx cy w h [conf])" if scores else "5 numbers (class cx cy w h)"
    for lineno, line in enumerate(text.splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        here = f"{where}:{lineno}"
        if len(tokens) != 5 and not (scores and len(tokens) == 6):
            problems.append(f"{here}: expected {columns}, got {len(tokens)}: {line.strip()!r}")
            continue
        bad = [t for t in tokens[1:] if not _finite(t)]
        if bad:
            problems.append(f"{here}: not a finite number: {', '.join(repr(t) for t in bad)}")
        cls_problem = _class_problem(tokens[0], nc, names)
        if cls_problem:
            problems.append(f"{here}: {cls_problem}")
        if bad:
            continue
        cx, cy, w, h = (float(t) for t in tokens[1:5])
        conf = float(tokens[5]) if len(tokens) == 6 else None
        if conf is not None and not 0 <= conf <= 1:
            problems.append(f"{here}: confidence must be in 0..1, got {conf:g}")
            continue
        if w <= 0 or h <= 0:
            problems.append(f"{here}: box width and height must be > 0, got w={w:g} h={h:g}")
            continue
        x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        if x1 < -EPS or y1 < -EPS or x2 > 1 + EPS or y2 > 1 + EPS:
            problems.append(
                f"{here}: box extends outside the image: x {x1:.6f}..{x2:.6f}, y {y1:.6f}..{y2:.6f} (must be in 0..1)"
            )
            continue
        if cls_problem:
            continue
        box = Box(int(tokens[0]), cx, cy, w, h, conf)
        same = kept.first_same(box)
        if same is not None:
            problems.append(f"{here}: duplicate of line {same}")
            continue
        kept.add(box, lineno)
        boxes.append(box)
    return boxes, problems


def _finite(token: str) -> bool:
    try:
        return math.isfinite(float(token))
    except ValueError:
        return False


def _same(a: Box, b: Box) -> bool:
    """Duplicates: the same class and every corner coordinate within EPS (confidences are not compared)."""
    return a.cls == b.cls and all(abs(u - v) <= EPS for u, v in zip(a.xyxy, b.xyxy, strict=True))


class _Kept:
    """The boxes of one file kept so far, bucketed by class and corners on a grid of 2 * EPS: two corners within EPS
    lie in the same or a neighbouring cell, so a new box is compared only with the boxes of the 3**4 cells around
    its own (each holds a bounded few kept boxes), not with every earlier line: linear in the file's length."""

    CELL = 2 * EPS  # wider than EPS, so rounding in `c / CELL` never puts near-equal corners two cells apart
    AROUND = tuple(itertools.product((-1, 0, 1), repeat=4))

    def __init__(self) -> None:
        self._cells: dict[tuple[int, ...], list[tuple[Box, int]]] = {}

    @classmethod
    def _cell(cls, box: Box) -> tuple[int, ...]:
        return tuple(math.floor(c / cls.CELL) for c in box.xyxy)

    def first_same(self, box: Box) -> int | None:
        """The line of the earliest kept box `_same` as `box`, None when there is none."""
        x1, y1, x2, y2 = self._cell(box)
        near = (self._cells.get((box.cls, x1 + a, y1 + b, x2 + c, y2 + d), ()) for a, b, c, d in self.AROUND)
        return min((line for cell in near for kept, line in cell if _same(kept, box)), default=None)

    def add(self, box: Box, line: int) -> None:
        self._cells.setdefault((box.cls, *self._cell(box)), []).append((box, line))


def read_small_text(
    path: Path, where: str, limit: int = MAX_LABEL_BYTES, limit_name: str = "MAX_LABEL_BYTES, tasks/pipeline/labels.py"
) -> tuple[str | None, str | None]:
    """A label file's text (or another small file's: UTF-8 with an optional BOM, as Ultralytics reads labels), or the
    problem reading it. Only a regular file of at most `limit` bytes (the constant `limit_name`) is read, and never
    more than that: a device, a FIFO or a huge file is a problem named at once, not a hang or a memory error."""
    too_big = f"more than the {limit:,} bytes such a file may hold ({limit_name})"
    try:
        if not stat.S_ISREG(mode := os.stat(path).st_mode):  # not opened at all: opening a device can act
            return None, f"{where}: not a regular file ({file_kind(mode)})"
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO swapped in meanwhile: no wait
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                return None, f"{where}: not a regular file ({file_kind(st.st_mode)})"
            if st.st_size > limit:
                return None, f"{where}: {st.st_size:,} bytes, {too_big}"
            data = f.read(limit + 1)
    except OSError as e:
        return None, f"{where}: cannot be read ({e.strerror or e})"
    if len(data) > limit:  # it grew since fstat
        return None, f"{where}: {too_big}"
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError:
        return None, f"{where}: not UTF-8 text"


def read_label_file(
    path: Path, nc: int, names: Sequence[str] | None = None, *, scores: bool = False
) -> tuple[list[Box], list[str]]:
    """The boxes of one YOLO label file and its problems (`path:line: what`), by the holdout's own rules: classes
    must be in range(nc) (`names`, when given, are listed in the problem). `scores`: the file holds pre-labels,
    whose lines may end with the detector's confidence (`Box.conf`)."""
    text, problem = read_small_text(path, str(path))
    if text is None:
        return [], [problem or f"{path}: cannot be read"]
    return _parse(text, str(path), nc, names, scores=scores)


def yolo_text(boxes: Sequence[Box]) -> str:
    """YOLO label text, 6 decimals; an empty string for no boxes (an empty file: no plate). Confidences are not
    written: the text is a label, what the holdout checker reads."""
    return "".join(f"{b.cls} {b.cx:.6f} {b.cy:.6f} {b.w:.6f} {b.h:.6f}\n" for b in boxes)


def _check(root: Path, names: Sequence[str], *, export: bool = False) -> tuple[list[LabelledImage], list[str]]:
    """The labelled images under `root` and every problem found (paths relative to `root`). `export`: `root` is a
    folder to import, whose files must be regular files inside it (a file that is not is named, not read) and
    whose images must decode (`image_problem`); a holdout's own files are not held to that (DVC may link them into
    its cache, and decoding every image on every check would cost a run seconds)."""
    images_dir, labels_dir = root / "images", root / "labels"
    if not images_dir.is_dir():
        return [], [f"images/: no images folder in {root}"]
    images = list_images(images_dir)
    if not images:
        subfolders = sorted(p.name for p in images_dir.iterdir() if p.is_dir())
        note = f" (subfolders are not read: {', '.join(subfolders)})" if subfolders else ""
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        return [], [f"images/: no images ({suffixes}){note}"]
    if not labels_dir.is_dir():
        return [], ["labels/: no labels folder (one YOLO .txt per image; an empty file means no plate)"]
    by_stem: dict[str, list[Path]] = {}
    for image in images:
        by_stem.setdefault(image.stem, []).append(image)
    labels = {p.stem: p for p in labels_dir.iterdir() if p.suffix == ".txt"}
    problems: list[str] = []
    found: list[LabelledImage] = []
    for stem in sorted(by_stem.keys() | labels.keys()):
        same_stem, label = by_stem.get(stem, []), labels.get(stem)
        if not same_stem:
            problems.append(f"labels/{stem}.txt: no image for this label file in images/")
            continue
        if len(same_stem) > 1:
            listed = ", ".join(f"images/{p.name}" for p in same_stem)
            problems.append(f"{listed}: these images would share one label file labels/{stem}.txt")
            continue
        image = same_stem[0]
        if export and (problem := imported_file_problem(image, root) or image_problem(image)):
            problems.append(f"images/{image.name}: {problem}")
        if label is None:
            problems.append(f"images/{image.name}: no label file labels/{stem}.txt; an empty file means no plate")
            continue
        where = f"labels/{label.name}"
        if export and (problem := imported_file_problem(label, root)):
            problems.append(f"{where}: {problem}")
            continue
        text, problem = read_small_text(label, where)
        if text is None:
            problems.append(problem or f"{where}: cannot be read")
            continue
        boxes, file_problems = _parse(text, where, len(names), names)
        problems += file_problems
        found.append(LabelledImage(image, label, tuple(boxes)))
    return found, problems


def check_labels(holdout_dir: Path, names: Sequence[str]) -> LabelSet:
    """Every image of `holdout_dir` with its boxes; raises one LabelError listing every problem. A holdout whose
    images all show no plate passes: the caller decides whether zero boxes is acceptable."""
    if not names:
        raise ValueError("names must list at least one class")
    holdout_dir = Path(holdout_dir)
    found, problems = _check(holdout_dir, names)
    if problems:
        raise _label_error(holdout_dir, problems)
    result = LabelSet(holdout_dir, tuple(names), tuple(found))
    log.info(
        "labels of %s: %d images, %d boxes, %d images without a plate",
        holdout_dir,
        len(result.images),
        result.boxes,
        result.empty_images,
    )
    return result


def read_holdout_info(holdout_dir: Path) -> dict[str, Any] | None:
    """The holdout's `holdout.json`; None only when it does not exist (a broken one raises LabelError)."""
    path = Path(holdout_dir) / HOLDOUT_JSON
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise LabelError(f"{path}: cannot be read ({e})", (f"{path}: cannot be read",), path=str(path)) from e
    try:
        info = json.loads(text)
    except json.JSONDecodeError as e:
        msg = f"{path}:{e.lineno}: not valid JSON ({e.msg})"
        raise LabelError(msg, (msg,), path=str(path)) from e
    if not isinstance(info, dict):
        msg = f"{path}: expected a JSON object, got {type(info).__name__}"
        raise LabelError(msg, (msg,), path=str(path))
    return info


def holdout_videos(info: Mapping[str, Any]) -> list[str]:
    """The names of the videos a holdout's frames came from (`holdout.json` `videos`: names, or objects with a
    `name`): they stay out of calibration and agreement frames for good."""
    videos = info.get("videos") or []
    if not isinstance(videos, list):
        raise LabelError(f"holdout.json: `videos` must be a list, not {type(videos).__name__}")
    return sorted(v["name"] if isinstance(v, dict) else str(v) for v in videos)


def _item_problems(items: Sequence[HoldoutItem], *, decode: bool = True) -> list[str]:
    """Names must be plain, unique image file names (also by stem: the label file is named by it) keeping the
    source's suffix; sources must exist and, with `decode`, be images validation can read (`image_problem`)."""
    problems: list[str] = []
    seen: dict[str, str] = {}
    for item in items:
        name, image = item.name, Path(item.image)
        suffix = Path(name).suffix.lower()
        if not name or name != Path(name).name or name in {".", ".."} or name.startswith("."):
            problems.append(f"{name!r}: not a plain file name")
            continue
        if suffix not in IMAGE_SUFFIXES:
            problems.append(f"{name}: not an image name ({', '.join(sorted(IMAGE_SUFFIXES))})")
        elif suffix != image.suffix.lower():
            problems.append(f"{name}: its source {image} is a {image.suffix or 'suffix-less'} file")
        key = Path(name).stem.lower()  # case-folded: a.jpg and A.png collide on case-insensitive filesystems
        if key in seen:
            problems.append(f"{name}: same label file name as {seen[key]}")
        seen.setdefault(key, name)
        if not image.is_file():
            problems.append(f"{name}: source image {image} does not exist")
        elif decode and (problem := image_problem(image)):
            problems.append(f"{name}: source image {image}: {problem}")
    return problems


def write_holdout(
    out_dir: Path, items: Sequence[HoldoutItem], info: Mapping[str, Any], *, names: Sequence[str]
) -> LabelSet:
    """Write a holdout (copied images, YOLO labels, holdout.json with `info` plus its counts) to `out_dir`.

    Every source image is decoded first. Built in a temp sibling and checked with the same checker as any holdout
    before it replaces `out_dir`: nothing half-made is ever visible, and on any failure the old holdout is left as
    it was.
    """
    if not names:
        raise ValueError("names must list at least one class")
    return _write_holdout(Path(out_dir), items, info, names, decode=True)


def _write_holdout(
    out_dir: Path, items: Sequence[HoldoutItem], info: Mapping[str, Any], names: Sequence[str], *, decode: bool
) -> LabelSet:
    """`write_holdout`; `decode=False` when the caller decoded the source images already."""
    problems = _item_problems(items, decode=decode) or ([] if items else ["no images to write"])
    if problems:
        raise _label_error(out_dir, problems)
    with atomic_dir(out_dir) as tmp:
        (tmp / "images").mkdir()
        (tmp / "labels").mkdir()
        for item in items:
            shutil.copyfile(item.image, tmp / "images" / item.name)
            (tmp / "labels" / f"{Path(item.name).stem}.txt").write_text(yolo_text(item.boxes), encoding="utf-8")
        found, problems = _check(tmp, names)
        if problems:
            raise _label_error(out_dir, problems)
        checked = LabelSet(tmp, tuple(names), tuple(found))
        written = {
            **info,
            "names": list(names),
            "images": len(checked.images),
            "boxes": checked.boxes,
            "empty_images": checked.empty_images,
            "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        (tmp / HOLDOUT_JSON).write_text(json.dumps(written, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    result = LabelSet(
        out_dir,
        checked.names,
        tuple(
            LabelledImage(out_dir / "images" / i.image.name, out_dir / "labels" / i.label.name, i.boxes)
            for i in checked.images
        ),
    )
    log.info(
        "wrote holdout %s: %d images, %d boxes, %d without a plate",
        out_dir,
        len(result.images),
        result.boxes,
        result.empty_images,
    )
    return result


def import_yolo(src: Path, out_dir: Path, names: Sequence[str], info: Mapping[str, Any]) -> LabelSet:
    """Import a YOLO export (`images/` + `labels/`, optionally `classes.txt`/`notes.json` beside them, as Label
    Studio writes it) as the holdout `out_dir`. The export is checked first: only regular files inside it are
    taken, every image is decoded, every label file read within MAX_LABEL_BYTES; any problem fails the whole import
    with all of them listed, and `out_dir` is not touched."""
    src, out_dir = Path(src), Path(out_dir)
    if not names:
        raise ValueError("names must list at least one class")
    if not src.is_dir():
        raise _label_error(src, [f"{src}: no such folder"])
    if src.resolve() == out_dir.resolve():
        raise _label_error(src, [f"{src}: the export and the holdout are the same folder"])
    classes = src / CLASSES_TXT
    if os.path.lexists(classes):  # a broken symlink too: named, not taken for "no classes.txt"
        problem = imported_file_problem(classes, src)
        text, problem = (None, f"{classes}: {problem}") if problem else read_small_text(classes, str(classes))
        if text is None:
            raise _label_error(src, [problem or f"{classes}: cannot be read"])
        listed = [line.strip() for line in text.splitlines() if line.strip()]
        if listed != list(names):
            raise _label_error(src, [f"{classes}: classes {listed} differ from the detector's {list(names)}"])
    found, problems = _check(src, names, export=True)
    if problems:
        raise _label_error(src, problems)
    items = [HoldoutItem(i.image.name, i.image, i.boxes) for i in found]
    info = {**info, "source": "yolo-import", "source_dir": str(src.resolve())}
    return _write_holdout(out_dir, items, info, names, decode=False)  # decoded by the export's check


def compare_to_prelabels(
    reviewed: Mapping[str, Sequence[Box]],
    prelabels: Mapping[str, Sequence[Box]],
    iou_match: float = 0.5,
    moved_below: float = 0.9,
) -> dict[str, int | float]:
    """How a reviewer changed the detector's pre-labels: the detector's own error on this camera.

    Per reviewed image, boxes of the same class are matched one-to-one, greedily by highest IoU (>= iou_match).
    `kept`: IoU >= moved_below; `moved`: matched below that; `added`: reviewed boxes with no pre-label (plates the
    detector missed); `removed`: pre-labels with no reviewed box (false boxes). Every reviewed image must have
    pre-labels (an empty list when the detector found nothing); pre-labelled images not reviewed are ignored.
    """
    if not 0 < iou_match <= moved_below <= 1:
        raise ValueError(f"need 0 < iou_match <= moved_below <= 1; got {iou_match}, {moved_below}")
    missing = sorted(set(reviewed) - set(prelabels))
    if missing:
        raise ValueError(f"{len(missing)} reviewed images have no pre-labels: {', '.join(_first(missing))}")
    kept = moved = added = removed = changed = 0
    n_reviewed = n_pre = 0
    for name in sorted(reviewed):
        rev, pre = list(reviewed[name]), list(prelabels[name])
        iou = box_iou(_corners(rev), _corners(pre), eps=IOU_EPS)
        pairs = sorted(
            ((float(iou[i, j]), i, j) for i, r in enumerate(rev) for j, p in enumerate(pre) if r.cls == p.cls),
            key=lambda t: (-t[0], t[1], t[2]),
        )
        used_r: set[int] = set()
        used_p: set[int] = set()
        img_kept = img_moved = 0
        for iou, i, j in pairs:
            if iou < iou_match:
                break
            if i in used_r or j in used_p:
                continue
            used_r.add(i)
            used_p.add(j)
            if iou >= moved_below:
                img_kept += 1
            else:
                img_moved += 1
        img_added, img_removed = len(rev) - len(used_r), len(pre) - len(used_p)
        kept, moved, added, removed = kept + img_kept, moved + img_moved, added + img_added, removed + img_removed
        changed += bool(img_moved or img_added or img_removed)
        n_reviewed, n_pre = n_reviewed + len(rev), n_pre + len(pre)
    matched = kept + moved
    return {
        "images": len(reviewed),
        "images_changed": changed,
        "kept": kept,
        "moved": moved,
        "added": added,
        "removed": removed,
        "prelabel_precision": matched / n_pre if n_pre else 1.0,
        "prelabel_recall": matched / n_reviewed if n_reviewed else 1.0,
    }


def _corners(boxes: Sequence[Box]) -> np.ndarray:
    """The boxes' normalised corners as an (N, 4) array, what `box_iou` takes."""
    return np.array([b.xyxy for b in boxes], dtype=np.float64).reshape(-1, 4)
