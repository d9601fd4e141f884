"""`alpr-ops doctor`: is this machine and project ready for a rebuild? One plain function per check, each returning
a typed `Check` (what was looked at, what was found, whether a rebuild can run with it); the CLI prints them.

A check `fail`s only when a rebuild could not run (or its records could not be written); `warn` is worth knowing
(another run holds the lock, no store yet: the first rebuild creates it); `skip` is not configured here.

Free disk a rebuild needs (`rebuild_disk_need`), an estimate from the videos and the settings, never from a
rebuild's own outputs (an unchanged rebuild needs far less; a first one needs all of it):

    frames   = sum over videos of min(extract.max_frames_per_video, ceil(duration / extract.interval_s))
               * width * height * JPEG_BYTES_PER_PIXEL * FRAME_COPIES
    exports  = (len(build.candidates) + 1) * model file size * EXPORT_BLOWUP * EXPORT_COPIES
    need     = (frames + exports + CALIBRATION_TEMP) * MARGIN

The `+ 1` is the FP32 model the build derives at its INT8 candidates' geometry (one region of interest per rebuild).

JPEG_BYTES_PER_PIXEL = 0.25 (a camera frame at the extractor's JPEG quality), FRAME_COPIES = 2 (the frame cache and
the DVC outputs' copy), EXPORT_BLOWUP = 2 (an FP32 ONNX of the detector is about twice its `.pt`), EXPORT_COPIES = 3
(models/candidates, the build cache, MLflow's artifact store), CALIBRATION_TEMP = 500 MB (the INT8 calibration's
temporary files) and MARGIN = 1.2. A video whose container gives no duration or size counts as its file size in
frames (an upper bound for compressed footage).
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from tasks.support.config import Params, TrackingConfig
from tasks.support.errors import AlprError, Remedy

log = logging.getLogger(__name__)

Status = Literal["ok", "warn", "fail", "skip"]

JPEG_BYTES_PER_PIXEL = 0.25
FRAME_COPIES = 2
EXPORT_BLOWUP = 2
EXPORT_COPIES = 3
CALIBRATION_TEMP = 500 * 10**6
MARGIN = 1.2
PROBE_TIMEOUT_S = 5.0
PYTHON_FLOOR = (3, 11)


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report: `remedy` (a workflow fact the CLI words) or `hint` (plain advice) says what
    to do when it is not ok."""

    name: str
    status: Status
    detail: str
    remedy: Remedy | None = None
    hint: str = ""

    @property
    def blocks(self) -> bool:
        return self.status == "fail"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "remedy": None if self.remedy is None else str(self.remedy)}


class DiskShort(AlprError):
    """Less free disk than a rebuild of this project needs (`rebuild_disk_need`)."""


def _ok(name: str, detail: str) -> Check:
    return Check(name, "ok", detail)


# --- the machine ----------------------------------------------------------------------------------------------------


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins(lock_file: Path) -> dict[str, str]:
    """`name==version` lines of a pip lock file, by canonical name."""
    pins = {}
    for line in lock_file.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;#]+)", line.strip())
        if m:
            pins[_canonical(m.group(1))] = m.group(2)
    return pins


def direct_dependencies(distribution: str = "alpr-ops") -> list[str]:
    """The project's direct dependencies (its installed metadata, extras left out), by canonical name."""
    from packaging.requirements import Requirement

    names = []
    for spec in metadata.requires(distribution) or []:
        req = Requirement(spec)
        if req.marker is None or "extra" not in str(req.marker):
            names.append(_canonical(req.name))
    return names


def check_python(floor: tuple[int, int] = PYTHON_FLOOR) -> Check:
    found = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] < floor:
        return Check("python", "fail", f"Python {found}; this project needs {floor[0]}.{floor[1]} or newer",
                     hint="Create the venv with a newer Python (`make setup`).")  # fmt: skip
    return _ok("python", f"Python {found} ({sys.executable})")


