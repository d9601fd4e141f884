"""Build candidate artifacts (FP32 reference, FP16, INT8): Ultralytics' exporters (the peers) and our own INT8
builds (tasks/pipeline/quantize.py: NNCF with accuracy recovery, Q/DQ ONNX for ONNX Runtime and TensorRT).

Each candidate gets its own folder: an Ultralytics INT8 ONNX export deletes the FP32 `.onnx` it started from, and
every export writes next to its `.pt`, so candidates built side by side in one folder would overwrite each other.
Artifacts are content-addressed (tasks/support/cache.py): an unchanged candidate is reused, not rebuilt.

`paths.candidates` and each candidate's folder in it are replaced or written into only when they are this
project's (`tasks.support.fsutil.check_output_folder`), all checked before the first export: the candidates folder
is marked `.alpr-ops-output` (one an older version wrote is adopted when it holds nothing but candidate folders),
and a candidate's folder is ours when it holds `candidate.json` (the record only a build writes; a folder copied
whole into MLflow, releases and the build cache carries no marker) or nothing.

Order: the FP32/FP16 candidates first, then the camera's region of interest (tasks/pipeline/roi.py: learned from the
FP32 reference's plates, written as `roi.json` beside the candidates), then every INT8 candidate at that one geometry
(input shape and crop): Ultralytics' exports calibrate on a temporary cropped copy of the calibration frames, ours
crop in their data loaders; the crop is in each one's cache key, `candidate.json` and embedded metadata.
"""

from __future__ import annotations

import importlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.edge.metadata import embed_metadata
from tasks.edge.tensorrt import ENGINE_FILES, TENSORRT_MIN_MAJOR, engine_record, major_version
from tasks.pipeline.roi import ROI_CACHE, region_of_interest
from tasks.support.cache import CacheStore, copy_tree
from tasks.support.candidate import BUILT_ON_GATE, CANDIDATE_JSON, Candidate, openvino_xml, read_candidate
from tasks.support.config import EXPORT_FORMAT, BuildConfig, CandidateConfig, ValidateConfig
from tasks.support.errors import AlprError, Remedy
from tasks.support.fingerprint import ARTIFACT_TOOLCHAIN, installed_versions
from tasks.support.fsutil import OutputFolder, atomic_dir, atomic_write_text, check_output_folder, claim_output_folder
from tasks.support.hashing import content_key, files_sha256, path_sha256, path_size_mb
from tasks.support.images import frames_folder, list_images
from tasks.support.progress import steps
from tasks.support.roi import ROI_JSON, RoiRecord, write_roi
from tasks.support.shape import (
    FrameSizeUnknown,
    Geometry,
    Shape,
    footage_frame_size,
    geometry_of,
    geometry_reference_name,
    input_shape,
    shape_text,
    square,
)

log = logging.getLogger(__name__)

_QUANTIZE = {"fp32": None, "fp16": 16, "int8": 8}


class BuildInputMissing(AlprError):
    """What a build starts from (the calibration frames' dataset YAML) does not exist."""

    remedy = Remedy.EXTRACT


class BackendUnavailable(AlprError):
    """The requested backend cannot build or run on this machine; the message says where it can."""


LAST = "last"  # `<build cache>/last/<candidate>.json`: each candidate's latest build (never pruned)
CANDIDATE_OUTPUT = OutputFolder("paths.candidates", CANDIDATE_JSON, names=None, marked=False)  # one candidate's folder
CANDIDATES_OUTPUT = OutputFolder("paths.candidates", members=CANDIDATE_OUTPUT)  # the folder of candidate folders


def build_store(cache_dir: Path) -> CacheStore:
    """The build cache: one built candidate folder (artifact and `candidate.json`) per `cache_key`."""
    return CacheStore(
        cache_dir, reserved=frozenset({LAST, ROI_CACHE})
    )  # roi/: the ROI's plates (tasks/pipeline/roi.py)


