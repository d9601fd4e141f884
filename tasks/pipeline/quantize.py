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
from tasks.support.config import IgnoredScopeConfig, NncfConfig, QdqConfig, ValidateConfig
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


def frame_input(image: Path, imgsz: int | tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """The NCHW float32 input the gate's `Detector` feeds a model of a square side `imgsz` or of (height, width)
    `imgsz` (the edge letterbox, equal to Ultralytics' predictor's), and how the frame was fitted into it."""
    import cv2

    frame = cv2.imread(str(image))
    if frame is None:
        raise QuantizeError(f"{image}: cannot be read as an image", remedy=Remedy.EXTRACT)
    shape = (imgsz, imgsz) if isinstance(imgsz, int) else (int(imgsz[0]), int(imgsz[1]))
    batch, boxes = preprocess([frame], shape)
    return batch, boxes[0]


def letterbox(image: Path, imgsz: int | tuple[int, int]) -> np.ndarray:
    """The model input of `image` alone (`frame_input`): what calibration feeds NNCF and ONNX Runtime."""
    return frame_input(image, imgsz)[0]


class AgreementGate:
    """Agreement mAP50-95 with the FP32 reference on held-out frames: the one metric (`tasks.pipeline.scoring.score`)
    on raw outputs decoded as the gate decodes them (edge `decode`, boxes back in frame pixels).

    In memory (no export to disk per evaluation) because NNCF's accuracy control evaluates many variants: it hands
    `score_outputs` the raw outputs of `inputs` by frame index.
    """

    def __init__(
        self, reference: Infer, images: Sequence[Path], imgsz: int | tuple[int, int], cfg: ValidateConfig
    ) -> None:
        loaded = [frame_input(p, imgsz) for p in images]
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
) -> QuantizeResult:
    """Quantize the FP32 IR `fp32_xml` with NNCF into `out_xml`; recover accuracy when the gate fails.

    `imgsz`: the IR's input, a square side or (height, width); calibration and gate frames are letterboxed to it.
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
    ac = cfg.accuracy_control
    if len(gate_images) >= 2:
        calib, held, source = list(images), list(gate_images), "holdout_videos"
    else:
        calib, held = split_frames(images, ac.holdout_fraction)
        source = "calibration_split"
        log.warning(
            "no frames of held-out videos for the INT8 gate (paths.holdout_frames): gating on %d calibration frames "
            "left out of calibration, which scores INT8 optimistically",
            len(held),
        )
    calib = calib[: cfg.subset_size]
    calib_inputs = [letterbox(p, imgsz) for p in calib]
    held_inputs = [letterbox(p, imgsz) for p in held]
    scope = ov_ignored_scope(fp32, cfg.ignored_scope, start_kept)
    initial = set(scope.names)
    preset = nncf.QuantizationPreset.MIXED if cfg.preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE
    kwargs: dict[str, Any] = {
        "preset": preset,
        "subset_size": len(calib_inputs),
        "fast_bias_correction": cfg.fast_bias_correction,
        "ignored_scope": scope,
    }
    if cfg.smooth_quant_alpha is not None:  # NNCF applies SmoothQuant only to transformer-type models
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

        alphas = AdvancedSmoothQuantParameters(convolution=cfg.smooth_quant_alpha, matmul=cfg.smooth_quant_alpha)
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
        kwargs["advanced_parameters"] = AdvancedQuantizationParameters(smooth_quant_alphas=alphas)
    started = time.perf_counter()
    quantized = nncf.quantize(fp32, nncf.Dataset(calib_inputs), **kwargs)
    gate = AgreementGate(_ov_infer(core, fp32), held, imgsz, gate_cfg)
    first = GateResult(gate.score(_ov_infer(core, fp32)), gate.score(_ov_infer(core, quantized)), ac.max_drop)
    log.info(
        "nncf %s: agreement %.4f (FP32 %.4f) on %d held-out frames (%s)",
        cfg.preset,
        first.candidate,
        first.reference,
        len(held),
        source,
    )
    final, steps_run, reverted = first, [], []
    tried = [_Tried("first", quantized, first, frozenset(scope.names))]  # what each step made, for _keep_best
    if not first.passed and ac.enabled:
        # 1. the layers known to be sensitive (issue 3: most agreement loss sits in the head's last convs): one cheap
        #    re-quantization; 2. only if that is not enough, NNCF's ranking search (slow: one compile per layer group)
        head = IgnoredScopeConfig(ultralytics_head=True, branch_last_conv=True)
        wider = ov_ignored_scope(fp32, head, [*scope.names])
        if set(wider.names) > set(scope.names):
            log.info(
                "gate failed (drop %.4f > %.4f): keeping the head's sensitive layers in float", first.drop, ac.max_drop
            )
            kwargs["ignored_scope"] = scope = wider
            quantized = nncf.quantize(fp32, nncf.Dataset(calib_inputs), **kwargs)
            final = GateResult(first.reference, gate.score(_ov_infer(core, quantized)), ac.max_drop)
            steps_run.append({"step": "head_scope", **final.as_dict()})
            tried.append(_Tried("head_scope", quantized, final, frozenset(scope.names)))
        if not final.passed and ac.search:
            log.info(
                "gate failed (drop %.4f > %.4f): running NNCF accuracy control (budget %.0f s)",
                final.drop,
                ac.max_drop,
                ac.search_budget_s,
            )
            search_started, searched = time.perf_counter(), False
            try:
                quantized, reverted = _accuracy_control(fp32, calib_inputs, held_inputs, gate, cfg, kwargs)
            except SearchBudgetSpent as e:
                log.warning("%s: keeping the candidate as it was before the search (gate failed)", e)
                steps_run.append({"step": "nncf_accuracy_control", "stopped": str(e), **final.as_dict()})
            else:
                searched = True
                final = GateResult(first.reference, gate.score(_ov_infer(core, quantized)), ac.max_drop)
                steps_run.append({"step": "nncf_accuracy_control", "reverted": reverted, **final.as_dict()})
            steps_run[-1]["seconds"] = round(time.perf_counter() - search_started, 1)
            if reverted:
                quantized, final = _requantize_scope(fp32, calib_inputs, kwargs, scope, reverted, gate, core, quantized,
                                                     final, steps_run)  # fmt: skip
            if searched:  # the search's model (also when it reverted nothing), or its scope quantized afresh
                tried.append(_Tried(steps_run[-1]["step"], quantized, final, frozenset(scope.names) | set(reverted)))
    elif not first.passed:
        log.warning("gate failed (drop %.4f > %.4f) and accuracy_control is off", first.drop, ac.max_drop)
    best = _keep_best(tried)
    if best is not tried[-1]:
        log.info(
            "recovery ended at agreement %.4f, not above the %s step's %.4f: keeping that step's model (fewer layers "
            "in float)", tried[-1].result.candidate, best.step, best.result.candidate,
        )  # fmt: skip
    quantized, final = best.model, best.result
    recovered = bool(steps_run)
    kept = ov_float_convolutions(quantized)
    out_xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, out_xml, compress_to_fp16=False)
    info = {
        "calibration_frames": len(calib_inputs),
        "gate_frames_source": source,
        "holdout_frames": len(held_inputs),
        "holdout_boxes": gate.boxes,
        "start_kept_in_float": sorted(set(start_kept)),
        "ignored_scope": sorted(initial),
        "gate_first": first.as_dict(),
        "gate": final.as_dict(),
        "recovery": steps_run,
        "kept_in_float": kept,
        "kept_step": best.step,
        "float_scope": sorted(best.scope | set(kept)),  # where the next build starts
        "kept_by_recovery": sorted(set(kept) - initial) if recovered else [],
        "quantize_seconds": round(time.perf_counter() - started, 2),
    }
    return QuantizeResult(info)


@dataclass(frozen=True)
class _Tried:
    """A model one step of the build made: its gate result and the ignored scope it was quantized with."""

    step: str
    model: Any
    result: GateResult
    scope: frozenset[str]


def _keep_best(tried: Sequence[_Tried]) -> _Tried:
    """The model the build keeps: the first (fewest layers in float, so fastest) that passes the gate; when none
    passes, the one that agrees most with FP32, the earlier on a tie. Each step only adds layers in float, and NNCF's
    search can end below where it started (the demo at 416x640: from 0.985 to 0.977 with four more float convs), so
    the last step is not always the best one."""
    passing = [t for t in tried if t.result.passed]
    if passing:
        return passing[0]
    return max(tried, key=lambda t: t.result.candidate)  # max keeps the first of equals


class SearchBudgetSpent(RuntimeError):
    """NNCF's accuracy-control search ran past `accuracy_control.search_budget_s`."""


