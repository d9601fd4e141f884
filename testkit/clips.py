"""Short gate clips encoded like a phone or camera export would be: for the extraction tests and
`benchmarks/extract.py` (the library's demo data is `tasks.demo.synth`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from tasks.demo.synth import SynthConfig, make_video_scene, render_scene_frame

log = logging.getLogger(__name__)


def encode_clip(
    path: Path,
    frames: Iterable[np.ndarray],
    fps: int,
    codec: str = "libx264",
    gop: int | None = None,
    times: Sequence[float] | None = None,
    rotation: int = 0,
    bframes: int | None = None,
    options: dict[str, str] | None = None,
) -> Path:
    """Encode BGR frames with PyAV into `path` (container from the suffix), like a phone or camera export would.

    `gop`: keyframe interval in frames (None: the encoder's default); `times`: presentation times in seconds for a
    variable-frame-rate clip (default: frame i at i/fps); `rotation`: display-matrix rotation in degrees
    counter-clockwise, as a portrait phone clip carries it; `options`: more encoder options (e.g. a preset).
    Written under a temp name and renamed when complete.
    """
    import av  # only the clip generators need PyAV's encoders

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp_{path.stem}_{os.getpid()}{path.suffix}")
    tb = Fraction(1, 1000) if times is not None else Fraction(1, fps)
    n = 0
    try:
        with av.open(str(tmp), "w") as out:
            stream = out.add_stream(codec, rate=fps)
            stream.pix_fmt = "yuv420p"
            opts: dict[str, str] = {}
            if codec == "libx265":
                params = ["log-level=error"] + ([f"keyint={gop}", f"min-keyint={gop}"] if gop else [])
                params += [f"bframes={bframes}"] if bframes is not None else []
                opts["x265-params"] = ":".join(params)
            elif gop:
                opts["g"] = str(gop)
                if codec == "libx264":
                    opts["keyint_min"] = str(gop)
                    opts["sc_threshold"] = "0"  # keyframes exactly every `gop` frames, as a camera sets them
            if bframes is not None and codec != "libx265":
                opts["bf"] = str(bframes)
            stream.options = {**opts, **(options or {})}
            stream.codec_context.time_base = tb
            if rotation:
                stream.set_display_rotation(rotation)
            for i, image in enumerate(frames):
                if n == 0:
                    stream.height, stream.width = image.shape[:2]
                frame = av.VideoFrame.from_ndarray(image, format="bgr24")
                frame.pts = round(times[i] * 1000) if times is not None else i
                frame.time_base = tb
                for packet in stream.encode(frame):
                    out.mux(packet)
                n += 1
            for packet in stream.encode():
                out.mux(packet)
        if n == 0:
            raise ValueError(f"{path}: no frames to encode")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("wrote %s (%d frames, %s, gop %s, rotation %d)", path, n, codec, gop or "default", rotation)
    return path


def scene_frames(
    seed: int, n_frames: int, cfg: SynthConfig | None = None, seconds: float | None = None
) -> Iterator[np.ndarray]:
    """The first `n_frames` rendered frames (BGR) of video scene `seed`, generated lazily (flat memory)."""
    cfg = cfg or SynthConfig()
    scene = make_video_scene(seed, 0, seconds or max(1.0, n_frames / cfg.fps), cfg)
    for j in range(n_frames):
        yield render_scene_frame(scene, j)[0]