def cache_key(
    base_model_sha256: str, frames_hash: str, candidate: dict[str, Any], imgsz: int, toolchain: dict[str, str]
) -> str:
    """The content key of every input that shapes a candidate's artifact: the base model, the calibration frames,
    the candidate's own params, the image size and the toolchain (OpenVINO/NNCF, ONNX Runtime, TensorRT, GPU name).
    An unchanged rebuild reuses the artifact without exporting; any change is a new key and a fresh build, so a
    calibration made on other frames can never be reused."""
    doc = {
        "base_model_sha256": base_model_sha256,
        "frames_hash": frames_hash,
        "candidate": candidate,
        "imgsz": imgsz,
        "toolchain": toolchain,
    }
    return content_key(doc)


def remembered_keys(cache_dir: Path) -> set[str]:
    """The cache keys of each candidate's latest build (`last/`): where the next build starts, kept by gc."""
    keys = set()
    for record in sorted((cache_dir / LAST).glob("*.json")):
        try:
            keys.add(str(json.loads(record.read_text()).get("cache_key", "")))
        except (OSError, ValueError):
            continue
    keys.discard("")
    return keys


def toolchain_versions() -> dict[str, str]:
    """Versions of the packages that shape an artifact (recorded so numbers and artifacts compare)."""
    return installed_versions(ARTIFACT_TOOLCHAIN)


TENSORRT_10_JETPACK = "JetPack 6.1 or later (TensorRT 10.3), while JetPack 5.x and 6.0 ship TensorRT 8.5 and 8.6"


def check_tensorrt(
    candidates: Sequence[CandidateConfig] = (),
    *,
    import_module: Callable[[str], Any] = importlib.import_module,
    gpu_available: Callable[[], bool] | None = None,
) -> str:
    """Fail with the reason when this machine cannot build the TensorRT `candidates`; returns TensorRT's version.

    TensorRT engines are built on the target GPU. Checked by importing `tensorrt` (a package that is found but does
    not import fails here, with its error) and reading its version: 10 or later (`STRONGLY_TYPED` does not exist
    before). On TensorRT 11, Ultralytics' own engine export quantizes FP16/INT8 through NVIDIA ModelOpt
    (`ultralytics.utils.export.engine.modelopt_quantize_onnx`), which it would try to pip-install: those candidates
    are refused unless `modelopt` imports; our `trt-qdq` (Q/DQ from ONNX Runtime) and FP32 exports do not need it.
    `import_module` and `gpu_available` are injectable for tests (defaults: `importlib.import_module`,
    `torch.cuda.is_available`).
    """
    missing, version = [], ""
    try:
        trt = import_module("tensorrt")
    except Exception as e:  # ImportError, or OSError/AttributeError from a broken install
        missing.append(f"the `tensorrt` Python package does not import ({type(e).__name__}: {e})")
    else:
        version = str(getattr(trt, "__version__", "unknown"))
        major = major_version(version)
        if major is None or major < TENSORRT_MIN_MAJOR:
            missing.append(
                f"TensorRT {version} is installed, but this project needs TensorRT {TENSORRT_MIN_MAJOR} or later "
                f"(strongly-typed networks from Q/DQ ONNX); on Jetson that is {TENSORRT_10_JETPACK}"
            )
        elif major >= 11:
            needs = [c.name for c in candidates if c.method == "ultralytics" and c.precision in ("fp16", "int8")]
            if needs:
                try:
                    import_module("modelopt.onnx.quantization")
                except Exception as e:
                    missing.append(
                        f"TensorRT {version}: Ultralytics' FP16/INT8 engine export goes through NVIDIA ModelOpt on "
                        f"TensorRT 11, and `modelopt` does not import here ({type(e).__name__}: {e}), so candidates "
                        f"{', '.join(repr(n) for n in needs)} cannot be built; install nvidia-modelopt[onnx] on the "
                        "gate, or build INT8 with method: trt-qdq (no ModelOpt needed)"
                    )
    if gpu_available is None:
        import torch

        gpu_available = torch.cuda.is_available
    if not gpu_available():
        missing.append("no CUDA GPU is visible (torch.cuda.is_available() is False)")
    if missing:
        raise BackendUnavailable(
            "TensorRT backend unavailable here: "
            + "; ".join(missing)
            + ". TensorRT engines are tied to the GPU and TensorRT version they are built on: build them on the "
            f"gate's hardware (TensorRT {TENSORRT_MIN_MAJOR} or later installed, GPU visible), or use "
            "build.backend: openvino for the CPU.",
            tensorrt=version,
        )
    return version


