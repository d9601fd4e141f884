"""`label import` takes only what an export really holds: regular files inside it, images that decode, label files
within MAX_LABEL_BYTES. Every refusal names the file and leaves the holdout byte for byte as it was."""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tasks.demo.synth import SynthConfig
from tasks.demo.synth import write_holdout as write_synthetic_holdout
from tasks.pipeline.labels import MAX_LABEL_BYTES, LabelError, check_labels, import_yolo, read_label_file
from tasks.support.images import MIN_IMAGE_SIDE

NAMES = ("License_Plate",)
GOOD = "0 0.500000 0.500000 0.200000 0.100000\n"


def _image(path: Path, shape: tuple[int, int] = (36, 64)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((*shape, 3), 90, np.uint8))
    return path


def _export(root: Path, stems: list[str]) -> Path:
    """A good export: a real JPEG and a one-box label per stem."""
    for stem in stems:
        _image(root / "images" / f"{stem}.jpg")
        (root / "labels").mkdir(parents=True, exist_ok=True)
        (root / "labels" / f"{stem}.txt").write_text(GOOD)
    return root


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def holdout(tmp_path: Path) -> Path:
    """The project's labelled holdout before the import: real synthetic frames."""
    return write_synthetic_holdout(tmp_path / "holdout", 2, seed=0, cfg=SynthConfig(width=320, height=180, fps=5))


def _refused(src: Path, holdout: Path) -> list[str]:
    """Import `src` over `holdout`: it must fail and leave `holdout` (and its folder) exactly as it was."""
    before, siblings = _files(holdout), sorted(holdout.parent.iterdir())
    with pytest.raises(LabelError) as e:
        import_yolo(src, holdout, NAMES, {"videos": ["gate.mp4"]})
    assert _files(holdout) == before, "the holdout changed"
    assert sorted(holdout.parent.iterdir()) == siblings, "a temp folder was left beside the holdout"
    assert str(src) in str(e.value)
    return list(e.value.problems)


def test_files_leading_out_of_the_export_are_refused_by_name(tmp_path: Path, holdout: Path) -> None:
    outside = tmp_path / "elsewhere"
    secret_image, secret_label = _image(outside / "secret.jpg"), outside / "secret.txt"
    secret_label.write_text(GOOD)  # a valid label: only where it is makes it wrong
    src = _export(tmp_path / "export", ["a", "b", "c", "d"])
    (src / "images" / "a.jpg").unlink()
    (src / "images" / "a.jpg").symlink_to(secret_image)
    (src / "labels" / "b.txt").unlink()
    (src / "labels" / "b.txt").symlink_to(secret_label)
    (src / "images" / "c.jpg").unlink()
    (src / "images" / "c.jpg").symlink_to(src / "images" / "gone.jpg")
    problems = _refused(src, holdout)
    assert problems == [
        f"images/a.jpg: leads to {secret_image.resolve()}, outside {src}: only files inside the folder are imported "
        "(copy the file in)",
        f"labels/b.txt: leads to {secret_label.resolve()}, outside {src}: only files inside the folder are imported "
        "(copy the file in)",
        f"images/c.jpg: a broken symlink (to {src / 'images' / 'gone.jpg'}): the file it names does not exist",
    ]
    # a symlink to a regular file inside the export is a file of the export: taken
    for name in ("a.jpg", "c.jpg"):
        (src / "images" / name).unlink()
        (src / "images" / name).symlink_to(_image(src / "originals" / name))
    (src / "labels" / "b.txt").unlink()
    (src / "labels" / "b.txt").write_text(GOOD)
    assert import_yolo(src, holdout, NAMES, {}).boxes == 4
    assert not any(p.is_symlink() for p in holdout.rglob("*"))


def test_a_symlinked_images_folder_leading_out_of_the_export_is_refused(tmp_path: Path, holdout: Path) -> None:
    elsewhere = _export(tmp_path / "elsewhere", ["a"])
    src = tmp_path / "export"
    src.mkdir()
    (src / "images").symlink_to(elsewhere / "images")
    (src / "labels").symlink_to(elsewhere / "labels")
    problems = _refused(src, holdout)
    assert [p.split(":")[0] for p in problems] == ["images/a.jpg", "labels/a.txt"]
    assert all("outside" in p for p in problems), problems


