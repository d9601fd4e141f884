"""Unit tests for the holdout label checker, writer, YOLO import and pre-label comparison (real files, no mocks)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from tasks.edge.agreement import box_iou
from tasks.pipeline.labels import (
    EPS,
    HOLDOUT_JSON,
    IOU_EPS,
    Box,
    HoldoutItem,
    LabelError,
    check_labels,
    compare_to_prelabels,
    import_yolo,
    read_holdout_info,
    read_label_file,
    write_holdout,
    yolo_text,
)
from tasks.support.errors import Remedy

NAMES = ("License_Plate",)
GOOD = "0 0.500000 0.500000 0.200000 0.100000\n"


def _holdout(root: Path, labels: dict[str, str | None], images: list[str] | None = None) -> Path:
    """A holdout folder: an image per name in `images` (default: the label stems + .jpg), a label file per entry of
    `labels` whose text is not None."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for name in images if images is not None else [f"{stem}.jpg" for stem in labels]:
        (root / "images" / name).write_bytes(b"\xff\xd8 not decoded by the checker " + name.encode())
    for stem, text in labels.items():
        if text is not None:
            (root / "labels" / f"{stem}.txt").write_text(text)
    return root


def _iou(a: Box, b: Box) -> float:
    """IoU of two boxes as the pre-label comparison computes it."""
    return float(box_iou(np.array([a.xyxy]), np.array([b.xyxy]), eps=IOU_EPS)[0, 0])


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_good_holdout_passes_with_counts(tmp_path: Path) -> None:
    root = _holdout(
        tmp_path / "h",
        {"a": GOOD + "0 0.1 0.1 0.2 0.2\n", "b": "", "c": "\n" + GOOD + "\n", "d": "0 0.9999995 0.5 0.000001 0.5"},
    )
    labels = check_labels(root, NAMES)
    assert [i.image.name for i in labels.images] == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    assert [len(i.boxes) for i in labels.images] == [2, 0, 1, 1]
    assert labels.boxes == 4 and labels.empty_images == 1
    assert labels.images[0].label == root / "labels" / "a.txt"
    assert labels.images[0].boxes[1] == Box(0, 0.1, 0.1, 0.2, 0.2)
    assert labels.boxes_by_image["b.jpg"] == ()


def test_all_empty_labels_pass_and_expose_zero_boxes(tmp_path: Path) -> None:
    labels = check_labels(_holdout(tmp_path / "h", {"a": "", "b": ""}), NAMES)
    assert labels.boxes == 0 and labels.empty_images == 2  # the caller decides whether that is an error


@pytest.mark.parametrize(
    ("labels", "images", "where", "what"),
    [
        ({"a": None}, None, "images/a.jpg", "no label file labels/a.txt; an empty file means no plate"),
        ({"a": GOOD, "b": ""}, ["b.jpg"], "labels/a.txt", "no image"),
        ({"a": "0 0.5 0.5 0.2\n"}, None, "labels/a.txt:1", "expected 5 numbers"),
        ({"a": GOOD + "1 0.5 0.5 0.2 0.1\n"}, None, "labels/a.txt:2", "class id 1 out of range; allowed: 0..0"),
        ({"a": "x 0.5 0.5 0.2 0.1\n"}, None, "labels/a.txt:1", "class id 'x' is not an integer"),
        ({"a": "0.0 0.5 0.5 0.2 0.1\n"}, None, "labels/a.txt:1", "is not an integer"),
        ({"a": "0 0.5 0.5 x 0.1\n"}, None, "labels/a.txt:1", "not a finite number: 'x'"),
        ({"a": "0 0.5 0.5 nan 0.1\n"}, None, "labels/a.txt:1", "not a finite number"),
        ({"a": "0 0.95 0.5 0.2 0.1\n"}, None, "labels/a.txt:1", "outside the image"),
        ({"a": "0 0.5 0.04 0.2 0.1\n"}, None, "labels/a.txt:1", "outside the image"),
        ({"a": "0 0.5 0.5 0 0.1\n"}, None, "labels/a.txt:1", "width and height must be > 0"),
        ({"a": "0 0.5 0.5 0.2 -0.1\n"}, None, "labels/a.txt:1", "width and height must be > 0"),
        ({"a": GOOD + "0 0.5000004 0.5 0.2 0.1\n"}, None, "labels/a.txt:2", "duplicate of line 1"),
        ({}, [], "images/", "no images"),
        ({"a": GOOD}, ["a.jpg", "a.png"], "images/a.jpg, images/a.png", "share one label file labels/a.txt"),
    ],
    ids=[
        "missing-label",
        "orphan-label",
        "4-numbers",
        "class-1-of-1",
        "class-x",
        "class-float",
        "coord-x",
        "coord-nan",
        "outside-x",
        "outside-y",
        "w-zero",
        "h-negative",
        "duplicate",
        "no-images",
        "shared-stem",
    ],
)
def test_each_problem_is_reported_with_file_and_line(
    tmp_path: Path, labels: dict[str, str | None], images: list[str] | None, where: str, what: str
) -> None:
    root = _holdout(tmp_path / "h", labels, images)
    with pytest.raises(LabelError) as e:
        check_labels(root, NAMES)
    assert len(e.value.problems) == 1, e.value.problems
    problem = e.value.problems[0]
    assert problem.startswith(f"{where}:") and what in problem, problem
    assert problem in str(e.value) and str(root) in str(e.value)
    assert e.value.remedy is Remedy.HOLDOUT