def export_candidate(
    model: Path, candidate: CandidateConfig, backend: str, dataset_yaml: Path, imgsz: int | Shape, out: Path
) -> Path:
    """Export one candidate with Ultralytics and move the artifact into the folder `out`; return its path.

    `imgsz`: a square side, or (height, width): Ultralytics exports a fixed input of that shape, letterboxes INT8
    calibration to it and records it in the export's metadata, which its predictor and validator then use.

    The export runs in a scratch folder of its own: Ultralytics names outputs by replacing the text `.pt` anywhere
    in the model's path, so the path it sees must hold `.pt` only as the file's suffix.
    """
    from ultralytics import YOLO

    if backend == "openvino" and candidate.precision == "int8":
        import nncf  # NNCF resets its log level on import; its per-layer INFO lines would bury ours

        nncf.set_log_level(logging.WARNING)
    if not isinstance(imgsz, int) and imgsz[0] == imgsz[1]:
        imgsz = imgsz[0]  # a square input, exported as it always was
    size = imgsz if isinstance(imgsz, int) else list(imgsz)
    kwargs: dict[str, object] = {"format": EXPORT_FORMAT[backend], "imgsz": size, "verbose": False}
    kwargs["device"] = 0 if backend == "tensorrt" else "cpu"
    quantize = _QUANTIZE[candidate.precision]
    if quantize is not None:
        kwargs["quantize"] = quantize
    if candidate.precision == "int8":
        kwargs["data"] = str(dataset_yaml)
    with tempfile.TemporaryDirectory(prefix="alpr-export-") as scratch:
        work = Path(scratch) / "model.pt"
        if str(work).count(".pt") != 1:
            raise RuntimeError(f"scratch path {work} holds '.pt' twice; set TMPDIR to a folder without '.pt'")
        shutil.copyfile(model, work)
        artifact = Path(YOLO(str(work), task="detect").export(**kwargs))
        target = out / artifact.name
        shutil.move(artifact, target)
    return target