def check_packages(lock_file: Path, distribution: str = "alpr-ops") -> Check:
    """The installed version of every direct dependency against its pin in `requirements.lock`."""
    if not lock_file.is_file():
        return Check("packages", "skip", f"{lock_file}: no lock file to compare with")
    try:
        deps = direct_dependencies(distribution)
    except metadata.PackageNotFoundError:
        return Check("packages", "fail", f"{distribution} is not installed in {sys.prefix}",
                     hint="Install it: `make setup`.")  # fmt: skip
    pins = lock_pins(lock_file)
    wrong = []
    for name in deps:
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            wrong.append(f"{name} missing (pinned {pins.get(name, '?')})")
            continue
        if name in pins and have != pins[name]:
            wrong.append(f"{name} {have} (pinned {pins[name]})")
    if wrong:
        return Check("packages", "fail", f"not as {lock_file.name} pins: {'; '.join(wrong)}",
                     hint="Reinstall the pinned versions: `make setup`.")  # fmt: skip
    return _ok("packages", f"{len(deps)} direct dependencies as {lock_file.name} pins")


def check_tensorrt(params: Params) -> Check:
    """TensorRT and a GPU, only where a candidate is built or run on this machine (`build.tensorrt_on: host`)."""
    build = params.build
    needs = build.tensorrt_on == "host" and any(build.backend_of(c) == "tensorrt" for c in build.candidates)
    if not needs:
        return Check("tensorrt", "skip", "no candidate builds a TensorRT engine on this machine")
    try:
        import tensorrt  # noqa: F401

        from tasks.edge.tensorrt import device_info

        device = device_info()
    except Exception as e:  # not installed, no driver, no GPU: each says so in its message
        return Check("tensorrt", "fail", f"build.backend tensorrt with tensorrt_on: host, but {type(e).__name__}: {e}",
                     hint="Install TensorRT on a GPU host (`pip install .[tensorrt]` and the tensorrt wheel), or set "
                     "build.tensorrt_on: gate in params.yaml.")  # fmt: skip
    return _ok("tensorrt", ", ".join(f"{k} {v}" for k, v in device.items()))


# --- the project ----------------------------------------------------------------------------------------------------


def check_model(path: Path, sha256: str) -> Check:
    """The base detector is there and is the pinned one (`model.sha256`)."""
    from tasks.support.hashing import sha256_file

    if not path.is_file():
        return Check("model", "fail", f"{path}: no model file", remedy=Remedy.FETCH_MODEL)
    found = sha256_file(path)
    if found != sha256:
        return Check("model", "fail", f"{path}: sha256 {found[:12]}... is not the pinned {sha256[:12]}...",
                     remedy=Remedy.FETCH_MODEL)  # fmt: skip
    return _ok("model", f"{path} (sha256 {sha256[:12]}... as pinned)")


def check_videos(videos_dir: Path) -> Check:
    from tasks.support.videos import VIDEO_SUFFIXES

    videos = [p for p in videos_dir.glob("*") if p.suffix.lower() in VIDEO_SUFFIXES] if videos_dir.is_dir() else []
    if not videos:
        return Check("videos", "fail", f"{videos_dir}: no gate videos", remedy=Remedy.SAMPLE_VIDEOS)
    size = sum(p.stat().st_size for p in videos if p.exists())
    return _ok("videos", f"{len(videos)} videos in {videos_dir} ({size / 1e6:.0f} MB)")


def check_store(tracking: TrackingConfig) -> Check:
    """The tracking store and the model registry answer (the client's bounded wait); a sqlite store not made yet is
    a warning: the first rebuild creates it."""
    from tasks.support.tracking import client, sqlite_path

    path = sqlite_path(tracking.uri)
    if path is not None and not path.is_file():
        return Check("tracking store", "warn", f"{tracking.shown_uri}: no store yet (the first rebuild creates it)",
                     remedy=Remedy.REBUILD)  # fmt: skip
    try:
        mc = client(tracking)
        mc.search_experiments(max_results=1)
        mc.search_registered_models(max_results=1)
    except Exception as e:  # StoreUnavailable names the store and its wait; anything else is a store error too
        return Check("tracking store", "fail", f"{type(e).__name__}: {e}",
                     hint="Start the store's server, or fix tracking.uri in params.yaml.")  # fmt: skip
    return _ok("tracking store", f"{tracking.shown_uri}: tracking and registry answer")


def _get(url: str, headers: dict[str, str] | None = None) -> int:
    import httpx

    return httpx.get(url, headers=headers or {}, timeout=PROBE_TIMEOUT_S, follow_redirects=True).status_code


