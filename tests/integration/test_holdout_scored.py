"""Defect 6 of issue 15 on a copy of the demo holdout: validation reads it through the one label checker, and the
images and boxes Ultralytics scored must be all the holdout holds (it drops an unreadable image and scores the
rest, which would give a metric over part of the holdout)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tasks.pipeline.labels import LabelError
from tasks.pipeline.validate import ValidationError, accuracy, holdout_images, mirror_holdout

pytestmark = pytest.mark.integration


@pytest.fixture
def demo_holdout(tmp_path: Path, sample_data: Path) -> Path:
    """A copy of the session's generated (demo) holdout."""
    return Path(shutil.copytree(sample_data / "holdout", tmp_path / "holdout"))


def _first_label(h: Path) -> Path:
    return next(p for p in sorted((h / "labels").iterdir()) if p.read_text().strip())


@pytest.mark.parametrize(
    ("break_it", "says"),
    [
        (lambda h: _first_label(h).unlink(), r"no label file labels/.*\.txt; an empty file means no plate"),
        (lambda h: _first_label(h).write_text("0 0.5 0.5 0.2\n"), r"labels/.*\.txt:1: expected 5 numbers"),
        (lambda h: _first_label(h).write_text("1 0.5 0.5 0.2 0.1\n"), r"labels/.*\.txt:1: class id 1 out of range"),
        (lambda h: _first_label(h).write_text("0 0.95 0.5 0.2 0.1\n"), r"labels/.*\.txt:1: box extends outside"),
    ],
    ids=["missing-label-file", "malformed-line", "class-out-of-range", "box-outside"],
)
def test_a_broken_demo_holdout_names_file_and_line(demo_holdout: Path, built: tuple, break_it, says: str) -> None:
    params, _ = built
    break_it(demo_holdout)
    for mode in ("required", "optional"):
        with pytest.raises(LabelError, match=says):
            holdout_images(demo_holdout, params.model.names, mode)


def test_a_demo_holdout_without_boxes_is_an_error_unless_labels_are_optional(demo_holdout: Path, built: tuple) -> None:
    params, _ = built
    for label in (demo_holdout / "labels").iterdir():
        label.write_text("")
    with pytest.raises(ValidationError, match="not a single box"):
        holdout_images(demo_holdout, params.model.names)
    assert holdout_images(demo_holdout, params.model.names, "optional") == []  # mAP gates skipped (NO_HOLDOUT)


def test_every_image_and_box_of_the_holdout_is_scored(demo_holdout: Path, built: tuple, tmp_path: Path) -> None:
    params, candidates = built
    fp32 = next(c for c in candidates if c.name == params.build.reference)
    names = dict(enumerate(params.model.names))
    images = holdout_images(demo_holdout, params.model.names)
    whole = mirror_holdout(demo_holdout, images, tmp_path / "whole", names)
    assert accuracy(fp32, whole, params.validate_, tmp_path / "runs")["map50"] > 0
    # an image file the label checker passes (it does not decode images) but Ultralytics drops as corrupt
    with_labels = next(i for i in images if (demo_holdout / "labels" / f"{i.stem}.txt").read_text().strip())
    with_labels.write_bytes(b"not a jpeg")
    images = holdout_images(demo_holdout, params.model.names)
    part = mirror_holdout(demo_holdout, images, tmp_path / "part", names)
    with pytest.raises(ValidationError, match=rf"scored {len(images) - 1} of {len(images)} images"):
        accuracy(fp32, part, params.validate_, tmp_path / "runs")
