"""Our INT8 builds: NNCF on the OpenVINO IR of the FP32 model (with accuracy recovery), and Q/DQ ONNX from ONNX
Runtime's `quantize_static` (for ONNX Runtime, or, placed the way NVIDIA ModelOpt places Q/DQ for TensorRT, for a
strongly-typed TensorRT engine: `trt_qdq_options`).

The accuracy gate is agreement with FP32 (mAP50-95 of the INT8 model against the FP32 model's own detections):
gate videos have no labels, and agreement is what says whether INT8 changed what the detector sees. It is measured
on frames of the held-out videos (`paths.holdout_frames`) when there are any: frames of the calibration videos,
even ones left out of calibration, sit seconds away from calibration frames and scored INT8 optimistically
(agreement .975-.995 there vs .93-.95 on the labelled holdout), so the gate passed models that lost 1.6-1.8 mAP
points. Recovery is NNCF's `quantize_with_accuracy_control`, run only when the gate fails, starting from the layers
the previous champion kept in float (so an unchanged model usually passes at once), and stopped when its time
budget is spent.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tasks.edge.postprocess import decode
from tasks.edge.preprocess import Letterbox, preprocess
from tasks.pipeline.scoring import agreement_truth, score
from tasks.support.config import AccuracyControlConfig, IgnoredScopeConfig, NncfConfig, QdqConfig, ValidateConfig
from tasks.support.errors import AlprError, Remedy
from tasks.support.images import list_images

log = logging.getLogger(__name__)

Infer = Callable[[np.ndarray], np.ndarray]  # letterboxed NCHW float32 batch of 1 -> raw (1, 4 + nc, anchors) output


class QuantizeError(AlprError):
    """Quantization inputs are wrong or missing; the message says what to do."""


def calibration_images(dataset_yaml: Path) -> list[Path]:
    """The images of an Ultralytics dataset YAML's `val` split (what `alpr-ops extract` writes)."""
    doc = yaml.safe_load(dataset_yaml.read_text()) or {}
    base = dataset_yaml.parent / doc["path"] if doc.get("path") else dataset_yaml.parent
    folder = (base / str(doc.get("val", ""))).resolve()
    images = list_images(folder) if folder.is_dir() else []
    if not images:
        raise QuantizeError(f"{dataset_yaml}: no images in its val folder {folder}", remedy=Remedy.EXTRACT)
    return images


def split_frames(images: Sequence[Path], fraction: float) -> tuple[list[Path], list[Path]]:
    """(calibration, held out): `fraction` of the frames (at least 2), evenly spread, never used for calibration."""
    holdout = max(2, round(len(images) * fraction))
    if len(images) < holdout + 1:
        raise QuantizeError(
            f"{len(images)} calibration frames cannot spare {holdout} for the accuracy gate and keep one for "
            "calibration; extract more frames (extract.max_frames_per_video)"
        )
    picked = set(np.linspace(0, len(images) - 1, holdout).round().astype(int).tolist())
    held = [im for i, im in enumerate(images) if i in picked]
    return [im for i, im in enumerate(images) if i not in picked], held


def frame_input(
    image: Path, imgsz: int | tuple[int, int], crop: Sequence[int] = (), frame_shape: Sequence[int] = ()
) -> tuple[np.ndarray, Letterbox]:
    """The NCHW float32 input the gate's `Detector` feeds a model of a square side `imgsz` or of (height, width)
    `imgsz` (the edge letterbox, equal to Ultralytics' predictor's), and how the frame was fitted into it. With a
    `crop` (an engine built for a region of interest) the frame, which must be `frame_shape`, is cropped first, as
    the detector crops it."""
    import cv2

    frame = cv2.imread(str(image))
    if frame is None:
        raise QuantizeError(f"{image}: cannot be read as an image", remedy=Remedy.EXTRACT)
    shape = (imgsz, imgsz) if isinstance(imgsz, int) else (int(imgsz[0]), int(imgsz[1]))
    batch, boxes = preprocess([frame], shape, crop, frame_shape, str(image))
    return batch, boxes[0]


def letterbox(
    image: Path, imgsz: int | tuple[int, int], crop: Sequence[int] = (), frame_shape: Sequence[int] = ()
) -> np.ndarray:
    """The model input of `image` alone (`frame_input`): what calibration feeds NNCF and ONNX Runtime."""
    return frame_input(image, imgsz, crop, frame_shape)[0]