def check_prefect(env: dict[str, str]) -> Check:
    """The Prefect API of server mode, when `PREFECT_API_URL` is set (else each command starts its own)."""
    url = env.get("PREFECT_API_URL")
    if not url:
        return Check("prefect", "skip", "PREFECT_API_URL not set: each run starts a temporary local server")
    try:
        code = _get(f"{url.rstrip('/')}/health")
    except Exception as e:
        return Check("prefect", "fail", f"PREFECT_API_URL {url} did not answer: {type(e).__name__}: {e}",
                     hint="Start it (`prefect server start --host 127.0.0.1`) or unset PREFECT_API_URL.")  # fmt: skip
    if code != 200:
        return Check("prefect", "fail", f"PREFECT_API_URL {url}: /health answered HTTP {code}",
                     hint="Point PREFECT_API_URL at a Prefect server's /api.")  # fmt: skip
    return _ok("prefect", f"PREFECT_API_URL {url} answers")


def check_label_studio(env: dict[str, str]) -> Check:
    """Label Studio, when `LABEL_STUDIO_URL` is set: it answers and the token is accepted."""
    from tasks.operations.label_studio import KEY_ENV, URL_ENV

    url = env.get(URL_ENV)
    if not url:
        return Check("label studio", "skip", f"{URL_ENV} not set (labelling by files works without it)")
    token = env.get(KEY_ENV)
    if not token:
        return Check("label studio", "fail", f"{URL_ENV} is set but {KEY_ENV} is not",
                     hint=f"Set {KEY_ENV} to your Label Studio access token (Account & Settings).")  # fmt: skip
    try:
        code = _get(f"{url.rstrip('/')}/api/projects?page_size=1", {"Authorization": f"Token {token}"})
    except Exception as e:
        return Check("label studio", "fail", f"{URL_ENV} {url} did not answer: {type(e).__name__}",
                     hint="Start Label Studio or fix LABEL_STUDIO_URL.")  # fmt: skip
    if code in (401, 403):
        return Check("label studio", "fail", f"{url} refused {KEY_ENV} (HTTP {code})",
                     hint=f"Set {KEY_ENV} to a valid access token.")  # fmt: skip
    if code >= 400:
        return Check("label studio", "fail", f"{url}: HTTP {code}", hint="Check LABEL_STUDIO_URL.")
    return _ok("label studio", f"{url} answers and accepts the token")


def check_dvc_remote(root: Path) -> Check:
    """The DVC remote, when one is configured: a local one must exist; another is named (not probed: its credentials
    are DVC's)."""
    if not (root / ".dvc").is_dir():
        return Check("dvc remote", "skip", f"{root} is not a DVC project")
    try:
        from dvc.repo import Repo

        with Repo(str(root)) as repo:
            config = repo.config
            name = config["core"].get("remote")
            if not name:
                return Check("dvc remote", "skip", "no default DVC remote configured")
            url = str(config["remote"][name]["url"])
    except Exception as e:
        return Check("dvc remote", "fail", f"DVC configuration unreadable: {type(e).__name__}: {e}",
                     hint="Fix .dvc/config (`dvc remote list`).")  # fmt: skip
    if "://" not in url:
        local = Path(url) if Path(url).is_absolute() else (root / ".dvc" / url).resolve()
        if not local.is_dir():
            return Check("dvc remote", "fail", f"remote {name}: {local} does not exist",
                         hint="Create it or point the remote elsewhere (`dvc remote modify`).")  # fmt: skip
        return _ok("dvc remote", f"remote {name}: {local}")
    return Check("dvc remote", "ok", f"remote {name}: {url} (configured; reached by `dvc push`/`pull`)")


def check_lock(lock_file: Path) -> Check:
    """Who holds the project lock: a rebuild started now queues behind it (not an error)."""
    from tasks.support.locks import describe_holder, holder_info, is_locked

    if not is_locked(lock_file):
        return _ok("project lock", "free")
    return Check("project lock", "warn", f"held by {describe_holder(holder_info(lock_file))}: a rebuild queues",
                 remedy=Remedy.WAIT)  # fmt: skip


# --- disk -----------------------------------------------------------------------------------------------------------


