"""Extraction on real encoded clips: decoding modes, time, rotation, bad input, cache, diversity, split, kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pandas as pd
import pytest

from tasks.demo.synth import SynthConfig
from tasks.pipeline.decode import FrameSampler
from tasks.pipeline.extract import ExtractError, extract_frames, split_of
from tasks.support.config import ExtractConfig
from tasks.support.hashing import sha256_file
from testkit.clips import encode_clip, scene_frames

NAMES = ("License_Plate",)
SMALL = SynthConfig(width=160, height=120, fps=10)


def clip(path: Path, seconds: float = 3, seed: int = 0, **kw: object) -> Path:
    n = max(1, round(seconds * SMALL.fps))
    return encode_clip(path, scene_frames(seed, n, SMALL), SMALL.fps, **kw)


def naive_times(path: Path, interval: float) -> list[float]:
    """What the naive method keeps: read every frame with OpenCV, keep the first at or after each target time."""
    cap = cv2.VideoCapture(str(path))
    fps, out, nxt = cap.get(cv2.CAP_PROP_FPS), [], 0.0
    while True:
        ok, _ = cap.read()
        if not ok:
            return out
        t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000
        if t + 0.5 / fps >= nxt:
            out.append(round(t, 3))
            while nxt <= t + 0.5 / fps:
                nxt += interval


# one feature at a time: params.yaml (the defaults) turns on dedup, brightness strata and the holdout together
PLAIN = {"dedup_threshold": 0.0, "brightness_bins": 1, "holdout_fraction": 0.0}


def run(videos: Path, tmp: Path, **cfg: object):
    cfg = {"workers": 1, **PLAIN, **cfg}
    return extract_frames(
        videos, tmp / "calib", tmp / "calibration.yaml", ExtractConfig(**cfg), NAMES, tmp / "holdout", tmp / "cache"
    )


def test_keyframes_only_where_they_fall_on_targets_else_exact_frames(tmp_path: Path) -> None:
    short = clip(tmp_path / "short.mp4", 4, gop=10)  # keyed every 1 s: keyframes are the targets
    long = clip(tmp_path / "long.mp4", 4, gop=100, bframes=2)  # one keyframe: skip non-reference frames
    s = FrameSampler(short, 1.0)
    got = [x.t for x in s]
    assert s.stats.mode == "keyframes" and s.stats.decoded == 4 and got == [0.0, 1.0, 2.0, 3.0]
    s = FrameSampler(long, 1.0)
    got = [round(x.t, 3) for x in s]
    assert s.stats.mode == "targeted" and got == naive_times(long, 1.0) == [0.0, 1.0, 2.0, 3.0]
    assert s.stats.decoded < s.stats.packets  # non-reference B-frames away from the targets were skipped
    # a keyframe grid that misses the targets (every 0.7 s) falls back to exact frames, never to late ones
    s = FrameSampler(clip(tmp_path / "odd.mp4", 4, gop=7), 1.0)
    assert [round(x.t, 3) for x in s] == [0.0, 1.0, 2.0, 3.0] and s.stats.mode == "targeted"


def test_rotated_hevc_mov_comes_out_upright(tmp_path: Path) -> None:
    # a portrait phone clip: landscape pixels + a display matrix (HEVC via libx265, which PyAV's FFmpeg bundles)
    img = np.zeros((120, 160, 3), np.uint8)
    img[:20] = (0, 0, 255)  # red band along the top edge of the stored pixels
    path = encode_clip(tmp_path / "IMG_0001.MOV", [img] * 12, 10, codec="libx265", rotation=90)
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.name == "hevc"
    result = run(tmp_path, tmp_path / "out", interval_s=0.5)
    table = pd.read_csv(result.manifest)
    assert set(table["width"]) == {120} and set(table["height"]) == {160}  # portrait
    frame = cv2.imread(str(result.out_dir / table["image"][0]))
    # 90 degrees counter-clockwise: the top band ends up on the left, as OpenCV's own auto-rotation shows it
    assert frame[:, :15, 2].mean() > 200 and frame[:, 30:, 2].mean() < 40
    ok, reference = cv2.VideoCapture(str(path)).read()
    assert ok and reference.shape == frame.shape
    assert np.abs(reference.astype(int) - frame.astype(int)).mean() < 8
    assert result.report["videos"]["IMG_0001.MOV"]["rotation"] == 90


def test_variable_frame_rate_is_sampled_by_real_time(tmp_path: Path) -> None:
    # 10 fps for 2 s, then 2 fps for 3 s: frame counting would sample the slow part 5x too sparsely
    times = [i / 10 for i in range(20)] + [2 + i / 2 for i in range(7)]
    frames = list(scene_frames(1, len(times), SMALL))
    path = encode_clip(tmp_path / "vfr.mp4", frames, 10, times=times, gop=100)
    got = [round(s.t, 3) for s in FrameSampler(path, 1.0)]
    assert got == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    rows = pd.read_csv(run(tmp_path, tmp_path / "out", interval_s=1.0).manifest)
    assert list(rows["timestamp_s"]) == got and list(rows["frame_index"]) == [0, 10, 20, 22, 24, 26]


def test_one_frame_clip(tmp_path: Path) -> None:
    clip(tmp_path / "one.mp4", seconds=0.1)
    result = run(tmp_path, tmp_path / "out", interval_s=1.0)
    assert result.per_video == {"one.mp4": 1}


def test_bad_files_are_reported_with_reasons_and_the_rest_proceeds(tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    good = clip(videos / "good.mp4", 2)
    (videos / "truncated.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # moov lost
    cut = clip(tmp_path / "cut.mkv", 3)  # Matroska cut mid-stream: the frames before the cut are still usable
    (videos / "cut.mkv").write_bytes(cut.read_bytes()[: cut.stat().st_size * 2 // 3])
    (videos / "empty.mp4").write_bytes(b"")
    (videos / "notes.mov").write_text("not a video at all")
    (videos / "readme.txt").write_text("hello")
    with av.open(str(videos / "voice.mp4"), "w") as out:  # audio only
        stream = out.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 8000), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 8000, 0
        for packet in [*stream.encode(frame), *stream.encode()]:
            out.mux(packet)
    with av.open(str(videos / "nodata.mkv"), "w") as out:  # a video stream whose packets are garbage
        stream = out.add_stream("h264", rate=10)
        stream.width, stream.height = 160, 120
        for i in range(5):
            packet = av.Packet(os.urandom(200))
            packet.stream, packet.pts, packet.dts, packet.time_base = stream, i, i, Fraction(1, 10)
            out.mux(packet)
    result = run(videos, tmp_path / "out", interval_s=1.0)
    assert set(result.per_video) == {"good.mp4", "cut.mkv"} and result.per_video["good.mp4"] == 2
    reasons = result.skipped
    assert set(reasons) == {"truncated.mp4", "empty.mp4", "notes.mov", "readme.txt", "voice.mp4", "nodata.mkv"}
    assert "empty file" in reasons["empty.mp4"] and "audio only" in reasons["voice.mp4"]
    assert "not a readable video container" in reasons["truncated.mp4"] and "not a video file" in reasons["readme.txt"]
    assert "no decodable video frame" in reasons["nodata.mkv"]
    report = json.loads((result.out_dir / "report.json").read_text())
    assert report["skipped"] == reasons and report["videos"]["empty.mp4"]["status"] == "failed"
    cut_report = report["videos"]["cut.mkv"]  # 3 targets promised by the header, the data ends before the last
    assert cut_report["kept"] == 2 and cut_report["dropped"]["unreadable"] == 1
    assert any("truncated or corrupt" in note for note in cut_report["notes"])

    for name in ("good.mp4", "cut.mkv"):
        (videos / name).unlink()
    with pytest.raises(ExtractError, match=r"no frames could be extracted.*empty\.mp4: empty file"):
        run(videos, tmp_path / "out", interval_s=1.0)


def test_incremental_add_remove_unchanged(tmp_path: Path) -> None:
    videos, out = tmp_path / "videos", tmp_path / "out"
    for i in range(2):
        clip(videos / f"v{i}.mp4", 2, seed=i)
    first = run(videos, out, interval_s=0.5)
    assert first.report["decoded_videos"] == 2 and first.frames == 8
    before = pd.read_csv(first.manifest)

    again = run(videos, out, interval_s=0.5)  # nothing changed: nothing decoded, same frames
    assert again.report["decoded_videos"] == 0 and again.report["decoded_frames"] == 0
    assert again.frames_hash == first.frames_hash

    clip(videos / "v2.mp4", 2, seed=2)  # one added: only it is decoded
    added = run(videos, out, interval_s=0.5)
    assert added.report["decoded_videos"] == 1 and added.report["videos"]["v2.mp4"]["decoded"]
    table = pd.read_csv(added.manifest)
    assert set(table["video"]) == {"v0.mp4", "v1.mp4", "v2.mp4"}
    old = table[table["video"] != "v2.mp4"].reset_index(drop=True)
    pd.testing.assert_frame_equal(old, before)

    (videos / "v0.mp4").unlink()  # one removed: only its frames go, nothing decoded
    removed = run(videos, out, interval_s=0.5)
    assert removed.report["decoded_videos"] == 0
    table = pd.read_csv(removed.manifest)
    assert set(table["video"]) == {"v1.mp4", "v2.mp4"}
    assert sorted(p.name for p in (out / "calib" / "images").iterdir()) == sorted(Path(i).name for i in table["image"])

    changed = run(videos, out, interval_s=1.0)  # other params: a different cache key, everything re-decoded
    assert changed.report["decoded_videos"] == 2


def test_near_duplicates_of_a_static_scene_are_dropped(tmp_path: Path) -> None:
    still = next(scene_frames(3, 1, SMALL))
    encode_clip(tmp_path / "static.mp4", [still] * 40, 10)  # 4 s of an empty lane
    clip(tmp_path / "moving.mp4", 4, seed=4)
    result = run(tmp_path, tmp_path / "out", interval_s=0.5, dedup_threshold=0.02)
    static = result.report["videos"]["static.mp4"]
    assert static["kept"] == 1 and static["dropped"]["duplicate"] == 7
    assert result.per_video["moving.mp4"] > 1


def test_cap_and_brightness_strata(tmp_path: Path) -> None:
    frames = [np.full((120, 160, 3), 20 + 200 * (i >= 60) + (i % 10), np.uint8) for i in range(80)]  # 6 s dark
    encode_clip(tmp_path / "dusk.mp4", frames, 10)
    result = run(tmp_path, tmp_path / "out", interval_s=1.0, max_frames_per_video=4, brightness_bins=2)
    table = pd.read_csv(result.manifest)
    assert len(table) == 4 and result.report["videos"]["dusk.mp4"]["dropped"]["cap"] == 4
    assert (table["brightness"] > 128).sum() == 2  # the 2 bright seconds get half the cap, not 2 of 8 frames


def test_split_by_video_is_deterministic(tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    # x264's output is not byte-identical from run to run, so the clips' hashes (and sides) vary: encode until the
    # hashes alone put videos on both sides, else extraction's never-empty rule would move one (tested below)
    sides: set[str] = set()
    for i in range(40):
        sha = sha256_file(clip(videos / f"v{i}.mp4", 1, seed=i))
        sides.add(split_of(sha, 0.5))
        if i >= 5 and len(sides) == 2:
            break
    assert len(sides) == 2, "40 clips all hashed to one side"
    result = run(videos, tmp_path / "out", interval_s=0.5, holdout_fraction=0.5)
    calib = pd.read_csv(result.manifest)
    hold = pd.read_csv(result.holdout_dir / "manifest.csv")
    assert len(hold) == result.holdout_frames and (result.holdout_dir / "images").is_dir()
    assert set(calib["video"]).isdisjoint(hold["video"]) and len(calib) and len(hold)
    assert set(calib["split"]) == {"calibration"} and set(hold["split"]) == {"holdout"}
    for table, side in ((calib, "calibration"), (hold, "holdout")):
        assert all(split_of(sha, 0.5) == side for sha in table["video_sha256"])
    assert all((result.holdout_dir / img).is_file() for img in hold["image"])
    again = run(videos, tmp_path / "out", interval_s=0.5, holdout_fraction=0.5)
    assert again.report["decoded_videos"] == 0 and again.frames_hash == result.frames_hash


def test_split_never_leaves_a_requested_side_empty(tmp_path: Path) -> None:
    for i in range(2):
        clip(tmp_path / f"v{i}.mp4", 1, seed=i)
    for fraction in (0.01, 0.99):  # by hash both videos would land on the same side
        result = run(tmp_path, tmp_path / f"out{fraction}", interval_s=0.5, holdout_fraction=fraction)
        splits = [v["split"] for v in result.report["videos"].values()]
        assert sorted(splits) == ["calibration", "holdout"], (fraction, splits)
        assert result.frames > 0 and result.holdout_frames > 0


KILLED = """
import sys
from pathlib import Path
from tasks.support.config import ExtractConfig
from tasks.pipeline.extract import extract_frames
root = Path(sys.argv[1])
cfg = ExtractConfig(workers=1, interval_s=0.1, dedup_threshold=0.0, brightness_bins=1, holdout_fraction=0.0)
extract_frames(root / "videos", root / "calib", root / "calibration.yaml", cfg, ("License_Plate",), root / "holdout",
               root / "cache")