def _truncated_jpeg(path: Path) -> None:
    whole = _image(path.with_name("whole.jpg")).read_bytes()
    path.with_name("whole.jpg").unlink()
    path.write_bytes(whole[: len(whole) // 2])


@pytest.mark.parametrize(
    ("name", "make", "what"),
    [
        ("a.jpg", lambda p: p.write_bytes(b""), "an empty file (0 bytes), not an image"),
        (
            "a.png",
            lambda p: p.write_text("just some text\n"),
            "not a JPEG, PNG or BMP image (it starts with b'just som')",
        ),
        ("a.jpg", _truncated_jpeg, "a truncated JPEG (it does not end with the end-of-image marker)"),
        ("a.png", lambda p: p.write_bytes(_image(p).read_bytes()[:60]), "a broken PNG image"),
        ("a.png", lambda p: _image(p, (MIN_IMAGE_SIDE - 1, 64)), f"64x{MIN_IMAGE_SIDE - 1} pixels: an image needs at"),
        ("a.jpg", lambda p: p.mkdir(), "not a regular file (a folder)"),
        ("a.jpg", lambda p: os.mkfifo(p), "not a regular file (a FIFO)"),
    ],
    ids=["0-bytes", "text-named-png", "truncated-jpeg", "broken-png", "too-small", "folder", "fifo"],
)
def test_every_image_is_decoded_before_the_holdout_is_touched(
    tmp_path: Path, holdout: Path, name: str, make, what: str
) -> None:
    src = _export(tmp_path / "export", ["b", "c"])
    (src / "labels" / "a.txt").write_text(GOOD)
    make(src / "images" / name)
    problems = _refused(src, holdout)
    assert len(problems) == 1 and problems[0].startswith(f"images/{name}: {what}"), problems


def test_every_bad_image_and_label_is_listed_at_once(tmp_path: Path, holdout: Path) -> None:
    src = _export(tmp_path / "export", ["a", "b", "c"])
    (src / "images" / "a.jpg").write_bytes(b"")
    (src / "labels" / "b.txt").write_text("0 0.5 0.5 0.2\n")
    (src / "images" / "c.jpg").write_text("text")
    problems = _refused(src, holdout)
    assert [p.split(":")[0] for p in problems] == ["images/a.jpg", "labels/b.txt", "images/c.jpg"]


@pytest.mark.timeout(60)
def test_label_files_that_are_devices_or_too_large_are_refused_without_reading_them(
    tmp_path: Path, holdout: Path
) -> None:
    src = _export(tmp_path / "export", ["a", "b", "c", "d"])
    (src / "labels" / "a.txt").unlink()
    (src / "labels" / "a.txt").symlink_to("/dev/zero")  # read whole: memory exhausted
    with (src / "labels" / "b.txt").open("r+b") as f:
        f.truncate(8 * 2**30)  # 8 GiB (sparse): read whole, minutes and memory
    (src / "labels" / "c.txt").write_text("\n" * (MAX_LABEL_BYTES + 1))
    (src / "labels" / "d.txt").write_text(GOOD + "\n" * (MAX_LABEL_BYTES - len(GOOD)))  # at the bound: read
    started = time.perf_counter()
    problems = _refused(src, holdout)
    assert time.perf_counter() - started < 10, "the refused label files were read"
    bound = f"more than the {MAX_LABEL_BYTES:,} bytes such a file may hold (MAX_LABEL_BYTES"
    assert problems == [
        f"labels/a.txt: leads to /dev/zero, outside {src}: only files inside the folder are imported "
        "(copy the file in)",
        f"labels/b.txt: {8 * 2**30:,} bytes, {bound}, tasks/pipeline/labels.py)",
        f"labels/c.txt: {MAX_LABEL_BYTES + 1:,} bytes, {bound}, tasks/pipeline/labels.py)",
    ]


@pytest.mark.timeout(60)
def test_the_holdout_checker_reads_no_device_fifo_or_huge_label_either(tmp_path: Path) -> None:
    """The bound holds for every label read (the holdout's own, pre-labels), not only an export's."""
    root = _export(tmp_path / "h", ["a", "b", "c"])
    (root / "labels" / "a.txt").unlink()
    (root / "labels" / "a.txt").symlink_to("/dev/zero")
    (root / "labels" / "b.txt").unlink()
    os.mkfifo(root / "labels" / "b.txt")  # opened for reading without a writer: a wait without end
    with (root / "labels" / "c.txt").open("r+b") as f:
        f.truncate(8 * 2**30)
    with pytest.raises(LabelError) as e:
        check_labels(root, NAMES)
    assert [p.split(": ", 1)[1][:25] for p in e.value.problems] == [
        "not a regular file (a dev",
        "not a regular file (a FIF",
        f"{8 * 2**30:,} bytes, more than"[:25],
    ]
    boxes, problems = read_label_file(root / "labels" / "a.txt", 1, scores=True)
    assert boxes == [] and problems == [f"{root / 'labels' / 'a.txt'}: not a regular file (a device)"]


def test_a_classes_file_that_is_no_regular_file_is_refused(tmp_path: Path, holdout: Path) -> None:
    src = _export(tmp_path / "export", ["a"])
    (src / "classes.txt").symlink_to("/dev/zero")
    assert _refused(src, holdout) == [
        f"{src / 'classes.txt'}: leads to /dev/zero, outside {src}: only files inside the folder are imported "
        "(copy the file in)"
    ]
    (src / "classes.txt").unlink()
    (src / "classes.txt").symlink_to(src / "gone.txt")  # not "no classes.txt": named
    assert "classes.txt: a broken symlink" in _refused(src, holdout)[0]