def build_candidates(
    model: Path,
    dataset_yaml: Path,
    out_dir: Path,
    cfg: BuildConfig,
    base_model_sha256: str,
    frames_hash: str,
    *,
    gate: ValidateConfig | None = None,
    cache_dir: Path | None = None,
    previous: Path | None = None,
    gate_frames: Path | None = None,
) -> list[Candidate]:
    """Build every candidate of `cfg` into `out_dir/<name>/`, each folder replaced atomically when complete.

    `gate`: the agreement settings (validate section) for our INT8 methods' accuracy gate. `cache_dir`: the
    content-addressed store of built candidates. `previous`: the previous champion's folder (a release holding
    `candidate.json`); the layers it kept in float start our NNCF search. `gate_frames`: unlabelled frames of the
    held-out videos (`paths.holdout_frames`), where our NNCF gate and its search measure agreement; part of the
    cache key of the candidates that use them.
    """
    if not dataset_yaml.is_file():
        raise BuildInputMissing(f"{dataset_yaml}: calibration dataset YAML not found")
    shaped = cfg.shape == "camera" and any(c.precision == "int8" for c in cfg.candidates)
    frame_hw = footage_size(dataset_yaml, gate_frames) if shaped else None
    for cand in cfg.candidates:  # every folder this build writes is ours: checked before the first export
        check_output_folder(out_dir / cand.name, CANDIDATE_OUTPUT)
    check_output_folder(out_dir, CANDIDATES_OUTPUT)
    on_host = [c for c in cfg.candidates if cfg.backend_of(c) == "tensorrt" and not cfg.built_on_gate(c)]
    check_gate_built(cfg)  # before any export: fail in seconds, not after the CPU candidates
    if on_host:
        check_tensorrt(on_host)
    if gate is None and any(c.method != "ultralytics" for c in cfg.candidates):
        raise ValueError("build_candidates: our INT8 methods need `gate` (params.yaml `validate:`) for their gate")
    toolchain = toolchain_versions()
    if on_host:
        from tasks.edge.tensorrt import device_info

        toolchain = {**toolchain, **{f"trt_{k}": v for k, v in device_info().items()}}
    gate_images = gate_frame_images(gate_frames)
    gate_hash = files_sha256(gate_images, gate_images[0].parent) if gate_images else ""
    claim_output_folder(out_dir, CANDIDATES_OUTPUT)

    def _build_at(cand: CandidateConfig, geometry: Geometry) -> Candidate:
        return build_one(
            model, cand, cfg, dataset_yaml, out_dir, base_model_sha256, frames_hash, toolchain, geometry, gate=gate,
            cache_dir=cache_dir, previous=previous, gate_images=gate_images, gate_hash=gate_hash,
        )  # fmt: skip

    built: dict[str, Candidate] = {}
    roi: RoiRecord | None = None
    # FP32/FP16 first: the INT8 candidates' region of interest is learned from the FP32 reference's plates; then the
    # INT8 candidates at the region's geometry and, for each geometry, the FP32 model they are measured against
    # the declared FP32/FP16 candidates (the plan's derived FP32 models wait for the region's geometry)
    first = [(c, g) for c, g in build_plan(cfg, frame_hw)[: len(cfg.candidates)] if c.precision != "int8"]
    for cand, geometry in steps(first, "build: exporting the FP32 models"):
        built[cand.name] = _build_at(cand, geometry)
    if any(c.precision == "int8" for c in cfg.candidates):
        roi = decide_roi(cfg, frame_hw, built.get(cfg.reference), dataset_yaml, gate, cache_dir)
        write_roi(out_dir / ROI_JSON, roi)
        rest = [(c, g) for c, g in build_plan(cfg, frame_hw, roi) if c.name not in built]
        for cand, _ in rest:  # the derived names hold the region's geometry: checked before their export too
            check_output_folder(out_dir / cand.name, CANDIDATE_OUTPUT)
        for cand, geometry in steps(rest, "build: exporting the INT8 candidates"):
            built[cand.name] = _build_at(cand, geometry)
    if roi is None:  # no INT8 candidate: nothing is cropped, and no older build's roi.json is left to mislead
        (out_dir / ROI_JSON).unlink(missing_ok=True)
    return list(built.values())  # the declared candidates, then the FP32 models derived at their geometries


def decide_roi(
    cfg: BuildConfig,
    frame_hw: Shape | None,
    reference: Candidate | None,
    dataset_yaml: Path,
    gate: ValidateConfig | None,
    cache_dir: Path | None,
) -> RoiRecord:
    """The region of interest the INT8 candidates are built for (`tasks.pipeline.roi.region_of_interest`): learned
    from the FP32 reference's plates (`gate`'s agreement_conf and iou, params.yaml `validate:`) on the calibration
    frames; the full frame when the engines are not shaped to the camera (`build.shape: square`, no frame size)."""
    from tasks.pipeline.quantize import calibration_images

    if frame_hw is None:  # build.shape: square (the frame size is read only for camera-shaped INT8 candidates)
        return RoiRecord("full", (), reason="build.shape: square: every engine looks at the full frame")
    agreement = gate or ValidateConfig()  # a build without our INT8 methods: validation's defaults
    images = calibration_images(dataset_yaml) if cfg.roi == "auto" else []
    return region_of_interest(cfg, frame_hw, reference, images, agreement.agreement_conf, agreement.iou, cache_dir)