"""


def test_kill_9_mid_extraction_then_rerun_completes(tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    for i in range(3):
        clip(videos / f"v{i}.mp4", 4, seed=i)
    clean = tmp_path / "clean"
    expected = run(videos, clean, interval_s=0.1)

    root = str(Path(__file__).resolve().parents[2])  # keeps the network guard's site folder (tests/conftest.py)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(tmp_path)], env=env)
    entries = tmp_path / "cache" / "entries"
    deadline = time.monotonic() + 120

    def cached() -> bool:  # a complete entry: renamed into place (pathlib's glob also matches the hidden temp ones)
        return entries.is_dir() and any(not p.parent.name.startswith(".") for p in entries.glob("*/entry.json"))

    while time.monotonic() < deadline and not cached():
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # after the first video is cached, during the second
    proc.wait()
    assert not (tmp_path / "calib").exists()  # nothing half-written is visible
    assert not (tmp_path / "holdout").exists()

    result = extract_frames(
        videos, tmp_path / "calib", tmp_path / "calibration.yaml", ExtractConfig(workers=1, interval_s=0.1, **PLAIN),
        NAMES, tmp_path / "holdout", tmp_path / "cache",
    )  # fmt: skip
    assert result.frames_hash == expected.frames_hash
    assert 1 <= result.report["cached_videos"] < 3  # the video finished before the kill was not decoded again
    leftovers = [p.name for p in [*tmp_path.iterdir(), *entries.iterdir()] if p.name.endswith("-tmp")]
    assert leftovers == []


def test_parallel_workers_give_the_same_frames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.pipeline.extract

    monkeypatch.setattr(tasks.pipeline.extract, "POOL_MIN_WORK", 0.0)  # use the process pool even for these tiny clips
    videos = tmp_path / "videos"
    for i in range(2):
        clip(videos / f"v{i}.mp4", 2, seed=i)
    serial = run(videos, tmp_path / "a", interval_s=0.5)
    parallel = run(videos, tmp_path / "b", interval_s=0.5, workers=2)
    assert parallel.frames_hash == serial.frames_hash and parallel.report["decoded_videos"] == 2
    assert serial.report["worker_processes"] == 1 and parallel.report["worker_processes"] == 2


def test_memory_stays_flat_whatever_the_length(tmp_path: Path) -> None:
    import tracemalloc

    from tasks.pipeline.extract_worker import FrameParams, Job, extract_one
    from tasks.support.cache import CacheStore

    params = FrameParams(0.1, 4, 90, 0.1, 0.0, 2)

    def peak(seconds: float, name: str) -> int:
        video = clip(tmp_path / name, seconds, gop=100)
        tracemalloc.start()
        entry = extract_one(Job(video, "0" * 64, CacheStore(tmp_path), f"entry-{name}", params), lambda *a: None)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert len(entry["rows"]) == 4 and entry["samples"] == round(seconds * 10)
        return top

    short, long = peak(4, "short.mp4"), peak(16, "long.mp4")  # 40 vs 160 samples, 4 kept from each
    assert long < 1.5 * short, (short, long)