class AgreementGate:
    """Agreement mAP50-95 with the FP32 reference on held-out frames: the one metric (`tasks.pipeline.scoring.score`)
    on raw outputs decoded as the gate decodes them (edge `decode`, boxes back in frame pixels).

    In memory (no export to disk per evaluation) because NNCF's accuracy control evaluates many variants: it hands
    `score_outputs` the raw outputs of `inputs` by frame index.
    """

    def __init__(
        self,
        reference: Infer,
        images: Sequence[Path],
        imgsz: int | tuple[int, int],
        cfg: ValidateConfig,
        crop: Sequence[int] = (),
        frame_shape: Sequence[int] = (),
    ) -> None:
        loaded = [frame_input(p, imgsz, crop, frame_shape) for p in images]  # full frames, cropped as the gate does
        self.inputs = [x for x, _ in loaded]
        self.fits = [box for _, box in loaded]
        self.frames = [str(p) for p in images]
        self.cfg = cfg
        raw = [reference(x) for x in self.inputs]
        classes = int(np.asarray(raw[0]).shape[1]) - 4 if raw else 1
        self.names = {i: str(i) for i in range(max(classes, 1))}
        low = min(cfg.conf, cfg.agreement_conf)
        found = [decode(np.asarray(r)[0], fit, low, cfg.iou) for r, fit in zip(raw, self.fits, strict=True)]
        self.truth = agreement_truth(found, cfg.agreement_conf)
        self.boxes = sum(len(t.conf) for t in self.truth)
        if self.boxes == 0:
            log.warning(
                "the FP32 reference detects nothing on the %d held-out frames: the gate cannot fail", len(images)
            )

    def score_outputs(self, outputs: Sequence[tuple[int, np.ndarray]]) -> float:
        """mAP50-95 of raw outputs (frame index, output) against the reference's detections on those frames, in
        frame order whatever order they come in; 1.0 when the reference found nothing there."""
        ordered = sorted(outputs, key=lambda item: item[0])
        truth = [self.truth[i] for i, _ in ordered]
        if not any(t.conf for t in truth):
            return 1.0
        preds = [decode(np.asarray(raw)[0], self.fits[i], self.cfg.conf, self.cfg.iou) for i, raw in ordered]
        return float(score(truth, preds, self.names, [self.frames[i] for i, _ in ordered]).map)

    def score(self, infer: Infer) -> float:
        return self.score_outputs([(i, infer(x)) for i, x in enumerate(self.inputs)])


@dataclass(frozen=True)
class GateResult:
    reference: float
    candidate: float
    max_drop: float

    @property
    def drop(self) -> float:
        return round(self.reference - self.candidate, 5)

    @property
    def passed(self) -> bool:
        return self.drop <= self.max_drop

    def as_dict(self) -> dict[str, Any]:
        return {
            "reference_agreement": round(self.reference, 5),
            "agreement": round(self.candidate, 5),
            "drop": self.drop,
            "max_drop": self.max_drop,
            "passed": self.passed,
        }


# --- ignored scopes -------------------------------------------------------------------------------------------------


def _head_index(names: Sequence[str], pattern: str) -> int | None:
    found = [int(m.group(1)) for n in names if (m := re.search(pattern, n))]
    return max(found) if found else None


def ov_ignored_scope(model: Any, scope: IgnoredScopeConfig, extra_names: Sequence[str] = ()) -> Any:
    """An `nncf.IgnoredScope` for an OpenVINO IR traced from the PyTorch model (names like `__module.model.22...`)."""
    import nncf

    ops = model.get_ordered_ops()
    names = [op.get_friendly_name() for op in ops]
    head = _head_index(names, r"__module\.model\.(\d+)[./]")
    ignored: set[str] = {n for n in extra_names if n in set(names)}
    if head is not None and scope.ultralytics_head:  # what Ultralytics' own OpenVINO INT8 export keeps in float
        ignored |= {
            op.get_friendly_name()
            for op in ops
            if op.get_type_name() == "Sigmoid"
            or op.get_friendly_name().startswith((f"__module.model.{head}/", f"__module.model.{head}.dfl"))
        }
    if head is not None and scope.branch_last_conv:
        last = re.compile(rf"^__module\.model\.{head}\.cv[23]\.\d+\.2/")
        ignored |= {
            op.get_friendly_name()
            for op in ops
            if op.get_type_name() == "Convolution" and last.match(op.get_friendly_name())
        }
    ignored |= set(scope.names)
    return nncf.IgnoredScope(
        names=sorted(ignored), types=list(scope.types), patterns=list(scope.patterns), validate=False
    )