def build_one(
    model: Path,
    cand: CandidateConfig,
    cfg: BuildConfig,
    dataset_yaml: Path,
    out_dir: Path,
    base_model_sha256: str,
    frames_hash: str,
    toolchain: dict[str, str],
    geometry: Geometry,
    *,
    gate: ValidateConfig | None = None,
    cache_dir: Path | None = None,
    previous: Path | None = None,
    gate_images: list[Path] | None = None,
    gate_hash: str = "",
) -> Candidate:
    """Build (or reuse from the cache) one candidate into `out_dir/<name>/` at `geometry` (its input (height, width)
    and crop, x1, y1, x2, y2 pixels of `frame_shape` frames; () the full frame): the one path every candidate's
    export, calibration, cache key, embedded metadata and `candidate.json` go through."""
    backend = cfg.backend_of(cand)
    shape, crop, frame_shape = geometry.input_shape, geometry.crop, geometry.frame_shape
    params = cand.model_dump(mode="json", exclude_none=True)
    calibrated_on = frames_hash if cand.precision == "int8" else ""  # FP32/FP16 do not depend on the frames
    keyed = {**params, "backend": backend}
    if cand.method == "nncf" and gate_hash:
        keyed["gate_frames_sha256"] = gate_hash
    if shape != square(cfg.imgsz):  # a square input is keyed by imgsz alone (as before shapes existed)
        keyed["input_shape"] = list(shape)
    if crop:  # a full-frame engine is keyed as before crops existed
        keyed["crop"], keyed["frame_shape"] = list(crop), list(frame_shape)
    on_gate = cfg.built_on_gate(cand)
    if on_gate:  # only the ONNX is built here: never the same entry as a host-built engine
        keyed["tensorrt_on"] = BUILT_ON_GATE
    elif backend == "tensorrt":  # engines cached before these layouts did not load or lacked their plan
        keyed["engine_files"] = ENGINE_FILES
    if cand.method == "trt-qdq":
        from tasks.pipeline.quantize import TRT_QDQ_HIGH_PRECISION, TRT_QDQ_PLACEMENT

        keyed["qdq_placement"] = TRT_QDQ_PLACEMENT
        high = cand.qdq_settings.high_precision  # in `params` too; keyed by name so it can never drop out
        keyed["qdq_high_precision"] = TRT_QDQ_HIGH_PRECISION if high == "fp16" else high
    key = cache_key(base_model_sha256, calibrated_on, keyed, cfg.imgsz, toolchain)
    folder = out_dir / cand.name
    reused = _reuse(folder, key, cache_dir)
    if reused is not None:
        return reused
    start_kept = previous_kept_in_float(cand, folder, previous, cache_dir)
    started = time.perf_counter()
    built_at = datetime.now(UTC).isoformat(timespec="seconds")
    with atomic_dir(folder, CANDIDATE_OUTPUT) as tmp:
        artifact, quantization = build_artifact(
            model, cand, backend, dataset_yaml, shape, tmp, gate, start_kept, gate_images, on_gate, crop, frame_shape
        )
        embedded = {
            "name": cand.name,
            "method": cand.method,
            "params": params,
            "base_model_sha256": base_model_sha256,
            "frames_hash": frames_hash,
            "imgsz": cfg.imgsz,
            "input_shape": list(shape),
            "crop": list(crop),  # the detector crops every frame to it (tasks/edge/detect.py)
            "frame_shape": list(frame_shape),
            "toolchain": toolchain,
            "cache_key": key,
            "built_at": built_at,
            "kept_in_float": quantization.get("kept_in_float", []),
        }
        embed_metadata(artifact, embedded)
        result = Candidate(
            name=cand.name,
            backend=backend,
            precision=cand.precision,
            folder=folder,
            artifact=artifact.relative_to(tmp).as_posix(),
            sha256=path_sha256(artifact),
            size_mb=path_size_mb(artifact),
            base_model_sha256=base_model_sha256,
            frames_hash=frames_hash,
            imgsz=cfg.imgsz,
            toolchain=toolchain,
            build_seconds=round(time.perf_counter() - started, 2),
            built_at=built_at,
            method=cand.method,
            cache_key=key,
            params=params,
            quantization=quantization,
            tensorrt=_tensorrt_record(artifact, tmp, backend, on_gate),
            input_shape=shape,
            crop=crop,
            frame_shape=frame_shape,
        )
        (tmp / CANDIDATE_JSON).write_text(result.to_json())
        if cache_dir is not None:
            with build_store(cache_dir).put(key) as entry:
                copy_tree(tmp, entry)
    _remember(cache_dir, result)
    log.info(
        "built %s (%s %s, %s, input %s%s) in %.0f s: %s, %.1f MB",
        cand.name, backend, cand.precision, cand.method, shape_text(shape), f", crop {list(crop)}" if crop else "",
        result.build_seconds, result.path, result.size_mb,
    )  # fmt: skip
    return result