def _video_frame_bytes(video: Path, max_frames: int, interval_s: float) -> int:
    """Bytes of the frames kept from `video` (formula: module docstring); its file size when the container says
    too little."""
    try:
        import av

        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            duration = float(container.duration / 1e6) if container.duration else 0.0
            width, height = stream.codec_context.width, stream.codec_context.height
    except Exception:  # unreadable here: extraction will say why; count its size
        return video.stat().st_size
    if not (duration and width and height):
        return video.stat().st_size
    frames = min(max_frames, math.ceil(duration / interval_s))
    return int(frames * width * height * JPEG_BYTES_PER_PIXEL * FRAME_COPIES)


def rebuild_disk_need(params: Params) -> int:
    """Bytes a rebuild of this project may write (the formula of the module docstring)."""
    from tasks.support.videos import VIDEO_SUFFIXES

    p, x = params.paths, params.extract
    videos = [v for v in p.videos.glob("*") if v.suffix.lower() in VIDEO_SUFFIXES] if p.videos.is_dir() else []
    frames = sum(_video_frame_bytes(v, x.max_frames_per_video, x.interval_s) for v in videos)
    model = p.model.stat().st_size if p.model.is_file() else 0
    derived = any(c.precision == "int8" for c in params.build.candidates)  # FP32 at the INT8 geometry (build_plan)
    exports = (len(params.build.candidates) + derived) * model * EXPORT_BLOWUP * EXPORT_COPIES
    return int((frames + exports + CALIBRATION_TEMP) * MARGIN)


def _existing_parent(path: Path) -> Path:
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return path


def check_disk(params: Params, root: Path) -> Check:
    """Free space where the project writes, against `rebuild_disk_need`."""
    need = rebuild_disk_need(params)
    free = shutil.disk_usage(_existing_parent(root)).free
    detail = f"{free / 1e9:.1f} GB free at {root}, a rebuild needs about {need / 1e9:.1f} GB"
    if free < need:
        return Check("disk", "fail", detail,
                     hint=f"Free {(need - free) / 1e9:.1f} GB (`alpr-ops gc` prunes the caches).")  # fmt: skip
    return _ok("disk", detail)


def require_disk(params: Params, root: Path) -> None:
    """Before a rebuild starts: stop with the numbers when the disk is short."""
    check = check_disk(params, root)
    if check.blocks:
        raise DiskShort(f"not enough free disk for a rebuild: {check.detail}. {check.hint}")
    log.info("disk: %s", check.detail)


def check_caches(params: Params) -> Check:
    """How much the caches hold (information: `alpr-ops gc` prunes them)."""
    from tasks.support.cache import tree_bytes

    p = params.paths
    areas = {
        "frames": p.frame_cache,
        "build": p.build_cache,
        "validation": p.validation_cache,
        "prefect": p.prefect_home,
    }
    sizes = {name: tree_bytes(path) if path.exists() else 0 for name, path in areas.items()}
    return _ok("caches", ", ".join(f"{name} {size / 1e6:.0f} MB" for name, size in sizes.items()))


# --- all of them ----------------------------------------------------------------------------------------------------


def run_checks(params: Params | None, root: Path, requirements: Path, env: dict[str, str] | None = None) -> list[Check]:
    """Every check, in the order a reader fixes them. `params` None: params.yaml did not parse (the caller adds
    that line), so only the machine is checked."""
    env = dict(os.environ) if env is None else env
    checks: list[Callable[[], Check]] = [check_python, lambda: check_packages(requirements)]
    if params is not None:
        p = params.paths
        checks += [
            lambda: check_model(p.model, params.model.sha256),
            lambda: check_videos(p.videos),
            lambda: check_store(params.tracking),
            lambda: check_prefect(env),
            lambda: check_dvc_remote(root),
            lambda: check_label_studio(env),
            lambda: check_tensorrt(params),
            lambda: check_lock(p.rebuild_lock),
            lambda: check_disk(params, root),
            lambda: check_caches(params),
        ]
    out = []
    for check in checks:
        try:
            out.append(check())
        except Exception as e:  # a check that breaks is reported, never hides the others
            log.debug("check failed", exc_info=True)
            out.append(Check(getattr(check, "__name__", "check"), "fail", f"{type(e).__name__}: {e}"))
    return out