def onnx_nodes_to_exclude(model: Any, scope: IgnoredScopeConfig) -> list[str]:
    """Node names of an Ultralytics ONNX export (names like `/model.22/cv3.0/cv3.0.2/Conv`) to keep in float."""
    nodes = list(model.graph.node)
    names = [n.name for n in nodes]
    head = _head_index(names, r"^/model\.(\d+)/")
    excluded: set[str] = set(scope.names) & set(names)
    if head is not None and scope.ultralytics_head:  # the Detect module's own ops and its DFL
        own = re.compile(rf"^/model\.{head}/(?!cv[23]\.)")
        excluded |= {n for n in names if own.match(n)}
    if head is not None and scope.branch_last_conv:
        last = re.compile(rf"^/model\.{head}/cv[23]\.\d+/cv[23]\.\d+\.2/")
        excluded |= {n.name for n in nodes if n.op_type == "Conv" and last.match(n.name)}
    excluded |= {n.name for n in nodes if n.op_type in set(scope.types)}
    for pattern in scope.patterns:
        excluded |= {n for n in names if re.search(pattern, n)}
    return sorted(excluded)


def ov_float_convolutions(model: Any) -> list[str]:
    """Convolutions/MatMuls of a quantized IR whose weights are plain float constants: the layers kept in float.

    A quantized layer's weights come through a FakeQuantize (in memory) or a Convert of an int8 constant (saved IR);
    the activation side is no use here, since NNCF puts one FakeQuantize before a Split that feeds several convs.
    """
    kept = []
    for op in model.get_ordered_ops():
        if op.get_type_name() not in ("Convolution", "GroupConvolution", "MatMul"):
            continue
        weights = op.input_value(1).get_node()
        if weights.get_type_name() == "Constant" and weights.get_element_type().is_real():
            kept.append(op.get_friendly_name())
    return kept


# --- OpenVINO / NNCF ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuantizeResult:
    """What a quantization did, recorded in the candidate's metadata."""

    info: dict[str, Any]


def _ov_infer(core: Any, model: Any) -> Infer:
    compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": 0})
    return lambda x: compiled(x)[0]


def nncf_quantize_ir(
    fp32_xml: Path,
    out_xml: Path,
    images: list[Path],
    cfg: NncfConfig,
    imgsz: int | tuple[int, int],
    gate_cfg: ValidateConfig,
    start_kept: Sequence[str] = (),
    gate_images: Sequence[Path] = (),
    crop: Sequence[int] = (),
    frame_shape: Sequence[int] = (),
) -> QuantizeResult:
    """Quantize the FP32 IR `fp32_xml` with NNCF into `out_xml`; recover accuracy when the gate fails.

    `imgsz`: the IR's input, a square side or (height, width); calibration and gate frames are letterboxed to it,
    cropped first to `crop` (frame pixels of `frame_shape` frames) for an engine built for a region of interest.
    The gate compares with the FP32 IR at that same shape (what quantization changed); what the shape itself
    costs is measured by validation, against the square FP32 reference.
    `start_kept`: layers the previous champion kept in float, added to the ignored scope so that an unchanged model
    passes the gate at the first try and the slow search runs only when something changed. `gate_images`: frames of
    videos never used for calibration, for the gate and the search; without them (fewer than 2), the gate uses
    `holdout_fraction` of the calibration frames.
    """
    import nncf
    import openvino as ov

    nncf.set_log_level(logging.WARNING)
    core = ov.Core()
    fp32 = core.read_model(fp32_xml)
    frames = _read_frames(images, gate_images, cfg, imgsz, crop, frame_shape)
    scope = ov_ignored_scope(fp32, cfg.ignored_scope, start_kept)
    started = time.perf_counter()
    q = _quantizer(core, fp32, frames, cfg, gate_cfg, imgsz, crop, frame_shape)
    first = q.step("first", scope)
    log.info(
        "nncf %s: agreement %.4f (FP32 %.4f) on %d held-out frames (%s)",
        cfg.preset, first.result.candidate, q.reference, len(frames.held), frames.source,
    )  # fmt: skip
    tried, steps_run = _recover(q, cfg.accuracy_control, first, scope)
    best = _keep_best(tried)
    if best is not tried[-1]:
        log.info(
            "recovery ended at agreement %.4f, not above the %s step's %.4f: keeping that step's model (fewer layers "
            "in float)", tried[-1].result.candidate, best.step, best.result.candidate,
        )  # fmt: skip
    out_xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(best.model, out_xml, compress_to_fp16=False)
    return QuantizeResult(_record(q, start_kept, set(scope.names), first, best, steps_run, started))


@dataclass(frozen=True)
class _Frames:
    """The letterboxed inputs NNCF calibrates on, the frames the gate scores on, and where those came from."""

    calib: list[np.ndarray]
    held: list[Path]
    source: str  # "holdout_videos" or "calibration_split"


