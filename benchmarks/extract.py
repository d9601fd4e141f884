"""Frames kept per second: PyAV sampling (tasks/pipeline/decode.py) against the naive method, side by side in one run.

Naive: `cv2.VideoCapture.read()` every frame, keep every Nth (N = fps x interval). Both keep one frame per
`--interval` seconds as BGR arrays; neither writes JPEGs, so this measures the decoding strategy alone.
The clips are generated once with PyAV's encoders (the synthetic gate scene, so the pixels look like gate footage)
and cached under `--out`. Each method runs `--repeat` times, interleaved, and the fastest run counts, which keeps
load from other processes on a shared machine from favouring either side.

    python benchmarks/extract.py                      # 20 s, 1280x720, 30 fps clips
    python benchmarks/extract.py --seconds 60 --size 1920x1080
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import av
import cv2

from tasks.demo.synth import SynthConfig
from tasks.pipeline.decode import FrameSampler
from testkit.clips import encode_clip, scene_frames

# (label, codec, GOP in seconds or None for the encoder's default, suffix, encoder options, target ratio)
KINDS = [
    ("H.264 short-GOP (key every 1 s)", "libx264", 1.0, ".mp4", {"preset": "veryfast"}, 3.0),
    ("HEVC short-GOP (phone-like .MOV)", "libx265", 1.0, ".mov", {"preset": "ultrafast"}, 3.0),
    ("H.264 long-GOP (250 frames)", "libx264", None, ".mp4", {"preset": "veryfast", "g": "250"}, 1.5),
    ("HEVC long-GOP (250 frames)", "libx265", None, ".mp4", {"preset": "ultrafast"}, 1.5),
    ("MPEG-4 Part 2 (mp4v, no B-frames)", "mpeg4", None, ".mp4", {"b": "4M"}, 1.0),
]


def make_clip(out: Path, label: str, codec: str, gop_s: float | None, suffix: str, opts: dict, cfg, seconds) -> Path:
    slug = "".join(c if c.isalnum() else "_" for c in label.split(" (")[0]).lower()
    path = out / f"{slug}_{cfg.width}x{cfg.height}_{cfg.fps}fps_{seconds:g}s{suffix}"
    if not path.is_file():
        n = round(seconds * cfg.fps)
        gop = round(gop_s * cfg.fps) if gop_s else None
        encode_clip(path, scene_frames(0, n, cfg, seconds), cfg.fps, codec, gop, options=opts)
    return path


def naive(path: Path, interval: float) -> tuple[int, list[float]]:
    """Read every frame with OpenCV, keep every Nth."""
    cap = cv2.VideoCapture(str(path))
    every = max(1, round(cap.get(cv2.CAP_PROP_FPS) * interval))
    kept, times, i = [], [], 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if i % every == 0:
            kept.append(frame)
            times.append(cap.get(cv2.CAP_PROP_POS_MSEC) / 1000)
            kept.clear()  # keep, then let go: memory stays flat as in the real method
        i += 1
    cap.release()
    return len(times), times


def pyav(path: Path, interval: float) -> tuple[int, list[float], str, int]:
    sampler = FrameSampler(path, interval)
    times = [s.t for s in sampler]
    return len(times), times, sampler.stats.mode, sampler.stats.decoded


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(".cache/bench"))
    ap.add_argument("--no-parallel", action="store_true", help="Skip the workers=1 vs workers=2 comparison.")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    w, h = (int(v) for v in args.size.split("x"))
    cfg = SynthConfig(width=w, height=h, fps=args.fps)
    have = []
    for name in ("libx264", "libx265", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
            have.append(name)
        except av.codec.codec.UnknownCodecError:
            print(f"PyAV's FFmpeg has no {name} encoder: its clips are skipped")
    print(f"PyAV {av.__version__} (FFmpeg {av.ffmpeg_version_info}), OpenCV {cv2.__version__}; encoders: {have}")
    rows, clips = [], []
    for label, codec, gop_s, suffix, opts, target in KINDS:
        if codec not in have:
            continue
        path = make_clip(args.out, label, codec, gop_s, suffix, opts, cfg, args.seconds)
        clips.append(path)
        best_naive = best_ours = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            n_naive, t_naive = naive(path, args.interval)
            t1 = time.perf_counter()
            n_ours, t_ours, mode, decoded = pyav(path, args.interval)
            t2 = time.perf_counter()
            best_naive, best_ours = min(best_naive, t1 - t0), min(best_ours, t2 - t1)
        off = max((abs(a - b) for a, b in zip(t_naive, t_ours, strict=False)), default=0.0)
        ratio = (n_ours / best_ours) / (n_naive / best_naive)
        rows.append((label, mode, decoded, n_naive / best_naive, n_ours / best_ours, ratio, target, off, n_ours))
    print(f"\n{args.seconds:g} s clips, {w}x{h} @ {args.fps} fps, 1 frame kept per {args.interval:g} s, best of "
          f"{args.repeat} interleaved runs (shared machine: absolute numbers vary, ratios are same-run)")  # fmt: skip
    head = f"{'clip':36} {'mode':9} {'decoded':>7} {'naive kept/s':>12} {'pyav kept/s':>11} {'ratio':>6} "
    print(head + f"{'target':>6} {'met':>4} {'max |dt| vs naive':>17}")
    for label, mode, decoded, kn, ko, ratio, target, off, _n in rows:
        met = "yes" if ratio >= target else "NO"
        print(
            f"{label:36} {mode:9} {decoded:>7} {kn:>12.2f} {ko:>11.2f} {ratio:>5.2f}x {target:>5.1f}x {met:>4} "
            f"{off:>15.3f} s"
        )
    if not args.no_parallel:
        parallel([c for c in clips if "long_gop" in c.name], args.interval, args.repeat)


def parallel(clips: list[Path], interval: float, repeat: int) -> None:
    """The whole extraction (JPEGs, manifest, no cache) of the same videos with 1 and 2 worker processes."""
    import tempfile

    import tasks.pipeline.extract
    from tasks.pipeline.extract import extract_frames
    from tasks.support.config import ExtractConfig

    tasks.pipeline.extract.POOL_MIN_WORK = 0.0  # measure the pool itself, even on clips too short to pay for it

    best = {1: float("inf"), 2: float("inf")}
    with tempfile.TemporaryDirectory() as tmp:
        videos = Path(tmp) / "videos"
        videos.mkdir()
        for clip in clips:
            (videos / clip.name).symlink_to(clip.resolve())
        for _ in range(repeat):
            for workers in (1, 2):
                cfg = ExtractConfig(
                    interval_s=interval, max_frames_per_video=1000, workers=workers,
                    dedup_threshold=0, brightness_bins=1, holdout_fraction=0,  # decoding alone: keep every sample
                )  # fmt: skip
                t0 = time.perf_counter()
                extract_frames(videos, Path(tmp) / "out", Path(tmp) / "c.yaml", cfg, ("plate",))
                best[workers] = min(best[workers], time.perf_counter() - t0)
    print(
        f"\nwhole extraction of {len(clips)} videos: 1 worker {best[1]:.2f} s, 2 workers {best[2]:.2f} s "
        f"-> {best[1] / best[2]:.2f}x (2 cores shared with other jobs)"
    )


if __name__ == "__main__":
    main()
