"""Validation reads the labelled holdout through the one label checker; with no box at all it fails, unless
validate.labels is optional (then: no labelled holdout, judged on agreement alone)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tasks.pipeline.labels import LabelError
from tasks.pipeline.validate import ValidationError, holdout_images
from tasks.support.errors import Remedy

NAMES = ["License_Plate"]


def holdout(root: Path, labels: dict[str, str]) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for stem, text in labels.items():
        cv2.imwrite(str(root / "images" / f"{stem}.jpg"), np.zeros((36, 64, 3), np.uint8))
        (root / "labels" / f"{stem}.txt").write_text(text)
    return root


def test_a_holdout_with_boxes_gives_its_images(tmp_path: Path) -> None:
    h = holdout(tmp_path / "h", {"a": "0 0.5 0.5 0.2 0.1\n", "b": ""})
    assert [p.name for p in holdout_images(h, NAMES)] == ["a.jpg", "b.jpg"]


def test_no_box_at_all_is_an_error_unless_labels_are_optional(tmp_path: Path) -> None:
    h = holdout(tmp_path / "h", {"a": "", "b": ""})
    with pytest.raises(ValidationError, match="not a single box") as e:
        holdout_images(h, NAMES)
    assert e.value.remedy is Remedy.HOLDOUT
    assert holdout_images(h, NAMES, "optional") == []


def test_no_holdout_is_an_error_unless_labels_are_optional(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="no holdout images"):
        holdout_images(tmp_path / "missing", NAMES)
    assert holdout_images(tmp_path / "missing", NAMES, "optional") == []


def test_a_broken_holdout_is_an_error_in_both_modes(tmp_path: Path) -> None:
    h = holdout(tmp_path / "h", {"a": "0 0.5 0.5 0.2 0.1\n", "b": "3 0.5 0.5 0.2 0.1\n"})
    (h / "labels" / "b.txt").write_text("0 0.5 0.5 0.2\n")
    for mode in ("required", "optional"):
        with pytest.raises(LabelError, match=r"labels/b.txt:1"):
            holdout_images(h, NAMES, mode)