def _read_frames(
    images: Sequence[Path],
    gate_images: Sequence[Path],
    cfg: NncfConfig,
    imgsz: int | tuple[int, int],
    crop: Sequence[int] = (),
    frame_shape: Sequence[int] = (),
) -> _Frames:
    """Calibration inputs (at most `subset_size`) and gate inputs: frames of videos never calibrated on when there are
    at least 2, else `holdout_fraction` of the calibration frames, which score INT8 optimistically (module docstring).
    """
    if len(gate_images) >= 2:
        calib, held, source = list(images), list(gate_images), "holdout_videos"
    else:
        calib, held = split_frames(images, cfg.accuracy_control.holdout_fraction)
        source = "calibration_split"
        log.warning(
            "no frames of held-out videos for the INT8 gate (paths.holdout_frames): gating on %d calibration frames "
            "left out of calibration, which scores INT8 optimistically",
            len(held),
        )
    return _Frames([letterbox(p, imgsz, crop, frame_shape) for p in calib[: cfg.subset_size]], held, source)


def _quantize_settings(cfg: NncfConfig, subset_size: int) -> dict[str, Any]:
    """`nncf.quantize`'s keyword arguments from our settings, but the ignored scope: each step sets its own."""
    import nncf

    preset = nncf.QuantizationPreset.MIXED if cfg.preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE
    settings: dict[str, Any] = {
        "preset": preset,
        "subset_size": subset_size,
        "fast_bias_correction": cfg.fast_bias_correction,
    }
    if cfg.smooth_quant_alpha is not None:  # NNCF applies SmoothQuant only to transformer-type models
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

        alphas = AdvancedSmoothQuantParameters(convolution=cfg.smooth_quant_alpha, matmul=cfg.smooth_quant_alpha)
        settings["model_type"] = nncf.ModelType.TRANSFORMER
        settings["advanced_parameters"] = AdvancedQuantizationParameters(smooth_quant_alphas=alphas)
    return settings


@dataclass(frozen=True)
class _Quantizer:
    """What every step quantizes from and is gated with, so that the steps differ only in their ignored scope: the
    FP32 IR, the calibration inputs and NNCF settings, and the agreement gate with the FP32 IR's own score on it."""

    core: Any
    fp32: Any
    frames: _Frames
    settings: dict[str, Any]  # `nncf.quantize`'s keyword arguments but the ignored scope
    gate: AgreementGate
    reference: float  # the FP32 IR's agreement with itself on the gate frames
    max_drop: float

    def quantize(self, scope: Any) -> Any:
        import nncf

        return nncf.quantize(self.fp32, nncf.Dataset(self.frames.calib), ignored_scope=scope, **self.settings)

    def score(self, model: Any) -> GateResult:
        return GateResult(self.reference, self.gate.score(_ov_infer(self.core, model)), self.max_drop)

    def step(self, name: str, scope: Any) -> _Tried:
        """The FP32 IR quantized with the ignored scope `scope` (an `nncf.IgnoredScope`) and gated."""
        model = self.quantize(scope)
        return _Tried(name, model, self.score(model), frozenset(scope.names))


def _quantizer(
    core: Any,
    fp32: Any,
    frames: _Frames,
    cfg: NncfConfig,
    gate_cfg: ValidateConfig,
    imgsz: int | tuple[int, int],
    crop: Sequence[int] = (),
    frame_shape: Sequence[int] = (),
) -> _Quantizer:
    """The gate scores the FP32 IR once (its reference detections), so every step compares with the same numbers."""
    gate = AgreementGate(_ov_infer(core, fp32), frames.held, imgsz, gate_cfg, crop, frame_shape)
    reference = gate.score(_ov_infer(core, fp32))
    settings = _quantize_settings(cfg, len(frames.calib))
    return _Quantizer(core, fp32, frames, settings, gate, reference, cfg.accuracy_control.max_drop)


@dataclass(frozen=True)
class _Tried:
    """A model one step of the build made: its gate result and the ignored scope it was quantized with."""

    step: str
    model: Any
    result: GateResult
    scope: frozenset[str]


