"""Label Studio box conversion, token kind and config parsing, without a server (tests/integration has one)."""

from __future__ import annotations

import base64
import json
import pickle
from pathlib import Path

import pytest

from tasks.operations.label_studio import (
    LabelStudio,
    LabelStudioError,
    interface,
    label_config,
    read_prelabels,
    region_to_yolo,
    task_file_name,
    yolo_to_region,
)
from tasks.pipeline.labels import Box


def test_yolo_region_round_trip() -> None:
    box = Box(0, 0.5, 0.6, 0.3, 0.1, conf=0.9)
    region = yolo_to_region(box, "License_Plate", (320, 240), ("label", "image"))
    v = region["value"]
    assert (v["x"], v["y"], v["width"], v["height"]) == pytest.approx((35, 55, 30, 10))
    assert (region["original_width"], region["original_height"], region["score"]) == (320, 240, 0.9)
    assert region_to_yolo(v, (320, 240)) == pytest.approx((box.cx, box.cy, box.w, box.h))
    assert "score" not in yolo_to_region(Box(0, 0.5, 0.6, 0.3, 0.1), "License_Plate", (320, 240), ("label", "image"))


def test_rotated_and_overhanging_boxes() -> None:
    # 90 degrees clockwise about the top-left corner (10, 10) px of a 20x10 px box on a 100x100 image
    rotated = {"x": 10, "y": 10, "width": 20, "height": 10, "rotation": 90}
    assert region_to_yolo(rotated, (100, 100)) == pytest.approx((0.05, 0.2, 0.1, 0.2))
    # drawn past the right edge: clipped to the image
    assert region_to_yolo({"x": 90, "y": 0, "width": 20, "height": 10}, (100, 100)) == pytest.approx(
        (0.95, 0.05, 0.1, 0.1)
    )


def test_config_names_and_file_names() -> None:
    assert interface(label_config(["License_Plate", "A&B"])) == ("label", "image", ["License_Plate", "A&B"])
    with pytest.raises(LabelStudioError, match="RectangleLabels"):
        interface("<View><Image name='image' value='$image'/></View>")
    assert task_file_name({"data": {"image": "/data/upload/3/0a1b2c3d-frame_0001.jpg"}}) == "frame_0001.jpg"


def test_prelabel_file(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("0 0.5 0.5 0.2 0.1 0.8\n\n0 0.1 0.1 0.1 0.1\n")
    boxes = read_prelabels(tmp_path / "a.txt", ["License_Plate"])
    assert boxes == [Box(0, 0.5, 0.5, 0.2, 0.1, 0.8), Box(0, 0.1, 0.1, 0.1, 0.1)]
    assert [b.conf for b in boxes] == [0.8, None]
    assert read_prelabels(tmp_path / "missing.txt", ["License_Plate"]) == []
    (tmp_path / "b.txt").write_text("0 0.5 0.5\n")
    with pytest.raises(LabelStudioError, match=r"b.txt:1"):
        read_prelabels(tmp_path / "b.txt", ["License_Plate"])
    # the holdout's own rules, every problem with its line: a class the config lacks, a box outside the image
    (tmp_path / "c.txt").write_text("1 0.5 0.5 0.2 0.1 0.9\n0 0.95 0.5 0.2 0.1 0.5\n")
    with pytest.raises(LabelStudioError) as e:
        read_prelabels(tmp_path / "c.txt", ["License_Plate"])
    assert [p.split(": ", 1)[0] for p in e.value.facts["problems"]] == [f"{tmp_path / 'c.txt'}:{n}" for n in (1, 2)]
    assert "class id 1 out of range; allowed: 0..0 (0=License_Plate)" in str(e.value)
    assert "outside the image" in str(e.value)


def test_token_kind_and_error_state() -> None:
    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    jwt = f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part({'token_type': 'refresh'})}.c2ln"
    with LabelStudio("http://127.0.0.1:9", jwt) as pat, LabelStudio("http://127.0.0.1:9", "0123456789abcdef") as old:
        assert (pat.token_type, old.token_type) == ("personal access token", "legacy API token")
    err = pickle.loads(pickle.dumps(LabelStudioError("down", transient=True, url="http://x")))
    assert err.transient and err.facts == {"transient": True, "url": "http://x"}
    assert LabelStudioError("bad").transient is False