def cropped_dataset(dataset_yaml: Path, crop: Sequence[int], frame_shape: Sequence[int], folder: Path) -> Path:
    """A dataset YAML in `folder` whose images are the calibration images of `dataset_yaml` cropped to `crop` (PNG:
    no second JPEG loss), for Ultralytics' INT8 exporter, which calibrates on a dataset's `val` images letterboxed
    to the input: cropped first, they are the frames the detector will feed the engine."""
    import cv2
    import yaml

    from tasks.edge.preprocess import crop_frame
    from tasks.pipeline.quantize import calibration_images
    from tasks.support.images import write_dataset_yaml

    images = folder / "images"
    images.mkdir(parents=True)
    for image in calibration_images(dataset_yaml):
        frame = cv2.imread(str(image))
        if frame is None:
            raise BuildInputMissing(f"{image}: cannot be read as an image", remedy=Remedy.EXTRACT)
        part, _ = crop_frame(frame, crop, frame_shape, str(image))
        if not cv2.imwrite(str(images / f"{image.stem}.png"), part):
            raise OSError(f"{images / image.stem}.png: could not be written")
    names = (yaml.safe_load(dataset_yaml.read_text()) or {}).get("names") or {0: "plate"}
    return write_dataset_yaml(folder / "calibration.yaml", images, names, "cropped calibration frames (temporary)")


def build_plan(
    cfg: BuildConfig, frame_hw: Shape | None, roi: RoiRecord | None = None
) -> list[tuple[CandidateConfig, Geometry]]:
    """What a build exports: every candidate of `cfg` at its geometry (the INT8 ones at the region of interest's,
    `roi`, once it is decided; before that at the camera shape), then for each distinct geometry its INT8 candidates
    use other than the accuracy reference's, an FP32 model of the reference's method and backend at that geometry
    (`geometry_reference_name`: `fp32@416x640`, `fp32@288x544-roi192_144_1280_720`). It is what each INT8
    candidate's quantization is measured against (`quant_map_drop`, agreement), apart from what the geometry itself
    costs (docs/int8-builds.md); derived, not declared, and cached like every other candidate."""
    region = None
    if roi is not None and roi.input_shape and frame_hw is not None:
        shape = (int(roi.input_shape[0]), int(roi.input_shape[1]))
        region = Geometry(shape, tuple(roi.crop), tuple(frame_hw) if roi.crop else ())
    plan = []
    for cand in cfg.candidates:
        if cand.precision == "int8" and region is not None:
            plan.append((cand, region))
        else:
            plan.append((cand, Geometry(input_shape(cand.precision, cfg.shape, cfg.imgsz, frame_hw, cfg.shape_margin))))
    ref = next(c for c in cfg.candidates if c.name == cfg.reference)  # BuildConfig checks it is declared
    square_geometry = next(g for c, g in plan if c.name == ref.name)
    derived: dict[Geometry, CandidateConfig] = {}
    for cand, geometry in plan:
        if cand.precision == "int8" and geometry != square_geometry and geometry not in derived:
            # model_copy: the derived name holds `@`, which a declared candidate's name may not (no clash)
            derived[geometry] = ref.model_copy(update={"name": geometry_reference_name(ref.name, geometry)})
    return plan + [(cand, geometry) for geometry, cand in derived.items()]


def with_geometry_references(out_dir: Path, candidates: list[Candidate], reference: str) -> list[Candidate]:
    """`candidates` (read back by their declared names) and the FP32 models the build derived at their geometries
    (`build_plan`), read back from `out_dir` where they were built; validation refuses an INT8 candidate whose
    geometry reference is missing."""
    names = {c.name for c in candidates}
    found = list(candidates)
    for cand in candidates:
        name = geometry_reference_name(reference, geometry_of(cand))
        if name not in names and (out_dir / name / CANDIDATE_JSON).is_file():
            found.append(read_candidate(out_dir / name))
            names.add(name)
    return found


