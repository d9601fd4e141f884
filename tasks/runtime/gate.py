"""Reference gate runtime: run the `current` release frame by frame and hot-swap when `current` changes.

A new release is loaded (and warmed up on a blank frame) in a background thread while the old one keeps running;
the swap happens between two frames, so no frame is dropped and the process never restarts. A release that fails to
load is logged and skipped: the gate keeps the release it has. So is a `current` that leads outside `releases/`
(`current_release` refuses it): the gate neither starts on it nor swaps to it.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tasks.edge.detect import Detector
from tasks.edge.tensorrt import ensure_runnable
from tasks.runtime.releases import GateFolderError, current_release, gate_paths, read_manifest, verify_release
from tasks.support.errors import AlprError, Remedy
from tasks.support.images import IMAGE_SUFFIXES, list_images

log = logging.getLogger(__name__)


class GateError(AlprError):
    """The gate cannot start: no release deployed, or the source cannot be read."""


def crop_text(crop: Sequence[int], frame_shape: Sequence[int]) -> str:
    """An engine's region of interest as an operator reads it: its crop in frame pixels and the frame size it
    applies to (`Candidate.crop`, `frame_shape`), or "full frame"."""
    if not crop:
        return "full frame"
    x1, y1, x2, y2 = crop
    size = f" of {frame_shape[1]}x{frame_shape[0]} frames" if len(frame_shape) == 2 else ""
    return f"crop x {x1}-{x2}, y {y1}-{y2} ({x2 - x1}x{y2 - y1} px){size}"


@dataclass(frozen=True)
class LoadedRelease:
    """A release loaded with its runtime and ready to run."""

    path: Path  # the resolved release folder
    version: str
    imgsz: int
    model: Detector  # the artifact on its runtime, with Ultralytics-equivalent pre/post-processing (no PyTorch)
    crop: tuple[int, ...] = ()  # its region of interest (candidate.json): frame pixels; () the full frame
    frame_shape: tuple[int, ...] = ()  # (height, width) of the frames the crop applies to

    @property
    def region(self) -> str:
        return crop_text(self.crop, self.frame_shape)


def load_release(release: Path) -> LoadedRelease:
    """Verify a release (sha256 against its manifest, path inside the folder, the backend's own format), load its
    artifact on its runtime (ONNX Runtime, OpenVINO or TensorRT, through `tasks.edge`: no PyTorch, as on the gate
    box) and run it once on a blank frame of the model's own input shape, so a release that cannot run, or is not
    what promotion verified, fails here (in the loader thread) rather than on a live frame."""
    cand = verify_release(release)  # against the manifest promotion wrote; a failure keeps the old release
    manifest = read_manifest(release)
    imgsz = int(cand.imgsz)
    ensure_runnable(cand.path)
    model = Detector.open(cand.path)
    if tuple(model.input_hw) != cand.input_shape:
        model.close()
        raise GateError(
            f"{cand.path}: its engine takes {list(model.input_hw)} (height, width), not the input_shape "
            f"{list(cand.input_shape)} its candidate.json records: not the artifact that was validated"
        )
    if (model.crop, model.frame_shape) != (cand.crop, cand.frame_shape):
        model.close()
        raise GateError(
            f"{cand.path}: its embedded crop {list(model.crop)} of {list(model.frame_shape)} frames is not the crop "
            f"{list(cand.crop)} of {list(cand.frame_shape)} its candidate.json records: not the artifact validated"
        )
    model(np.zeros((*model.frame_hw, 3), dtype=np.uint8))  # a frame of the camera's size (cropped as live ones are)
    return LoadedRelease(release, str(manifest["version"]), imgsz, model, cand.crop, cand.frame_shape)


def read_frames(source: Path) -> Iterator[np.ndarray]:
    """BGR frames of a video file (OpenCV's decoder) or of a folder's images, in name order."""
    import cv2

    if source.is_dir():
        images = list_images(source)
        if not images:
            raise GateError(
                f"{source}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}); pass a video or an image folder"
            )
        for image in images:
            frame = cv2.imread(str(image))
            if frame is None:
                raise GateError(f"{image}: cannot be read as an image")
            yield frame
        return
    cap = cv2.VideoCapture(str(source))
    if not cap.isOpened():
        raise GateError(f"{source}: cannot be opened as a video; pass a video file or an image folder")
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            yield frame
    finally:
        cap.release()


@dataclass(frozen=True)
class FrameResult:
    index: int
    version: str  # the release that processed this frame
    detections: int


@dataclass
class GateReport:
    frames: list[FrameResult] = field(default_factory=list)
    seconds: float = 0.0
    swaps: list[tuple[int, str, str]] = field(default_factory=list)  # (first frame on the new one, from, to)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (release folder, why it was not loaded)
    regions: dict[str, str] = field(default_factory=dict)  # release version -> its region of interest (`crop_text`)

    @property
    def fps(self) -> float:
        return len(self.frames) / self.seconds if self.seconds > 0 else 0.0

    @property
    def detections(self) -> int:
        return sum(f.detections for f in self.frames)


class GateRuntime:
    """Runs the `current` release of `gate_dir`; `poll()` between frames starts or finishes a background reload."""

    def __init__(self, gate_dir: Path, conf: float, iou: float) -> None:
        release = current_release(gate_dir)
        if release is None:
            raise GateError(f"{gate_paths(gate_dir).current}: no release deployed", remedy=Remedy.PROMOTE)
        self.gate_dir, self.conf, self.iou = gate_dir, conf, iou
        self.active = load_release(release)
        log.info("gate: running release v%s (%s), %s", self.active.version, release, self.active.region)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="gate-loader")
        self._pending: tuple[Path, concurrent.futures.Future[LoadedRelease]] | None = None
        self._failed: Path | None = None  # the last target that failed to load (not retried until `current` moves)
        self._refused: str | None = None  # why `current` was last refused (reported once, until it changes)
        self.report = GateReport(regions={self.active.version: self.active.region})

    def poll(self, next_index: int) -> None:
        """Between frames: swap in a finished load, or start loading `current` if it points somewhere new."""
        try:
            target = current_release(self.gate_dir)
        except GateFolderError as e:  # `current` leads outside releases/: keep running what was loaded from inside
            if str(e) != self._refused:
                log.warning("gate: %s; keeping v%s", e, self.active.version)
                self.report.failures.append((str(gate_paths(self.gate_dir).current), str(e)))
                self._refused = str(e)
            target = None  # a load in progress is still finished, but not swapped in: it is not `current` now
        else:
            self._refused = None
        if self._pending is not None and self._pending[1].done():
            path, future = self._pending
            self._pending = None
            try:
                new = future.result()
            except Exception as e:
                reason = f"{type(e).__name__}: {e}"
                log.warning(
                    "gate: release %s failed to load; keeping v%s. Reason: %s", path, self.active.version, reason
                )
                self.report.failures.append((str(path), reason))
                self._failed = path
            else:
                if new.path == target:
                    log.info("gate: switched v%s -> v%s before frame %d (%s)", self.active.version, new.version,
                             next_index, new.region)  # fmt: skip
                    self.report.swaps.append((next_index, self.active.version, new.version))
                    self.report.regions[new.version] = new.region
                    self.active, old = new, self.active
                    old.model.close()  # a TensorRT engine's GPU buffers, which Python's collector never sees
        if target is None or target == self.active.path:
            self._failed = None
            return
        loading = self._pending[0] if self._pending is not None else None
        if target != loading and target != self._failed:
            log.info("gate: current -> %s; loading it in the background", target)
            self._pending = (target, self._pool.submit(load_release, target))

    def wait_for_load(self, timeout: float | None = None) -> None:
        """Block until a background load (if any) has finished; it is swapped in at the next `poll()`."""
        if self._pending is not None:
            concurrent.futures.wait([self._pending[1]], timeout=timeout)

    def detect(self, frame: np.ndarray) -> int:
        return len(self.active.model(frame, self.conf, self.iou).conf)

    def run(
        self, frames: Iterator[np.ndarray], on_frame: Callable[[int, GateRuntime], None] | None = None
    ) -> GateReport:
        """Process every frame exactly once, in order, polling for a new release between frames."""
        started = time.perf_counter()
        for index, frame in enumerate(frames):
            self.poll(index)
            version = self.active.version
            self.report.frames.append(FrameResult(index, version, self.detect(frame)))
            if on_frame is not None:
                on_frame(index, self)
        self.report.seconds = time.perf_counter() - started
        return self.report

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def run_gate(
    gate_dir: Path,
    source: Path,
    conf: float,
    iou: float,
    on_frame: Callable[[int, GateRuntime], None] | None = None,
) -> GateReport:
    """Run the gate over `source` (a video or an image folder) and return what it did."""
    if not source.exists():
        raise GateError(f"{source}: not found; pass a video file or an image folder")
    frames = read_frames(source)
    runtime = GateRuntime(gate_dir, conf, iou)
    try:
        report = runtime.run(frames, on_frame)
    finally:
        runtime.close()
    log.info(
        "gate: %d frames in %.1f s (%.1f FPS), %d detections, %d swaps, %d failed loads",
        len(report.frames),
        report.seconds,
        report.fps,
        report.detections,
        len(report.swaps),
        len(report.failures),
    )
    return report