class _RevertedOperations(logging.Handler):
    """The operations NNCF's accuracy control reverts to float, as it logs them (INFO, one name a line): the only
    place `quantize_with_accuracy_control` names them. Its weights-only view (`ov_float_convolutions`) misses the
    activation quantizers it removed, so the next build's ignored scope needs these names to reproduce the result.
    A group it reverted and then restored (a step back) stays listed: the next build keeps a little more in float.
    """

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.names: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Reverted "):
            self.names += [line.strip() for line in message.splitlines()[1:] if line.strip()]


def _requantize_scope(
    fp32: Any,
    calib: list[np.ndarray],
    kwargs: dict[str, Any],
    scope: Any,
    reverted: list[str],
    gate: AgreementGate,
    core: Any,
    searched: Any,
    searched_result: GateResult,
    steps_run: list[dict[str, Any]],
) -> tuple[Any, GateResult]:
    """The search's float scope quantized afresh, kept when it agrees more with FP32 than the search's own model.

    NNCF's search reverts layers of a model it has already quantized (and bias-corrected); quantizing from the start
    with those layers in float, as the next build does when it starts from them, recomputes bias correction for the
    new scope. Measured on the demo (`benchmarks/float_scope.py`): 0.990 against the search's 0.973. Either can be
    higher, so the gate decides.
    """
    import nncf

    started = time.perf_counter()
    names = sorted(set(scope.names) | set(reverted))
    fresh_scope = nncf.IgnoredScope(names=names, types=list(scope.types), patterns=list(scope.patterns), validate=False)
    fresh = nncf.quantize(fp32, nncf.Dataset(calib), **{**kwargs, "ignored_scope": fresh_scope})
    result = GateResult(searched_result.reference, gate.score(_ov_infer(core, fresh)), searched_result.max_drop)
    kept = result.candidate > searched_result.candidate
    steps_run.append(
        {"step": "requantize_final_scope", "kept": kept, **result.as_dict(),
         "seconds": round(time.perf_counter() - started, 1)}
    )  # fmt: skip
    log.info(
        "the search's float scope quantized afresh: agreement %.4f against the search's %.4f (%s)",
        result.candidate, searched_result.candidate, "kept" if kept else "the search's model kept",
    )  # fmt: skip
    return (fresh, result) if kept else (searched, searched_result)