def footage_size(dataset_yaml: Path, gate_frames: Path | None) -> Shape:
    """The frame size (height, width) of the footage, from the extraction manifests beside the calibration images
    and beside the held-out videos' frames (`gate_frames`, when extraction wrote one): every video must share it
    (`tasks.support.shape.footage_frame_size` refuses mixed footage)."""
    from tasks.pipeline.quantize import calibration_images

    manifest = calibration_images(dataset_yaml)[0].parent.parent / "manifest.csv"
    if not manifest.is_file():
        raise FrameSizeUnknown(
            f"{manifest}: not found, so the footage's frame size is unknown; extract the calibration frames with "
            "the project's extraction (it records each frame's size), or set build.shape: square"
        )
    manifests = [manifest]
    if gate_frames is not None and (gate_frames / "manifest.csv").is_file():
        manifests.append(gate_frames / "manifest.csv")
    return footage_frame_size(manifests)


def check_gate_built(cfg: BuildConfig) -> None:
    """With tensorrt_on: gate, the host builds a TensorRT candidate only as far as the ONNX the gate builds its
    engine from: the FP32 ONNX (Ultralytics fp32) or our Q/DQ ONNX (trt-qdq). Ultralytics' FP16/INT8 engine export
    quantizes inside TensorRT at export time, which only a TensorRT machine can do: refused by name."""
    refused = [
        c.name
        for c in cfg.candidates
        if cfg.built_on_gate(c) and not (c.method == "trt-qdq" or (c.method == "ultralytics" and c.precision == "fp32"))
    ]
    if refused:
        raise BackendUnavailable(
            "build.tensorrt_on: gate builds TensorRT engines on the gate from an ONNX the host exports, but "
            f"candidates {', '.join(repr(n) for n in refused)} are Ultralytics FP16/INT8 engine exports, which need "
            "TensorRT at export time: use method: trt-qdq (INT8) or precision: fp32 for them, or set "
            "build.tensorrt_on: host on the gate's own hardware",
            remedy=Remedy.PARAMS,
        )


def _tensorrt_record(artifact: Path, folder: Path, backend: str, on_gate: bool) -> dict[str, Any]:
    """What candidate.json says about the engine: the gate builds it from this ONNX, or the engine built here."""
    if on_gate:
        return {"built_on": BUILT_ON_GATE, "onnx": artifact.relative_to(folder).as_posix()}
    return engine_record(artifact) if backend == "tensorrt" else {}


def gate_frame_images(folder: Path | None) -> list[Path]:
    """The images of a frames folder (`folder/images`, or `folder` itself); none when it is unset or missing."""
    where = frames_folder(folder) if folder is not None else None
    return list_images(where) if where is not None else []


def _reuse(folder: Path, key: str, cache_dir: Path | None) -> Candidate | None:
    """The candidate already built for `key`: in place (untouched) or copied from the cache; None to build it."""
    meta = folder / CANDIDATE_JSON
    if meta.is_file():
        try:
            here = read_candidate(folder)
        except (json.JSONDecodeError, TypeError):
            here = None
        if here is not None and here.cache_key == key and here.path.exists() and path_sha256(here.path) == here.sha256:
            log.info("reused %s: unchanged inputs (cache key %s), artifact in place", here.name, key[:12])
            return here
    entry = build_store(cache_dir).lookup(key) if cache_dir is not None else None
    try:
        found = read_candidate(entry) if entry is not None else None
    except (OSError, json.JSONDecodeError, TypeError):
        found = None
    if entry is None or found is None or found.cache_key != key:
        return None
    if not found.path.exists() or path_sha256(found.path) != found.sha256:
        log.warning("cache entry %s is damaged (artifact hash differs); rebuilding", entry)
        return None
    with atomic_dir(folder, CANDIDATE_OUTPUT) as tmp:
        copy_tree(entry, tmp)
    log.info("reused %s from the build cache (key %s)", found.name, key[:12])
    return read_candidate(folder)


def _remember(cache_dir: Path | None, cand: Candidate) -> None:
    """Keep the latest build's metadata per candidate name: where the next build's NNCF search starts."""
    if cache_dir is not None:
        atomic_write_text(cache_dir / LAST / f"{cand.name}.json", cand.to_json())