def test_class_problem_names_the_allowed_classes(tmp_path: Path) -> None:
    root = _holdout(tmp_path / "h", {"a": "2 0.5 0.5 0.2 0.1\n"})
    with pytest.raises(LabelError, match=r"allowed: 0\.\.1 \(0=plate, 1=moto_plate\)"):
        check_labels(root, ["plate", "moto_plate"])


def test_missing_folders_are_reported(tmp_path: Path) -> None:
    with pytest.raises(LabelError, match="no images folder"):
        check_labels(tmp_path, NAMES)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(b"x")
    with pytest.raises(LabelError, match="no labels folder"):
        check_labels(tmp_path, NAMES)


def test_all_problems_are_reported_together_and_the_message_is_capped(tmp_path: Path) -> None:
    labels: dict[str, str | None] = {f"bad{i:02d}": "0 0.5 0.5 0.2\n" for i in range(25)}
    labels |= {"good": GOOD, "nolabel": None, "twice": "1 0.5 0.5 0.2 0.1\n0 2 0.5 0.2 0.1\n"}
    root = _holdout(tmp_path / "h", labels)
    (root / "labels" / "orphan.txt").write_text(GOOD)
    with pytest.raises(LabelError) as e:
        check_labels(root, NAMES)
    problems = e.value.problems
    assert len(problems) == 25 + 1 + 1 + 2
    assert any(p.startswith("images/nolabel.jpg:") for p in problems)
    assert any(p.startswith("labels/orphan.txt:") for p in problems)
    assert any(p.startswith("labels/twice.txt:1: class id 1") for p in problems)
    assert any(p.startswith("labels/twice.txt:2:") and "outside" in p for p in problems)
    message = str(e.value)
    assert "29 label problems" in message and "and 9 more" in message
    assert sum(line.startswith("  ") for line in message.splitlines()) == 21
    restored = pickle.loads(pickle.dumps(e.value))  # Prefect persists task results
    assert restored.problems == problems and restored.remedy is Remedy.HOLDOUT and str(restored) == message


def test_read_label_file_and_yolo_text_round_trip(tmp_path: Path) -> None:
    boxes = [Box(0, 0.5, 0.5, 0.2, 0.1), Box(1, 0.25, 0.75, 0.1, 0.05)]
    text = yolo_text(boxes)
    assert text == "0 0.500000 0.500000 0.200000 0.100000\n1 0.250000 0.750000 0.100000 0.050000\n"
    assert yolo_text([]) == ""
    path = tmp_path / "a.txt"
    path.write_text(text)
    assert read_label_file(path, 2) == (boxes, [])
    got, problems = read_label_file(path, 1)
    assert got == boxes[:1] and problems == [f"{path}:2: class id 1 out of range; allowed: 0..0"]