def _recover(
    q: _Quantizer, ac: AccuracyControlConfig, first: _Tried, scope: Any
) -> tuple[list[_Tried], list[dict[str, Any]]]:
    """The recovery steps after a failed gate, cheapest first, each only while the gate still fails: 1. the layers
    known to be sensitive (issue 3: most agreement loss sits in the head's last convs) in float, one re-quantization;
    2. NNCF's ranking search (slow: one compile per layer group). Returns every model made, for `_keep_best`, and the
    steps' record."""
    tried: list[_Tried] = [first]
    steps_run: list[dict[str, Any]] = []
    if first.result.passed:
        return tried, steps_run
    if not ac.enabled:
        log.warning("gate failed (drop %.4f > %.4f) and accuracy_control is off", first.result.drop, ac.max_drop)
        return tried, steps_run
    wider = _with_head(q.fp32, scope)
    if set(wider.names) > set(scope.names):
        log.info(
            "gate failed (drop %.4f > %.4f): keeping the head's sensitive layers in float",
            first.result.drop,
            ac.max_drop,
        )
        scope = wider
        tried.append(q.step("head_scope", scope))
        steps_run.append({"step": "head_scope", **tried[-1].result.as_dict()})
    if not tried[-1].result.passed and ac.search:
        searched, search_steps = _search(q, ac, tried[-1], scope)
        tried += searched
        steps_run += search_steps
    return tried, steps_run


def _with_head(fp32: Any, scope: Any) -> Any:
    """The ignored scope `scope` (an `nncf.IgnoredScope`) with the head's sensitive layers added: Ultralytics' own head
    scope and the branches' last convs. Its types and patterns stay: the search and the re-quantization start from it.
    """
    head = IgnoredScopeConfig(
        ultralytics_head=True, branch_last_conv=True, types=tuple(scope.types), patterns=tuple(scope.patterns)
    )
    return ov_ignored_scope(fp32, head, [*scope.names])


def _search(
    q: _Quantizer, ac: AccuracyControlConfig, start: _Tried, scope: Any
) -> tuple[list[_Tried], list[dict[str, Any]]]:
    """NNCF's accuracy-control search from `start` (quantized with `scope`), then the layers it reverted quantized
    afresh (`_requantize_scope`). Returns the model it ends with (the search's own also when it reverted nothing;
    none when its budget ran out: the candidate stays as it was before) and the steps' record."""
    log.info(
        "gate failed (drop %.4f > %.4f): running NNCF accuracy control (budget %.0f s)",
        start.result.drop, ac.max_drop, ac.search_budget_s,
    )  # fmt: skip
    started = time.perf_counter()
    try:
        model, reverted = _accuracy_control(q, ac, scope, start.model)
    except SearchBudgetSpent as e:
        log.warning("%s: keeping the candidate as it was before the search (gate failed)", e)
        stopped = {"step": "nncf_accuracy_control", "stopped": str(e), **start.result.as_dict()}
        return [], [{**stopped, "seconds": round(time.perf_counter() - started, 1)}]
    result = q.score(model)
    searched = _Tried("nncf_accuracy_control", model, result, start.scope)
    step = {"step": searched.step, "reverted": reverted, **result.as_dict()}
    steps_run = [{**step, "seconds": round(time.perf_counter() - started, 1)}]
    if not reverted:
        return [searched], steps_run
    kept, requantized = _requantize_scope(q, scope, reverted, searched)
    return [kept], [*steps_run, requantized]


def _requantize_scope(
    q: _Quantizer, scope: Any, reverted: list[str], searched: _Tried
) -> tuple[_Tried, dict[str, Any]]:
    """The search's float scope quantized afresh, kept when it agrees more with FP32 than the search's own model.

    NNCF's search reverts layers of a model it has already quantized (and bias-corrected); quantizing from the start
    with those layers in float, as the next build does when it starts from them, recomputes bias correction for the
    new scope. Measured on the demo (`benchmarks/float_scope.py`): 0.990 against the search's 0.973. Either can be
    higher, so the gate decides. Returns the model kept, under this step's name, and the step's record.
    """
    import nncf

    started = time.perf_counter()
    names = sorted(set(scope.names) | set(reverted))
    fresh_scope = nncf.IgnoredScope(names=names, types=list(scope.types), patterns=list(scope.patterns), validate=False)
    fresh = q.quantize(fresh_scope)
    result = q.score(fresh)
    kept = result.candidate > searched.result.candidate
    record = {"step": "requantize_final_scope", "kept": kept, **result.as_dict(),
              "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    log.info(
        "the search's float scope quantized afresh: agreement %.4f against the search's %.4f (%s)",
        result.candidate, searched.result.candidate, "kept" if kept else "the search's model kept",
    )  # fmt: skip
    model, result = (fresh, result) if kept else (searched.model, searched.result)
    return _Tried("requantize_final_scope", model, result, frozenset(names)), record


class SearchBudgetSpent(RuntimeError):
    """NNCF's accuracy-control search ran past `accuracy_control.search_budget_s`."""