def _accuracy_control(
    fp32: Any, calib: list[np.ndarray], held: list[np.ndarray], gate: AgreementGate, cfg: NncfConfig, kwargs: dict
) -> tuple[Any, list[str]]:
    """NNCF's `quantize_with_accuracy_control` with the agreement gate as its validation function; returns the model
    and the operations it reverted to float.

    NNCF has no time limit: the validation function, called once per ranked layer group and per reverted group,
    raises `SearchBudgetSpent` once the budget is spent, which ends the search.
    """
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    ac = cfg.accuracy_control
    deadline = time.perf_counter() + ac.search_budget_s
    nncf_log = logging.getLogger("nncf")  # its own handlers stay at the level nncf.set_log_level gave them
    level = nncf_log.level

    def validation_fn(compiled: Any, items: Any) -> float:
        if time.perf_counter() > deadline:
            raise SearchBudgetSpent(f"NNCF accuracy control stopped after its budget of {ac.search_budget_s:.0f} s")
        return gate.score_outputs([(i, compiled(x)[0]) for i, x in items])

    restorer = AdvancedAccuracyRestorerParameters(
        max_num_iterations=ac.max_iterations, ranking_subset_size=len(held), num_ranking_workers=1
    )
    extra = {k: v for k, v in kwargs.items() if k != "advanced_parameters"}
    if "advanced_parameters" in kwargs:
        extra["advanced_quantization_parameters"] = kwargs["advanced_parameters"]
    reverted = _RevertedOperations()
    nncf_log.addHandler(reverted)
    nncf_log.setLevel(logging.INFO)
    try:
        model = nncf.quantize_with_accuracy_control(
            fp32,
            nncf.Dataset(calib),
            nncf.Dataset(list(enumerate(held)), lambda item: item[1]),
            validation_fn,
            max_drop=ac.max_drop,
            drop_type=nncf.DropType.ABSOLUTE,
            advanced_accuracy_restorer_parameters=restorer,
            **extra,
        )
    finally:
        nncf_log.removeHandler(reverted)
        nncf_log.setLevel(level)
    return model, sorted(set(reverted.names))


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
            return None if path is None else {input_name: letterbox(path, imgsz)}

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
    del quantized.metadata_props[:]
    for prop in model.metadata_props:  # Ultralytics' metadata (names, stride, imgsz) so YOLO() loads it
        quantized.metadata_props.add(key=prop.key, value=prop.value)
    onnx.save(quantized, str(out_onnx))
    gate = AgreementGate(_ort_infer(fp32_onnx), held, imgsz, gate_cfg)
    result = GateResult(gate.score(_ort_infer(fp32_onnx)), gate.score(_ort_infer(out_onnx)), 1.0)
    log.info(
        "Q/DQ %s: agreement %.4f (FP32 %.4f) on %d held-out frames",
        cfg.calibration,
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
                {"target": "tensorrt", "op_types_quantized": op_types, "quantize_bias": False, "per_channel": True}
                if for_tensorrt
                else {"target": "onnxruntime", "op_types_quantized": "onnxruntime-default", "quantize_bias": True}
            ),
            "gate": {k: v for k, v in result.as_dict().items() if k not in ("max_drop", "passed")},
            "quantize_seconds": round(time.perf_counter() - started, 2),
        }
    )