def test_prelabel_confidences_are_read_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("0 0.5 0.5 0.2 0.1 0.8\n\n0 0.1 0.1 0.1 0.1\n")
    boxes, problems = read_label_file(path, 1, scores=True)
    assert problems == [] and boxes == [Box(0, 0.5, 0.5, 0.2, 0.1, 0.8), Box(0, 0.1, 0.1, 0.1, 0.1)]
    assert [b.conf for b in boxes] == [0.8, None]
    assert yolo_text(boxes) == "0 0.500000 0.500000 0.200000 0.100000\n0 0.100000 0.100000 0.100000 0.100000\n"
    # a label (not a pre-label) never has a sixth column: the holdout's own rule
    assert read_label_file(path, 1) == (
        [Box(0, 0.1, 0.1, 0.1, 0.1)],
        [f"{path}:1: expected 5 numbers (class cx cy w h), got 6: '0 0.5 0.5 0.2 0.1 0.8'"],
    )
    path.write_text(
        "0 0.5 0.5 0.2 0.1 1.5\n1 0.5 0.5 0.2 0.1 0.5\n0 0.5 0.5\n0 0.5 0.5 0.2 0.1 nan\n0 0.5 0.5 0.2 0.1 0.9\n"
    )
    boxes, problems = read_label_file(path, 1, ["License_Plate"], scores=True)
    assert boxes == [Box(0, 0.5, 0.5, 0.2, 0.1, 0.9)]
    assert problems == [
        f"{path}:1: confidence must be in 0..1, got 1.5",
        f"{path}:2: class id 1 out of range; allowed: 0..0 (0=License_Plate)",
        f"{path}:3: expected 5 or 6 numbers (class cx cy w h [conf]), got 3: '0 0.5 0.5'",
        f"{path}:4: not a finite number: 'nan'",
    ]


def test_duplicates_are_judged_within_eps_on_every_corner(tmp_path: Path) -> None:
    """Near-duplicates at the EPS boundary, either side of a grid line of the checker's buckets, in both directions,
    per class; among thousands of distinct boxes, each duplicate names the first line it repeats."""
    near, far = 0.9 * EPS, 1.1 * EPS
    lines = [
        "0 0.500000000 0.5 0.2 0.1",  # 1
        f"0 {0.5 + near:.9f} 0.5 0.2 0.1",  # 2: x within EPS of line 1: duplicate of 1
        f"0 {0.5 - near:.9f} 0.5 0.2 0.1",  # 3: the other way: duplicate of 1
        f"0 {0.5 + far:.9f} 0.5 0.2 0.1",  # 4: x just beyond EPS: a box of its own
        f"0 {0.5 + far / 2:.9f} 0.5 0.2 0.1",  # 5: within EPS of lines 1 and 4: duplicate of the first, 1
        f"0 0.5 0.5 {0.2 + 2 * near:.9f} 0.1",  # 6: width + 1.8 EPS: each x edge moves 0.9 EPS: duplicate of 1
        f"0 0.5 0.5 {0.2 + 2 * far:.9f} 0.1",  # 7: each x edge moves 1.1 EPS: its own
        f"0 0.5 {0.5 - far:.9f} 0.2 0.1",  # 8: y beyond EPS: its own
        "1 0.5 0.5 0.2 0.1",  # 9: another class: its own
        f"1 {0.5 + near:.9f} {0.5 + near:.9f} 0.2 0.1",  # 10: duplicate of 9
        f"0 {0.3 - 0.4 * EPS:.9f} 0.3 0.2 0.2",  # 11: x1 just below a multiple of EPS
        f"0 {0.3 + 0.4 * EPS:.9f} 0.3 0.2 0.2",  # 12: x1 just above it: duplicate of 11
    ]
    grid = [f"0 {0.1 + i % 80 * 0.01:.6f} {0.1 + i // 80 * 0.01:.6f} 0.01 0.01" for i in range(4000)]  # distinct
    path = tmp_path / "a.txt"
    path.write_text("\n".join([*lines, *grid, *grid[:3]]) + "\n")
    boxes, problems = read_label_file(path, 2)
    n = len(lines)
    assert problems == [
        f"{path}:2: duplicate of line 1",
        f"{path}:3: duplicate of line 1",
        f"{path}:5: duplicate of line 1",
        f"{path}:6: duplicate of line 1",
        f"{path}:10: duplicate of line 9",
        f"{path}:12: duplicate of line 11",
        *(f"{path}:{n + len(grid) + i + 1}: duplicate of line {n + i + 1}" for i in range(3)),
    ]
    assert len(boxes) == n - 6 + len(grid)