def _accuracy_control(q: _Quantizer, ac: AccuracyControlConfig, scope: Any, start: Any) -> tuple[Any, list[str]]:
    """NNCF's `quantize_with_accuracy_control` with the agreement gate as its validation function and `scope` as its
    ignored scope; returns the model and the operations it reverted to float (`_reverted_operations` against
    `start`, the model quantized with the same settings and scope: where the search starts).

    NNCF has no time limit: the validation function, called once per ranked layer group and per reverted group,
    raises `SearchBudgetSpent` once the budget is spent, which ends the search.
    """
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    deadline = time.perf_counter() + ac.search_budget_s

    def validation_fn(compiled: Any, items: Any) -> float:
        if time.perf_counter() > deadline:
            raise SearchBudgetSpent(f"NNCF accuracy control stopped after its budget of {ac.search_budget_s:.0f} s")
        return q.gate.score_outputs([(i, compiled(x)[0]) for i, x in items])

    held = q.gate.inputs  # the gate's letterboxed frames, by index (validation_fn scores them by index)
    restorer = AdvancedAccuracyRestorerParameters(
        max_num_iterations=ac.max_iterations, ranking_subset_size=len(held), num_ranking_workers=1
    )
    extra = {k: v for k, v in q.settings.items() if k != "advanced_parameters"}
    if "advanced_parameters" in q.settings:
        extra["advanced_quantization_parameters"] = q.settings["advanced_parameters"]
    model = nncf.quantize_with_accuracy_control(
        q.fp32,
        nncf.Dataset(q.frames.calib),
        nncf.Dataset(list(enumerate(held)), lambda item: item[1]),
        validation_fn,
        max_drop=ac.max_drop,
        drop_type=nncf.DropType.ABSOLUTE,
        advanced_accuracy_restorer_parameters=restorer,
        ignored_scope=scope,
        **extra,
    )
    return model, _reverted_operations(start, model)


def _reverted_operations(before: Any, after: Any) -> list[str]:
    """The operations quantized in the in-memory IR `before` and float in `after`: what NNCF's accuracy control
    reverted (NNCF 3.4 returns only the model), the final state as NNCF's own closing report lists it (a group it
    reverted and then restored is not listed). A convolution/MatMul reverted gets its float weights back
    (`ov_float_convolutions`); an operation NNCF quantizes on its activations only (an `Add` of a residual block) loses
    the FakeQuantize before it. The next build's ignored scope needs both to reproduce the search's model.
    """
    weights = set(ov_float_convolutions(after)) - set(ov_float_convolutions(before))
    return sorted(weights | (_fake_quantized_inputs(before) - _fake_quantized_inputs(after)))


def _fake_quantized_inputs(model: Any) -> set[str]:
    """Operations of the types NNCF quantizes on their inputs that take a FakeQuantize's output directly (not the
    quantize-agnostic ones such as a MaxPool or Concat after a FakeQuantize, which NNCF never reverts by name)."""
    from nncf.openvino.graph.metatypes.groups import INPUTS_QUANTIZABLE_OPERATIONS

    types = {name for metatype in INPUTS_QUANTIZABLE_OPERATIONS for name in metatype.get_all_aliases()}
    return {
        op.get_friendly_name()
        for op in model.get_ordered_ops()
        if op.get_type_name() in types
        and any(v.get_node().get_type_name() == "FakeQuantize" for v in op.input_values())
    }


def _keep_best(tried: Sequence[_Tried]) -> _Tried:
    """The model the build keeps: the first (fewest layers in float, so fastest) that passes the gate; when none
    passes, the one that agrees most with FP32, the earlier on a tie. Each step only adds layers in float, and NNCF's
    search can end below where it started (the demo at 416x640: from 0.985 to 0.977 with four more float convs), so
    the last step is not always the best one."""
    passing = [t for t in tried if t.result.passed]
    if passing:
        return passing[0]
    return max(tried, key=lambda t: t.result.candidate)  # max keeps the first of equals


def _record(
    q: _Quantizer,
    start_kept: Sequence[str],
    initial: set[str],
    first: _Tried,
    best: _Tried,
    steps_run: list[dict[str, Any]],
    started: float,
) -> dict[str, Any]:
    """What the candidate's metadata records: the frames, the gate before and after recovery, the steps run, the
    layers the kept model has in float, and `float_scope`, where the next build starts (its ignored scope and those
    layers). `initial`: the ignored scope's names the build started from."""
    kept = ov_float_convolutions(best.model)
    return {
        "calibration_frames": len(q.frames.calib),
        "gate_frames_source": q.frames.source,
        "holdout_frames": len(q.frames.held),
        "holdout_boxes": q.gate.boxes,
        "start_kept_in_float": sorted(set(start_kept)),
        "ignored_scope": sorted(initial),
        "gate_first": first.result.as_dict(),
        "gate": best.result.as_dict(),
        "recovery": steps_run,
        "kept_in_float": kept,
        "kept_step": best.step,
        "float_scope": sorted(best.scope | set(kept)),
        "kept_by_recovery": sorted(set(kept) - initial) if steps_run else [],
        "quantize_seconds": round(time.perf_counter() - started, 2),
    }