def previous_kept_in_float(
    cand: CandidateConfig, folder: Path, previous: Path | None, cache_dir: Path | None
) -> list[str]:
    """Layers an earlier NNCF build kept in float: the previous champion's first, else this candidate's last build."""
    if cand.method != "nncf":
        return []
    sources = []
    if previous is not None:
        sources += [previous / CANDIDATE_JSON, previous / cand.name / CANDIDATE_JSON]
    sources.append(folder / CANDIDATE_JSON)
    if cache_dir is not None:
        sources.append(cache_dir / LAST / f"{cand.name}.json")
    for source in sources:
        if not source.is_file():
            continue
        try:
            meta = json.loads(source.read_text())
        except json.JSONDecodeError:
            continue
        found = meta.get("quantization") or {}
        kept = found.get("float_scope") or found.get("kept_in_float")
        if meta.get("method") == "nncf" and kept:
            log.info("%s: starting from the %d layers kept in float by %s", cand.name, len(kept), source)
            return list(kept)
    return []


def build_artifact(
    model: Path,
    cand: CandidateConfig,
    backend: str,
    dataset_yaml: Path,
    imgsz: int | Shape,
    out: Path,
    gate: ValidateConfig | None,
    start_kept: list[str],
    gate_images: list[Path] | None = None,
    on_gate: bool = False,
    crop: Sequence[int] = (),
    frame_shape: Sequence[int] = (),
) -> tuple[Path, dict[str, Any]]:
    """Build one candidate's artifact into the folder `out`, at input `imgsz` (a square side or (height, width));
    returns it and what quantization recorded. `on_gate`: a TensorRT candidate stops at the ONNX its engine is
    built from on the gate (FP32 export, or trt-qdq's Q/DQ). Ours export the FP32 source at that shape and
    calibrate and gate on frames letterboxed to it. `crop` (x1, y1, x2, y2 pixels of `frame_shape` frames): every
    calibration and gate frame is cropped to it first; Ultralytics' INT8 exports calibrate on a cropped copy."""
    if cand.method == "ultralytics":
        with tempfile.TemporaryDirectory(prefix="alpr-cropped-") as scratch:
            data = dataset_yaml
            if crop and cand.precision == "int8":
                data = cropped_dataset(dataset_yaml, crop, frame_shape, Path(scratch))
            artifact = export_candidate(model, cand, "onnxruntime" if on_gate else backend, data, imgsz, out)
        if on_gate:
            return artifact, {}
        if backend == "tensorrt":
            from tasks.edge.tensorrt import stamp_device

            stamp_device(artifact)
        return artifact, {}
    from tasks.pipeline import quantize

    assert gate is not None
    images = quantize.calibration_images(dataset_yaml)
    fp32 = CandidateConfig(name="fp32-source", precision="fp32")
    with tempfile.TemporaryDirectory(prefix="alpr-quantize-") as scratch:
        if cand.method == "nncf":
            ir = export_candidate(model, fp32, "openvino", dataset_yaml, imgsz, Path(scratch))
            artifact = out / ir.name.replace("_openvino_model", "_int8_openvino_model")
            artifact.mkdir()
            shutil.copyfile(ir / "metadata.yaml", artifact / "metadata.yaml")
            xml = openvino_xml(ir)
            result = quantize.nncf_quantize_ir(
                xml, artifact / xml.name, images, cand.nncf_settings, imgsz, gate, start_kept, gate_images or [],
                crop, frame_shape,
            )  # fmt: skip
            return artifact, result.info
        onnx_fp32 = export_candidate(model, fp32, "onnxruntime", dataset_yaml, imgsz, Path(scratch))
        qdq = (out if cand.method == "ort-qdq" or on_gate else Path(scratch)) / f"{onnx_fp32.stem}_qdq.onnx"
        settings = cand.qdq_settings
        result = quantize.qdq_quantize_onnx(
            onnx_fp32, qdq, images, settings, imgsz, gate, settings.holdout_fraction,
            for_tensorrt=cand.method == "trt-qdq", crop=crop, frame_shape=frame_shape,
        )  # fmt: skip
        if cand.method == "ort-qdq" or on_gate:
            return qdq, result.info
        from tasks.edge.tensorrt import build_strongly_typed_engine

        return build_strongly_typed_engine(qdq, out / f"{qdq.stem}.engine"), result.info