def test_box_geometry() -> None:
    a = Box(0, 0.5, 0.5, 0.2, 0.2)
    assert a.xyxy == pytest.approx((0.4, 0.4, 0.6, 0.6))
    assert _iou(a, a) == pytest.approx(1.0)
    assert _iou(a, Box(0, 0.6, 0.5, 0.2, 0.2)) == pytest.approx(0.02 / 0.06)  # half overlap: 1/3
    assert _iou(a, Box(0, 0.9, 0.9, 0.1, 0.1)) == 0.0
    assert _iou(Box(0, 0.5, 0.5, 0.0, 0.0), Box(0, 0.5, 0.5, 0.0, 0.0)) == 0.0  # both empty: 0, not NaN
    b = Box.from_xyxy(0, 0.4, 0.4, 0.6, 0.6)
    assert (b.cls, b.cx, b.cy, b.w, b.h) == pytest.approx((0, 0.5, 0.5, 0.2, 0.2))


def test_holdout_info_round_trip_and_errors(tmp_path: Path) -> None:
    assert read_holdout_info(tmp_path) is None
    (tmp_path / HOLDOUT_JSON).write_text(json.dumps({"videos": ["a.mp4"], "source": "label-studio"}))
    assert read_holdout_info(tmp_path) == {"videos": ["a.mp4"], "source": "label-studio"}
    (tmp_path / HOLDOUT_JSON).write_text('{"videos": [')
    with pytest.raises(LabelError, match=rf"{HOLDOUT_JSON}:1: not valid JSON") as e:
        read_holdout_info(tmp_path)
    assert e.value.remedy is Remedy.HOLDOUT
    (tmp_path / HOLDOUT_JSON).write_text("[1, 2]")
    with pytest.raises(LabelError, match="expected a JSON object, got list"):
        read_holdout_info(tmp_path)


def _image(path: Path, value: int = 80) -> Path:
    """A real image (36x64, gray `value`), in the format its suffix names: what an import decodes."""
    assert cv2.imwrite(str(path), np.full((36, 64, 3), value, np.uint8))
    return path