# --- ONNX Runtime Q/DQ ----------------------------------------------------------------------------------------------


def _ort_infer(path: Path) -> Infer:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


# The compute ops TensorRT runs in INT8 from Q/DQ inputs: NVIDIA ModelOpt's INT8 placement for TensorRT puts Q/DQ
# at their inputs (its partition heads); ops that only move or transform activations stay in float so TensorRT fuses
# them (Conv + SiLU = Conv, Sigmoid, Mul). ModelOpt removes the same activation-only ops (Concat, Split, Reshape,
# Sigmoid, Slice, Transpose...) from ONNX Runtime's QDQ registry and also quantizes pooling and residual Adds through
# its own partitioning, which `quantize_static` has no equivalent of: those stay in float here.
TRT_QDQ_OP_TYPES = ("Conv", "ConvTranspose", "MatMul", "Gemm")
TRT_QDQ_PLACEMENT = "modelopt-style: compute-op inputs, float bias, per-channel weights"  # in trt-qdq cache keys
# ONNX allows FP16 scales (and inputs) on QuantizeLinear/DequantizeLinear from opset 19 (opset 13-18: float32 only);
# TensorRT 10.0's ONNX parser takes opsets 9-20. Ultralytics exports opset 18 here.
QDQ_FP16_OPSET = 19
TRT_QDQ_HIGH_PRECISION = "fp16: opset 19, onnxruntime float16 converter, keep_io_types, topological order"  # cache key


def _topological(graph: Any) -> None:
    """Reorder `graph`'s nodes so each comes after the producers of its inputs (ONNX requires it; ONNX Runtime's
    float16 converter appends its input Casts at the end), keeping the original order otherwise."""
    produced = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in produced for i in n.input)]
        if not ready:
            raise QuantizeError(f"the graph has a cycle or a dangling input at {pending[0].name}")
        for n in ready:
            produced.update(n.output)
        ordered += ready
        pending = [n for n in pending if n not in ready]
    del graph.node[:]
    graph.node.extend(ordered)


def qdq_to_fp16(model: Any) -> Any:
    """The Q/DQ ONNX with everything outside the Q/DQ pairs in FP16, model inputs and outputs kept FP32: what NVIDIA
    ModelOpt's INT8 quantization gives with `high_precision_dtype` fp16, and what the TensorRT 11 migration guide's
    AutoCast step does before a strongly typed build (which takes every type from the graph: an FP32 graph runs
    FP32 kernels outside the INT8 Convs).

    The graph is first raised to opset 19 with ONNX's version converter (FP16 Q/DQ scales need it), then converted
    by ONNX Runtime's float16 converter with `keep_io_types` and nothing blocked: every float initializer and tensor
    becomes FP16, so each QuantizeLinear takes an FP16 input with an FP16 scale (TensorRT wants the two of one type)
    and each DequantizeLinear, its scale FP16, yields FP16 straight into its Conv (no Cast between them to break the
    INT8 fusion). The converter keeps Resize's scales FP32 (`ALWAYS_FLOAT_INPUTS`) and casts only at the graph's
    inputs and outputs."""
    import onnx
    from onnx import version_converter
    from onnxruntime.transformers.float16 import convert_float_to_float16

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < QDQ_FP16_OPSET:
        model = version_converter.convert_version(model, QDQ_FP16_OPSET)
    converted = convert_float_to_float16(model, keep_io_types=True, op_block_list=[])
    _topological(converted.graph)
    onnx.checker.check_model(converted)
    return converted


def trt_qdq_options(model: Any) -> tuple[list[str], dict[str, Any]]:
    """(op_types_to_quantize, extra_options) of `quantize_static` for a Q/DQ ONNX that TensorRT's ONNX parser takes
    and builds strongly typed, set as NVIDIA ModelOpt sets ONNX Runtime for TensorRT (`modelopt.onnx.quantization.
    ort_utils.configure_ort`): no bias quantization (an INT32 bias behind DequantizeLinear is refused: TensorRT's
    DequantizeLinear takes INT8/FP8/INT4/FP4 inputs), symmetric INT8 activations and weights (zero points 0), a Q/DQ
    pair on each float weight, per-channel weight scales on the output-channel axis (Conv: 0, ConvTranspose: 1),
    no op's output quantized for its own sake: only the inputs of `TRT_QDQ_OP_TYPES`."""
    present = {node.op_type for node in model.graph.node}
    extra = {
        "QuantizeBias": False,
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "AddQDQPairToWeight": True,
        "DedicatedQDQPair": False,
        "OpTypesToExcludeOutputQuantization": sorted(present),
        "QDQOpTypePerChannelSupportToAxis": {"Conv": 0, "ConvTranspose": 1},
        "ForceQuantizeNoInputCheck": True,
    }
    return [t for t in TRT_QDQ_OP_TYPES if t in present], extra


