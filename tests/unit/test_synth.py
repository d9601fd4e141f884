"""Unit tests for the synthetic gate-footage generator (tiny frames so the file runs in seconds)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tasks.demo import synth
from tasks.demo.synth import SynthConfig, render_holdout_frame, render_scene_frame, write_holdout, write_videos
from tasks.pipeline.labels import EPS, Box
from tasks.support.fsutil import MARKER_TEXT, OUTPUT_MARKER, NotOurFolder

TINY = SynthConfig(width=320, height=180, fps=10)


def _read_labels(folder: Path) -> dict[str, list[list[str]]]:
    return {p.stem: [line.split() for line in p.read_text().splitlines()] for p in sorted(folder.glob("labels/*.txt"))}


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_holdout_is_deterministic_by_seed(tmp_path: Path) -> None:
    a = _files(write_holdout(tmp_path / "a", 4, seed=3, cfg=TINY))
    b = _files(write_holdout(tmp_path / "b", 4, seed=3, cfg=TINY))
    c = _files(write_holdout(tmp_path / "c", 4, seed=4, cfg=TINY))
    assert len(a) == 9 and sorted(a) == sorted(b)  # 4 images, 4 label files, holdout.json
    assert a == b  # identical label text and identical JPEG bytes
    labels = lambda files: [v for k, v in files.items() if k.startswith("labels")]  # noqa: E731
    assert labels(a) != labels(c)
    assert [v for k, v in a.items() if k.endswith(".jpg")] != [v for k, v in c.items() if k.endswith(".jpg")]


def test_holdout_layout_and_label_format(tmp_path: Path) -> None:
    out = write_holdout(tmp_path / "h", 6, seed=0, cfg=TINY)
    images = sorted(p.stem for p in (out / "images").glob("*.jpg"))
    labels = _read_labels(out)
    assert len(images) == 6 and images == sorted(labels)
    img = cv2.imread(str(next((out / "images").glob("*.jpg"))))
    assert img.shape == (TINY.height, TINY.width, 3)
    for rows in labels.values():
        assert len(rows) == 1  # every holdout frame shows exactly one plate
        for row in rows:
            assert len(row) == 5 and row[0] == "0"
            cx, cy, w, h = map(float, row[1:])
            assert all(0 < v <= 1 for v in (cx, cy, w, h))
            assert cx - w / 2 >= -1e-6 and cx + w / 2 <= 1 + 1e-6
            assert cy - h / 2 >= -1e-6 and cy + h / 2 <= 1 + 1e-6


def test_both_plate_aspect_ratios_appear() -> None:
    """Single-line (4.7:1) and two-line (2:1) plates both occur; label ratios follow the calibrated margins."""
    expected = {
        k: (w * synth.LABEL_MARGIN[k][0]) / (h * synth.LABEL_MARGIN[k][1]) for k, (w, h) in synth.PLATE_M.items()
    }
    seen = {k: 0 for k in expected}
    for i in range(30):
        _, boxes = render_holdout_frame(11, i, TINY)
        box, *_ = boxes
        ratio = (box.w * TINY.width) / (box.h * TINY.height)  # in pixels
        kind = min(expected, key=lambda k: abs(np.log(ratio / expected[k])))
        assert abs(np.log(ratio / expected[kind])) < np.log(1.4), (ratio, expected)  # rotation widens the box
        seen[kind] += 1
    assert all(n >= 2 for n in seen.values()), seen


def test_videos_are_readable_with_expected_shape(tmp_path: Path) -> None:
    paths = write_videos(tmp_path, 2, 1.0, seed=1, cfg=TINY)
    assert paths == sorted(paths) and [p.name for p in paths] == ["gate_0001_00.mp4", "gate_0001_01.mp4"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gate_0001_00.mp4", "gate_0001_01.mp4"]  # no temp files
    for p in paths:
        cap = cv2.VideoCapture(str(p))
        assert cap.isOpened()
        assert int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 320 and int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == 180
        assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(10, abs=0.01)
        frames = []
        while (ok_frame := cap.read())[0]:
            frames.append(ok_frame[1])
        cap.release()
        assert len(frames) == 10 and frames[0].shape == (180, 320, 3)
        assert np.std(frames[-1]) > 5  # not a blank frame
    again = write_videos(tmp_path / "again", 1, 1.0, seed=1, cfg=TINY)[0]
    cap_a, cap_b = cv2.VideoCapture(str(paths[0])), cv2.VideoCapture(str(again))
    for _ in range(10):  # same seed -> same decoded frame content
        assert np.array_equal(cap_a.read()[1], cap_b.read()[1])


def test_video_frames_are_deterministic_and_labelled() -> None:
    a = synth.make_video_scene(2, 0, 3.0, TINY)
    b = synth.make_video_scene(2, 0, 3.0, TINY)
    c = synth.make_video_scene(3, 0, 3.0, TINY)
    n_labelled = 0
    for j in range(0, 30, 5):
        fa, ba = render_scene_frame(a, j)
        fb, bb = render_scene_frame(b, j)
        assert np.array_equal(fa, fb) and ba == bb
        assert not np.array_equal(fa, render_scene_frame(c, j)[0])
        for box in ba:
            x1, y1, x2, y2 = box.xyxy  # normalised: inside the frame by the label checker's own tolerance
            assert box.cls == 0 and -EPS <= x1 < x2 <= 1 + EPS and -EPS <= y1 < y2 <= 1 + EPS
        n_labelled += len(ba)
    assert n_labelled > 0


def test_holdout_is_replaced_only_when_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "holdout"
    out.mkdir()
    (out / OUTPUT_MARKER).write_text(MARKER_TEXT)  # a folder this project made (any other is never replaced)
    (out / "old_marker.txt").write_text("old")
    real = synth.render_holdout_frame

    def failing(seed: int, i: int, cfg: SynthConfig = TINY) -> tuple[np.ndarray, list[Box]]:
        if i == 2:
            raise RuntimeError("killed mid-way")
        return real(seed, i, cfg)

    monkeypatch.setattr(synth, "render_holdout_frame", failing)
    with pytest.raises(RuntimeError):
        write_holdout(out, 4, seed=0, cfg=TINY)
    assert (out / "old_marker.txt").exists() and not (out / "images").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["holdout"]  # temp sibling cleaned up
    monkeypatch.setattr(synth, "render_holdout_frame", real)
    write_holdout(out, 3, seed=0, cfg=TINY)
    assert not (out / "old_marker.txt").exists() and len(list((out / "images").glob("*.jpg"))) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["holdout"]


def test_a_holdout_setting_pointed_at_a_folder_of_files_refuses_and_wipes_nothing(tmp_path: Path) -> None:
    """Issue item 2: `paths.holdout` set to an existing folder lost its files to `sample-videos`. Only a holdout
    this project wrote (holdout.json beside images/ and labels/) or an empty folder is replaced."""
    out = tmp_path / "holdout"
    (out / "images").mkdir(parents=True)
    (out / "important.txt").write_text("keep me")
    with pytest.raises(NotOurFolder, match=r"holdout \(paths\.holdout\) holds files.*important\.txt"):
        write_holdout(out, 2, seed=0, cfg=TINY)
    assert sorted(p.name for p in out.iterdir()) == ["images", "important.txt"] and not any((out / "images").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["holdout"]
    (out / "important.txt").unlink()
    (out / "images").rmdir()
    first = _files(write_holdout(out, 2, seed=0, cfg=TINY))  # empty: written
    assert _files(write_holdout(out, 2, seed=1, cfg=TINY)) != first  # a holdout of ours: replaced


def test_killed_video_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = synth.render_scene_frame

    def failing(scene: synth.Scene, idx: int) -> tuple[np.ndarray, list[Box]]:
        if idx == 5:
            raise KeyboardInterrupt
        return real(scene, idx)

    monkeypatch.setattr(synth, "render_scene_frame", failing)
    with pytest.raises(KeyboardInterrupt):
        write_videos(tmp_path, 1, 1.0, seed=0, cfg=TINY)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "call",
    [
        lambda p: write_videos(p, 0, 1.0, 0, TINY),
        lambda p: write_videos(p, 1, 0.0, 0, TINY),
        lambda p: write_videos(p, 1, -2.0, 0, TINY),
        lambda p: write_videos(p, 1, 1.0, -1, TINY),
        lambda p: write_holdout(p / "h", 0, 0, TINY),
        lambda p: write_holdout(p / "h", 2, -5, TINY),
        lambda p: SynthConfig(width=100, height=50),
        lambda p: SynthConfig(width=321, height=180),
        lambda p: SynthConfig(fps=0),
    ],
)
def test_bad_arguments_raise_value_error(tmp_path: Path, call: object) -> None:
    with pytest.raises(ValueError):
        call(tmp_path)  # type: ignore[operator]
    assert list(tmp_path.iterdir()) == []  # nothing written before validation