def _sources(folder: Path, names: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [_image(folder / name, 40 + i) for i, name in enumerate(names)]


def test_write_holdout_writes_a_checked_holdout(tmp_path: Path) -> None:
    a, b = _sources(tmp_path / "src", ["a.jpg", "b.png"])
    items = [HoldoutItem("f1.jpg", a, [Box(0, 0.5, 0.5, 0.2, 0.1)]), HoldoutItem("f2.png", b, [])]
    info = {"source": "label-studio", "videos": ["gate.mp4"]}
    out = tmp_path / "holdout"
    written = write_holdout(out, items, info, names=NAMES)
    assert written == check_labels(out, NAMES)  # final paths, same boxes as a fresh check
    assert written.boxes == 1 and written.empty_images == 1
    assert (out / "images" / "f1.jpg").read_bytes() == a.read_bytes()
    assert (out / "labels" / "f1.txt").read_text() == GOOD and (out / "labels" / "f2.txt").read_text() == ""
    got = read_holdout_info(out)
    assert got is not None
    assert got["source"] == "label-studio" and got["videos"] == ["gate.mp4"] and got["names"] == list(NAMES)
    assert (got["images"], got["boxes"], got["empty_images"]) == (2, 1, 1)
    assert got["written_at"].endswith("+00:00")
    assert info == {"source": "label-studio", "videos": ["gate.mp4"]}  # the caller's dict is not changed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["holdout", "src"]


@pytest.mark.parametrize(
    ("items", "what"),
    [
        ([("n.jpg", "a.jpg", [Box(0, 0.95, 0.5, 0.2, 0.1)])], "labels/n.txt:1: box extends outside"),
        ([("n.jpg", "a.jpg", [Box(1, 0.5, 0.5, 0.2, 0.1)])], "labels/n.txt:1: class id 1 out of range"),
        ([("n.jpg", "a.jpg", [Box(0, 0.5, 0.5, 0.2, 0.1)] * 2)], "labels/n.txt:2: duplicate of line 1"),
        ([("n.jpg", "a.jpg", []), ("n.JPG", "a.jpg", [])], "n.JPG: same label file name as n.jpg"),
        ([("n.jpg", "a.jpg", []), ("n.png", "b.png", [])], "n.png: same label file name as n.jpg"),
        ([("n.txt", "a.jpg", [])], "n.txt: not an image name"),
        ([("n.png", "a.jpg", [])], "n.png: its source"),
        ([("../n.jpg", "a.jpg", [])], "not a plain file name"),
        ([("n.jpg", "missing.jpg", [])], "does not exist"),
        ([], "no images to write"),
    ],
    ids=["outside", "class", "duplicate", "case", "stem", "suffix", "suffix-mismatch", "path", "missing", "none"],
)
def test_write_holdout_is_atomic(tmp_path: Path, items: list[tuple[str, str, list[Box]]], what: str) -> None:
    src = tmp_path / "src"
    _sources(src, ["a.jpg", "b.png"])
    out = tmp_path / "holdout"
    write_holdout(out, [HoldoutItem("old.jpg", src / "a.jpg", [Box(0, 0.3, 0.3, 0.1, 0.1)])], {}, names=NAMES)
    before = _files(out)
    with pytest.raises(LabelError) as e:
        write_holdout(out, [HoldoutItem(n, src / s, b) for n, s, b in items], {"source": "x"}, names=NAMES)
    assert any(what in p for p in e.value.problems), e.value.problems
    assert _files(out) == before  # byte for byte, holdout.json included
    assert sorted(p.name for p in tmp_path.iterdir()) == ["holdout", "src"], "temp folder left behind"


def _export(root: Path, labels: dict[str, str | None], classes: str | None = None) -> Path:
    _holdout(root, labels)
    for image in (root / "images").iterdir():
        _image(image)
    if classes is not None:
        (root / "classes.txt").write_text(classes)
        (root / "notes.json").write_text(json.dumps({"categories": [{"id": 0, "name": "License_Plate"}]}))
    return root


def test_import_yolo_refuses_a_bad_export_without_touching_out_dir(tmp_path: Path) -> None:
    out = tmp_path / "holdout"
    write_holdout(out, [HoldoutItem("old.jpg", *_sources(tmp_path / "s", ["o.jpg"]), [])], {}, names=NAMES)
    before = _files(out)
    src = _export(tmp_path / "export", {"a": GOOD, "b": "0 0.5 0.5 0.2\n", "c": None, "d": "3 0.5 0.5 0.2 0.1\n"})
    with pytest.raises(LabelError) as e:
        import_yolo(src, out, NAMES, {})
    assert [p.split(":")[0] for p in e.value.problems] == ["labels/b.txt", "images/c.jpg", "labels/d.txt"]
    assert str(src) in str(e.value)
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "holdout", "s"]


def test_import_yolo_refuses_other_class_names(tmp_path: Path) -> None:
    src = _export(tmp_path / "export", {"a": GOOD}, classes="plate\n")
    with pytest.raises(LabelError, match=r"classes\.txt: classes \['plate'\] differ") as e:
        import_yolo(src, tmp_path / "holdout", NAMES, {})
    assert e.value.remedy is Remedy.HOLDOUT
    assert not (tmp_path / "holdout").exists()


