"""Decode only the frames a time-based sample needs, with PyAV (FFmpeg), one frame per `interval_s` of real time.

Why not read every frame: the naive loop decodes and converts every frame to keep one in thirty; the decoder is the
bottleneck, so the only real gain is not decoding frames nobody needs. Two ways, chosen from the stream itself:

- keyframes only: while a keyframe falls within `tolerance_s` after every target time, only keyframe packets reach
  the decoder (`skip_frame="NONKEY"`); that keyframe is kept, with its exact timestamp. Phone and IP-camera footage
  is often keyed every 1-2 s, which makes this an order of magnitude faster than decoding everything.
- targeted: as soon as a target passes without such a keyframe, the packets of that group of pictures (buffered,
  compressed, one GOP at most) are replayed and the rest of the video is decoded with non-reference frames skipped
  (`skip_frame="NONREF"`) except at and just after each target time, so the kept frame is the exact one the naive
  method would keep (the first frame at or after the target, within half a frame).

Timestamps are presentation timestamps (variable frame rate is sampled by real time, not by frame count), the display
matrix is applied so portrait phone clips come out upright, and memory stays flat: frames are yielded one at a time
and at most one GOP of compressed packets is held.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

log = logging.getLogger(__name__)

ProgressFn = Callable[[float], None]


class VideoError(ValueError):
    """The file cannot give a single frame; the message says why (empty, not a video, audio only, truncated)."""


@dataclass(frozen=True)
class Sample:
    """One kept frame: upright BGR pixels, presentation time (s, from the stream start) and presentation index."""

    image: np.ndarray
    t: float
    index: int


@dataclass
class DecodeStats:
    """What decoding one video cost and how it went (the report's counters)."""

    mode: str = "keyframes"  # "keyframes" for the whole video, or "targeted" once keyframes were too sparse
    packets: int = 0  # demuxed video packets
    decoded: int = 0  # frames that came out of the decoder
    unreadable: int = 0  # packets the decoder rejected (corrupt data); their frames are lost
    missed: int = 0  # target times after the point where the data ended early (truncated or corrupt file)
    duration_s: float = 0.0
    rotation: int = 0  # degrees counter-clockwise applied to make frames upright
    error: str | None = None  # why demuxing stopped early (truncated file), if it did
    notes: list[str] = field(default_factory=list)


def open_video(path: Path) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    """Open `path` and its first video stream, or raise VideoError naming why the file is unusable."""
    if path.stat().st_size == 0:
        raise VideoError("empty file (0 bytes)")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError) as e:
        raise VideoError(f"not a readable video container ({type(e).__name__}: {e})") from e
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        container.close()
        raise VideoError("audio only: no video stream" if "audio" in kinds else f"no video stream (streams: {kinds})")
    return container, container.streams.video[0]


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a display-matrix rotation (degrees counter-clockwise, as FFmpeg reports it) to a decoded image."""
    k = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(image, k)) if k else image


class FrameSampler:
    """Iterate the samples of one video; `stats` is filled in as it goes (complete once iteration ends)."""

    def __init__(
        self, path: Path, interval_s: float, tolerance_s: float = 0.1, progress: ProgressFn | None = None
    ) -> None:
        if not interval_s > 0 or tolerance_s < 0:
            raise ValueError(f"need interval_s > 0 and tolerance_s >= 0, got {interval_s}, {tolerance_s}")
        self.path, self.interval, self.tolerance, self.progress = path, interval_s, tolerance_s, progress
        self.stats = DecodeStats()

    def __iter__(self) -> Iterator[Sample]:
        container, stream = open_video(self.path)
        try:
            yield from self._run(container, stream)
        finally:
            container.close()
        if self.stats.decoded == 0:
            raise VideoError(
                "no decodable video frame" + (f" (stopped at: {self.stats.error})" if self.stats.error else "")
            )

    def _run(self, container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> Iterator[Sample]:
        st, tb = self.stats, float(stream.time_base)
        ctx = stream.codec_context
        ctx.thread_type = "AUTO"
        rate = float(stream.average_rate or stream.guessed_rate or 0) or None
        half = 0.5 / rate if rate else 1e-6
        start = stream.start_time if stream.start_time is not None else None
        if stream.duration:
            st.duration_s = stream.duration * tb
        elif container.duration:
            st.duration_s = container.duration / 1e6
        state = {"next": 0.0, "count": 0, "pending": [], "last": -1.0}
        # the target the next keyframe will be judged against, decided as packets arrive: the decoder's output lags
        # its input by a few frames (threads, reordering), so `state["next"]` is not yet updated at that point
        key_next = 0.0
        last_t: float | None = None  # latest packet time seen
        gop: list[av.Packet] = []  # packets since the last keyframe, replayed if a window is missed
        ctx.skip_frame = "NONKEY"

        def rel(pts: int | None) -> float | None:
            return None if pts is None else (pts - (start or 0)) * tb

        def emit(frames: list[av.VideoFrame]) -> Iterator[Sample]:
            for frame in frames:
                st.decoded += 1
                t = rel(frame.pts)
                if t is None:
                    t = (st.decoded - 1) / rate if rate else float(st.decoded - 1)
                # presentation index: demuxed packets whose pts is before this frame's (exact for closed GOPs)
                pending = state["pending"]
                while pending and pending[0] < (frame.pts if frame.pts is not None else -1):
                    heapq.heappop(pending)
                    state["count"] += 1
                index = state["count"]
                if t + half < state["next"] or t <= state["last"]:
                    continue
                state["last"] = t
                while state["next"] <= t + half:
                    state["next"] += self.interval
                st.rotation = int(frame.rotation or 0)
                yield Sample(upright(frame.to_ndarray(format="bgr24"), st.rotation), round(t, 6), index)

        def decode(packet: av.Packet | None) -> list[av.VideoFrame]:
            try:
                return list(ctx.decode(packet))
            except av.error.FFmpegError as e:  # corrupt packet: lose its frame, keep going
                st.unreadable += 1
                log.debug("%s: undecodable packet (%s)", self.path.name, e)
                return []

        def target_mode(pkt_t: float | None) -> None:
            """Full decoding from the current target on, non-reference frames skipped before it."""
            near = pkt_t is None or pkt_t + half >= state["next"]
            ctx.skip_frame = "DEFAULT" if near else "NONREF"

        def replay() -> Iterator[Sample]:
            """Switch to targeted mode: drain and reset the decoder, then decode the buffered GOP."""
            yield from emit(decode(None))
            ctx.flush_buffers()
            st.mode = "targeted"
            for old in gop:
                target_mode(rel(old.pts))
                yield from emit(decode(old))
            gop.clear()

        demux = container.demux(stream)
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                break
            except av.error.FFmpegError as e:  # truncated or corrupt container: keep what was decoded so far
                st.error = f"{type(e).__name__}: {e}"
                log.warning("%s: demuxing stopped early: %s", self.path.name, e)
                break
            if packet.size == 0:
                continue
            st.packets += 1
            if packet.pts is not None:
                last_t = max(last_t or 0.0, rel(packet.pts) or 0.0)
                heapq.heappush(state["pending"], packet.pts)
            pkt_t = rel(packet.pts)
            if self.progress is not None and st.packets % 32 == 0 and pkt_t is not None:
                self.progress(pkt_t)
            if st.mode == "keyframes":
                # keyframe mode keeps a keyframe within `tolerance` after each target. Once a packet passes that
                # point without one, keyframes do not fall on the targets: drain and reset the decoder, replay the
                # buffered GOP in targeted mode and stay targeted. The buffer holds about one interval at most.
                late = pkt_t is not None and pkt_t > key_next + self.tolerance
                if late and gop:
                    st.notes.append(f"no keyframe within {self.tolerance:g} s of t={key_next:g} s")
                    yield from replay()
                elif packet.is_keyframe:
                    gop = [packet]
                    if pkt_t is None or pkt_t + half >= key_next:  # else: before the target, not needed
                        while pkt_t is not None and key_next <= pkt_t + half:
                            key_next += self.interval
                        yield from emit(decode(packet))
                    continue
                else:
                    gop.append(packet)
                    continue
            target_mode(pkt_t)
            yield from emit(decode(packet))
        # the stream ended before the next keyframe: a target may still lie among the buffered packets
        tail = [t for p in gop[1:] if (t := rel(p.pts)) is not None]
        if st.mode == "keyframes" and tail and max(tail) + half >= key_next:
            st.notes.append(f"no keyframe after t={rel(gop[0].pts) or 0:.2f} s: decoded the end of the stream")
            yield from replay()
        ctx.skip_frame = "DEFAULT"
        yield from emit(decode(None))
        end = st.duration_s - (1 / rate if rate else 0.0)  # time of the last frame the header promises
        if last_t is not None and end - last_t > 2 * half + 0.05:
            t = state["next"]
            while t <= end + half:
                st.missed += 1
                t += self.interval
            st.notes.append(f"data ended at {last_t:.2f} s of {st.duration_s:.2f} s (truncated or corrupt)")
        if self.progress is not None:
            self.progress(st.duration_s)