def qdq_quantize_onnx(
    fp32_onnx: Path,
    out_onnx: Path,
    images: list[Path],
    cfg: QdqConfig,
    imgsz: int | tuple[int, int],
    gate_cfg: ValidateConfig,
    holdout_fraction: float,
    *,
    for_tensorrt: bool = False,
    crop: Sequence[int] = (),
    frame_shape: Sequence[int] = (),
) -> QuantizeResult:
    """A Q/DQ ONNX of `fp32_onnx` through ONNX Runtime's `quantize_static`, keeping the Ultralytics metadata.

    `for_tensorrt` (method `trt-qdq`): the graph TensorRT's ONNX parser takes and fuses best (`trt_qdq_options`:
    ModelOpt's settings for TensorRT; `CandidateConfig` refuses a trt-qdq candidate without symmetric activations or
    with per-tensor weights). Otherwise (`ort-qdq`, for ONNX Runtime's own CPU kernels):
    ONNX Runtime's defaults, every op it can quantize and INT32 biases, which its QDQ fusions (QLinearConv and the
    QLinear element-wise ops) use.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    calib, held = split_frames(images, holdout_fraction)
    calib = calib[: cfg.subset_size]
    model = onnx.load(str(fp32_onnx))
    input_name = model.graph.input[0].name
    exclude = onnx_nodes_to_exclude(model, cfg.ignored_scope)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calib)

        def get_next(self) -> dict[str, np.ndarray] | None:
            path = next(self.items, None)
            return None if path is None else {input_name: letterbox(path, imgsz, crop, frame_shape)}

    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[cfg.calibration]
    extra: dict[str, Any] = {"ActivationSymmetric": cfg.symmetric_activations, "WeightSymmetric": True}
    op_types: list[str] | None = None  # ONNX Runtime's default: every op type it has a quantizer for
    if for_tensorrt:
        op_types, extra = trt_qdq_options(model)
    if cfg.calibration == "percentile":
        extra["CalibPercentile"] = cfg.percentile
    started = time.perf_counter()
    quantize_static(
        str(fp32_onnx),
        str(out_onnx),
        Reader(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=op_types,
        per_channel=cfg.per_channel,
        activation_type=QuantType.QInt8 if cfg.symmetric_activations else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=method,
        nodes_to_exclude=exclude,
        extra_options=extra,
    )
    quantized = onnx.load(str(out_onnx))
    fp16 = for_tensorrt and cfg.high_precision == "fp16"
    if fp16:
        quantized = qdq_to_fp16(quantized)
    del quantized.metadata_props[:]
    for prop in model.metadata_props:  # Ultralytics' metadata (names, stride, imgsz) so YOLO() loads it
        quantized.metadata_props.add(key=prop.key, value=prop.value)
    onnx.save(quantized, str(out_onnx))
    gate = AgreementGate(_ort_infer(fp32_onnx), held, imgsz, gate_cfg, crop, frame_shape)
    # the graph that ships (`out_onnx`: FP16 outside Q/DQ for trt-qdq's default), never the FP32 Q/DQ before it
    result = GateResult(gate.score(_ort_infer(fp32_onnx)), gate.score(_ort_infer(out_onnx)), 1.0)
    log.info(
        "Q/DQ %s (%s outside Q/DQ): agreement %.4f (FP32 %.4f) on %d held-out frames",
        cfg.calibration,
        "FP16" if fp16 else "FP32",
        result.candidate,
        result.reference,
        len(held),
    )
    return QuantizeResult(
        {
            "calibration_frames": len(calib),
            "holdout_frames": len(held),
            "kept_in_float": exclude,
            "qdq_placement": (
                {
                    "target": "tensorrt",
                    "op_types_quantized": op_types,
                    "quantize_bias": False,
                    "per_channel": True,
                    "high_precision": cfg.high_precision,
                    "opset": next(o.version for o in quantized.opset_import if o.domain in ("", "ai.onnx")),
                }
                if for_tensorrt
                else {"target": "onnxruntime", "op_types_quantized": "onnxruntime-default", "quantize_bias": True}
            ),
            "gate": {k: v for k, v in result.as_dict().items() if k not in ("max_drop", "passed")},
            "quantize_seconds": round(time.perf_counter() - started, 2),
        }
    )