def test_import_yolo_imports_a_good_export(tmp_path: Path) -> None:
    labels: dict[str, str | None] = {"a": "0 0.5 0.5 0.2 0.1\n0 0.2 0.2 0.1 0.1", "b": ""}
    src = _export(tmp_path / "export", labels, classes="License_Plate\n")
    out = tmp_path / "holdout"
    imported = import_yolo(src, out, NAMES, {"videos": ["gate.mp4"]})
    assert [i.image for i in imported.images] == [out / "images" / "a.jpg", out / "images" / "b.jpg"]
    assert imported.boxes == 2 and imported.empty_images == 1
    assert _files(out / "images") == _files(src / "images")
    assert check_labels(out, NAMES).boxes_by_image == check_labels(src, NAMES).boxes_by_image
    info = read_holdout_info(out)
    assert info is not None
    assert info["source"] == "yolo-import" and info["source_dir"] == str(src.resolve())
    assert info["videos"] == ["gate.mp4"] and info["images"] == 2 and info["boxes"] == 2
    assert not (out / "classes.txt").exists()


def test_compare_to_prelabels_counts_each_kind() -> None:
    pre = {
        "a.jpg": [Box(0, 0.2, 0.2, 0.1, 0.1), Box(0, 0.5, 0.5, 0.2, 0.2), Box(0, 0.8, 0.8, 0.1, 0.1)],
        "b.jpg": [Box(0, 0.5, 0.5, 0.2, 0.2)],
        "c.jpg": [],
        "not-reviewed.jpg": [Box(0, 0.5, 0.5, 0.2, 0.2)],
    }
    reviewed = {
        "a.jpg": [Box(0, 0.2, 0.2, 0.1, 0.1), Box(0, 0.52, 0.5, 0.2, 0.2), Box(0, 0.2, 0.8, 0.1, 0.1)],  # kept, moved
        "b.jpg": [Box(0, 0.5, 0.5, 0.2, 0.2)],  # kept
        "c.jpg": [],
    }
    assert _iou(Box(0, 0.52, 0.5, 0.2, 0.2), pre["a.jpg"][1]) == pytest.approx(0.18 / 0.22)  # in [0.5, 0.9): moved
    got = compare_to_prelabels(reviewed, pre)
    assert got == {
        "images": 3,
        "images_changed": 1,
        "kept": 2,
        "moved": 1,
        "added": 1,
        "removed": 1,
        "prelabel_precision": pytest.approx(3 / 4),
        "prelabel_recall": pytest.approx(3 / 4),
    }


def test_compare_to_prelabels_edge_cases() -> None:
    box = Box(0, 0.5, 0.5, 0.2, 0.2)
    empty = compare_to_prelabels({"a.jpg": []}, {"a.jpg": []})
    assert empty["prelabel_precision"] == 1.0 and empty["prelabel_recall"] == 1.0 and empty["images_changed"] == 0
    other_class = compare_to_prelabels({"a.jpg": [Box(1, 0.5, 0.5, 0.2, 0.2)]}, {"a.jpg": [box]})
    assert (other_class["added"], other_class["removed"], other_class["kept"]) == (1, 1, 0)
    one_to_one = compare_to_prelabels({"a.jpg": [box]}, {"a.jpg": [box, Box(0, 0.505, 0.5, 0.2, 0.2)]})
    assert (one_to_one["kept"], one_to_one["removed"], one_to_one["prelabel_precision"]) == (1, 1, 0.5)
    with pytest.raises(ValueError, match=r"no pre-labels: a\.jpg"):
        compare_to_prelabels({"a.jpg": [box]}, {"b.jpg": []})


def test_synthetic_demo_holdout_passes(tmp_path: Path) -> None:
    from tasks.demo.synth import SynthConfig
    from tasks.demo.synth import write_holdout as write_synthetic_holdout

    out = write_synthetic_holdout(tmp_path / "h", 4, seed=0, cfg=SynthConfig(width=320, height=180, fps=5))
    labels = check_labels(out, NAMES)
    assert len(labels.images) == 4 and labels.boxes == 4 and labels.empty_images == 0
