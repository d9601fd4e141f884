"""Typed view of `params.yaml`: parsed once at the edge (the CLI), passed to tasks as frozen objects.

Unknown keys are errors, not warnings: a typo in `params.yaml` must stop the run rather than be ignored. So is a
key given twice in one mapping (YAML would silently keep the last), and `true`/`false` where a number is expected
(pydantic would read them as 1 and 0).

`params.yaml` is the one source of parameter values. It spells out every field, and every default below equals the
value written there, so a config built in code (`ExtractConfig()`, `BuildConfig(imgsz=320)`, `NncfConfig()` in tests)
means what the shipped file means. `tests/unit/test_params_source.py` fails when a default here and the file disagree
or when the file leaves a field out: change both together. The defaults exist only so code can build partial configs.

One exception, because no candidate in `params.yaml` uses it: `QdqConfig` (the `qdq:` block of `ort-qdq`/`trt-qdq`
candidates). Its defaults are documented in its class below, the one place they live, and the same test pins them.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, model_validator

Backend = Literal["openvino", "onnxruntime", "tensorrt"]
Precision = Literal["fp32", "fp16", "int8"]

# The Ultralytics export format that produces an artifact for each runtime.
EXPORT_FORMAT: dict[str, str] = {"openvino": "openvino", "onnxruntime": "onnx", "tensorrt": "engine"}


def _numeric(annotation: Any) -> bool:
    """Whether a field's type is a number, optionally None or a tuple of numbers."""
    if annotation in (int, float):
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, tuple):
        return any(_numeric(arg) for arg in typing.get_args(annotation) if arg is not Ellipsis)
    return False


def _has_bool(value: Any) -> bool:
    return isinstance(value, bool) or (isinstance(value, list | tuple) and any(isinstance(v, bool) for v in value))


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, data: Any) -> Any:
        """`true` is not a number: pydantic's lax mode would take it as 1 (strict mode would also refuse the
        strings that paths are written as)."""
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                key = field.alias or name
                if key in data and _numeric(field.annotation) and _has_bool(data[key]):
                    raise ValueError(f"{key}: expected a number, got {data[key]!r}")
        return data


class PathsConfig(_Frozen):
    """Every path the workflow reads or writes, relative to the project root."""

    videos: Path = Path("data/videos")
    calibration: Path = Path("data/calibration")
    calibration_yaml: Path = Path("calibration.yaml")
    holdout: Path = Path("data/holdout")
    holdout_frames: Path = Path("data/holdout_frames")  # unlabelled frames of the holdout videos: images/ + manifest
    frame_cache: Path = Path(".cache/frames")  # per-video extracted frames, keyed by video hash and extract params
    model: Path = Path("models/best.pt")
    candidates: Path = Path("models/candidates")
    build_cache: Path = Path(".cache/build")  # content-addressed built candidates (tasks/support/cache.py)
    validation_cache: Path = Path(".cache/validation")  # content-addressed validation reports (validation_cache.py)
    metrics: Path = Path("metrics/validate.json")
    ultralytics_config: Path = Path(".cache/ultralytics")
    plots: Path = Path("metrics/plots")  # plot data (CSV) that dvc.yaml declares
    reports: Path = Path("reports")  # `alpr-ops report` output
    watch_state: Path = Path(".cache/watch.json")  # the videos the watcher last started a rebuild for
    rebuild_lock: Path = Path(".cache/rebuild.lock")  # the project lock: every writer queues on it
    nightly_verdict: Path = Path(".cache/nightly.json")  # the last nightly check's verdict (`alpr-ops status`)
    prefect_home: Path = Path(".cache/prefect")  # `alpr-ops serve`'s local Prefect server: database, results
    label_proposal: Path = Path("data/label_proposal")  # `alpr-ops label propose`: frames + pre-labels to review


class SampleConfig(_Frozen):
    """Synthetic gate footage for the demo (no real footage exists here)."""

    n: int = Field(5, ge=1)
    seconds: float = Field(20.0, gt=0)
    seed: int = 0
    fps: int = Field(15, ge=1)
    width: int = Field(1280, ge=64)
    height: int = Field(720, ge=64)
    holdout_frames: int = Field(60, ge=1)


class ModelConfig(_Frozen):
    """Where the pretrained plate detector comes from and the hash it must have."""

    package: str = "fastanpr==0.1.13"
    member: str = "fastanpr/best.pt"
    sha256: str = Field("58f6ad86f35f09574e13484ead3346ae8cc052facae150041ed4a894ac2f3828", pattern=r"^[0-9a-f]{64}$")
    names: tuple[str, ...] = ("License_Plate",)


class ExtractConfig(_Frozen):
    """Calibration and holdout frames from the gate videos (defaults: `params.yaml` `extract:`)."""

    interval_s: float = Field(0.5, gt=0)
    max_frames_per_video: int = Field(40, ge=1)
    jpeg_quality: int = Field(95, ge=50, le=100)
    keyframe_tolerance_s: float = Field(0.1, ge=0)  # a keyframe this close after a target may stand in for it
    dedup_threshold: float = Field(0.02, ge=0, le=1)  # min mean abs difference (0-1) of 32x32 thumbnails; 0: off
    brightness_bins: int = Field(3, ge=1, le=16)  # stratify each video's frames by brightness; 1: off
    holdout_fraction: float = Field(0.2, ge=0, lt=1)  # share of videos (by hash) whose frames go to the holdout
    workers: int = Field(2, ge=1)  # videos decoded in parallel


Method = Literal["ultralytics", "nncf", "ort-qdq", "trt-qdq"]

# The runtime each of our own quantization methods produces an artifact for (Q/DQ ONNX is not portable: issue 3).
METHOD_BACKEND: dict[str, str] = {"nncf": "openvino", "ort-qdq": "onnxruntime", "trt-qdq": "tensorrt"}


class IgnoredScopeConfig(_Frozen):
    """Layers kept in float. The defaults keep Ultralytics' own head scope (the Detect module's own ops, DFL,
    Sigmoid) and the last conv of each box/class branch, where most of the INT8 agreement loss sits (issue 3).

    Defaults: `ignored_scope:` of `params.yaml`'s `ov-int8-mixed` (also `QdqConfig`'s scope)."""

    ultralytics_head: bool = True
    branch_last_conv: bool = True
    names: tuple[str, ...] = ()
    types: tuple[str, ...] = ()  # OpenVINO op types (nncf) or ONNX op types (Q/DQ)
    patterns: tuple[str, ...] = ()  # regular expressions over node names

    @model_validator(mode="after")
    def _check_patterns(self) -> IgnoredScopeConfig:
        import re

        for pattern in self.patterns:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"ignored_scope.patterns: {pattern!r} is not a regular expression: {e}") from e
        return self


class AccuracyControlConfig(_Frozen):
    """The accuracy gate measured at build time on frames of the held-out videos (`paths.holdout_frames`; without
    them, on calibration frames held out from calibration), and the recovery (NNCF's
    `quantize_with_accuracy_control`) run only when the gate fails.

    Defaults: `accuracy_control:` of `params.yaml`'s `ov-int8-mixed`."""

    enabled: bool = True
    max_drop: float = Field(0.01, gt=0, lt=1)  # agreement mAP50-95 with FP32 the INT8 model may lose
    max_iterations: int = Field(4, ge=1, le=100)  # layer groups reverted to float at most (bounds the time)
    search: bool = True  # after the head step, NNCF's ranking search (minutes at 640 on 2 cores: one compile per group)
    search_budget_s: float = Field(600, gt=0)  # the search stops here and the candidate stays as before it
    holdout_fraction: float = Field(0.25, gt=0, lt=1)  # without held-out video frames: calibration frames kept out


class NncfConfig(_Frozen):
    """NNCF post-training quantization of the OpenVINO IR of the FP32 model.

    Defaults: the `nncf:` block of `params.yaml`'s `ov-int8-mixed` candidate, which spells out every key. A block that
    leaves keys out (or a `method: nncf` candidate without one) gets that candidate's measured settings.
    """

    preset: Literal["performance", "mixed"] = "mixed"
    subset_size: int = Field(300, ge=1)  # calibration frames used (at most those extracted)
    ignored_scope: IgnoredScopeConfig = IgnoredScopeConfig()
    fast_bias_correction: bool = False  # full bias correction: measured better agreement than fast (params.yaml)
    smooth_quant_alpha: float | None = Field(None, gt=0, lt=1)  # None: NNCF's default (no SmoothQuant on convs)
    accuracy_control: AccuracyControlConfig = AccuracyControlConfig()


class QdqConfig(_Frozen):
    """A Q/DQ ONNX from ONNX Runtime's `quantize_static` (run on ONNX Runtime, or built into a TensorRT engine).

    No candidate in `params.yaml` uses this method, so these defaults are documented here and nowhere else (the
    docs/int8-builds.md lists them; `tests/unit/test_params_source.py` pins them). They are the same for both
    methods: a `trt-qdq` candidate must state `qdq: {symmetric_activations: true}` itself (`CandidateConfig` refuses
    it otherwise) rather than get a different hidden default than `ort-qdq`.
    """

    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    percentile: float = Field(99.999, gt=90, le=100)  # only for calibration: percentile
    per_channel: bool = True
    symmetric_activations: bool = False  # ONNX Runtime's asymmetric uint8; TensorRT needs symmetric (zero point 0)
    subset_size: int = Field(64, ge=1)  # calibration frames used (at most those extracted)
    ignored_scope: IgnoredScopeConfig = IgnoredScopeConfig()  # Ultralytics' head scope + branches' last convs
    holdout_fraction: float = Field(0.25, gt=0, lt=1)  # of the calibration frames, kept out to measure agreement
    # trt-qdq only: the type of everything outside the Q/DQ pairs. A strongly typed engine takes its types from the
    # graph, so fp16 converts the graph to FP16 on the host (model inputs and outputs kept FP32), as NVIDIA
    # ModelOpt's high_precision_dtype fp16 does; fp32 ships it as quantize_static writes it. ort-qdq ignores it
    # (ONNX Runtime's CPU QDQ kernels run the rest in FP32).
    high_precision: Literal["fp16", "fp32"] = "fp16"

    @model_validator(mode="after")
    def _check_percentile(self) -> QdqConfig:
        if self.calibration != "percentile" and "percentile" in self.model_fields_set:
            raise ValueError(f"qdq.percentile is used only with calibration: percentile, not {self.calibration}")
        return self


class CandidateConfig(_Frozen):
    """One artifact to build: a runtime and a precision; `backend` defaults to `build.backend`.

    `method` says who quantizes: Ultralytics' exporter (the peer), or ours (`nncf`, `ort-qdq`, `trt-qdq`) with the
    settings under `nncf:` / `qdq:`. Keys a block leaves out take `NncfConfig`'s / `QdqConfig`'s defaults.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
    precision: Precision
    backend: Backend | None = None
    method: Method = "ultralytics"
    nncf: NncfConfig | None = None
    qdq: QdqConfig | None = None

    @model_validator(mode="after")
    def _check_method(self) -> CandidateConfig:
        where = f"build.candidates '{self.name}'"
        if self.method != "ultralytics" and self.precision != "int8":
            raise ValueError(f"{where}: method {self.method} quantizes to int8; set precision: int8")
        if self.nncf is not None and self.method != "nncf":
            raise ValueError(f"{where}: `nncf:` settings need method: nncf (method is {self.method})")
        if self.qdq is not None and self.method not in ("ort-qdq", "trt-qdq"):
            raise ValueError(f"{where}: `qdq:` settings need method: ort-qdq or trt-qdq (method is {self.method})")
        if self.method == "trt-qdq" and (self.qdq is None or not self.qdq.symmetric_activations):
            raise ValueError(
                f"{where}: TensorRT needs symmetric activations; set qdq.symmetric_activations: true"
                " (add `qdq: {symmetric_activations: true}` to the candidate)"
            )
        if self.method == "trt-qdq" and self.qdq is not None and not self.qdq.per_channel:
            raise ValueError(
                f"{where}: trt-qdq quantizes weights per output channel, as NVIDIA ModelOpt does for TensorRT; "
                "remove qdq.per_channel: false"
            )
        if self.method != "ultralytics" and self.backend is not None and self.backend != METHOD_BACKEND[self.method]:
            raise ValueError(
                f"{where}: method {self.method} builds for {METHOD_BACKEND[self.method]}, not backend {self.backend}"
            )
        return self

    @property
    def nncf_settings(self) -> NncfConfig:
        """The `nncf:` block, or `NncfConfig`'s defaults (those of `params.yaml`'s `ov-int8-mixed`)."""
        return self.nncf or NncfConfig()

    @property
    def qdq_settings(self) -> QdqConfig:
        """The `qdq:` block, or `QdqConfig`'s documented defaults (the same for every method)."""
        return self.qdq or QdqConfig()


class BuildConfig(_Frozen):
    """What to build and for which runtime (defaults: `params.yaml` `build:`, its four candidates included)."""

    backend: Backend = "openvino"
    # where TensorRT engines are built and timed: gate (the host exports the ONNX, the gate-build worker of
    # serve.work_pools.tensorrt builds the engine) or host (this machine is the gate's hardware: TensorRT and its GPU)
    tensorrt_on: Literal["gate", "host"] = "gate"
    imgsz: int = Field(640, ge=32, multiple_of=32)
    # camera: INT8 candidates take the footage's aspect, long side imgsz (1280x720 -> 384x640; tasks/support/shape.py);
    # square: every candidate imgsz x imgsz. The FP32 references are square either way.
    shape: Literal["camera", "square"] = "camera"
    # camera shape: at least this many letterbox pixels above and below the frame (tasks/support/shape.py: with almost
    # none, plates near the frame's edge lose box accuracy); 1280x720 at 640: 0 -> 384x640, 16 -> 416x640. 16: chosen
    # by benchmarks/shape_margin.py (docs/measured.md)
    shape_margin: int = Field(16, ge=0)
    # the camera's region of interest the INT8 engines at the camera shape look at (tasks/support/roi.py): auto
    # (learned from the FP32 reference's plates on the calibration frames, tasks/pipeline/roi.py), full (the whole
    # frame: camera shape + shape_margin), or [x1, y1, x2, y2] in frame fractions
    roi: Literal["auto", "full"] | tuple[float, float, float, float] = "auto"
    # auto: the plates' union widened on each side by this share of the frame, and by at least
    # tasks.pipeline.roi.MARGIN_PLATE_HEIGHTS plate heights (the median plate's), then clipped to the frame
    roi_margin: float = Field(0.02, ge=0, lt=0.5)
    roi_min_plates: int = Field(20, ge=1)  # auto: fewer plates found than this, the full frame (the record says why)
    reference: str = "fp32"  # the accuracy reference: mAP drop and agreement are measured against it
    # the speed reference: every speed-up (the promote.min_speedup gate, tables, the trade-off chart) is its p50 over
    # a candidate's; the FP32 model on the runtime our INT8 engines use. null: the accuracy reference times it too
    speed_reference: str | None = "fp32-ov"
    candidates: tuple[CandidateConfig, ...] = (
        CandidateConfig(name="fp32", precision="fp32", backend="onnxruntime", method="ultralytics"),
        CandidateConfig(name="fp32-ov", precision="fp32", backend="openvino", method="ultralytics"),
        CandidateConfig(name="ov-int8", precision="int8", backend="openvino", method="ultralytics"),
        CandidateConfig(name="ort-int8", precision="int8", backend="onnxruntime", method="ultralytics"),
        CandidateConfig(name="ov-int8-mixed", precision="int8", method="nncf", nncf=NncfConfig()),
    )

    @model_validator(mode="after")
    def _check_roi(self) -> BuildConfig:
        if isinstance(self.roi, tuple):
            x1, y1, x2, y2 = self.roi
            if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
                raise ValueError(
                    f"build.roi {list(self.roi)}: [x1, y1, x2, y2] must be frame fractions with 0 <= x1 < x2 <= 1 "
                    "and 0 <= y1 < y2 <= 1 (or auto, or full)"
                )
            if self.shape != "camera":
                raise ValueError(
                    f"build.roi {list(self.roi)} crops the engines at the camera shape, but build.shape is "
                    f"{self.shape}: set build.shape: camera, or build.roi: full"
                )
        return self

    @model_validator(mode="after")
    def _check_candidates(self) -> BuildConfig:
        names = [c.name for c in self.candidates]
        if len(set(names)) != len(names):
            raise ValueError(f"build.candidates: names must be unique, got {names}")
        ref = [c for c in self.candidates if c.name == self.reference]
        if not ref:
            raise ValueError(f"build.reference '{self.reference}' is not one of build.candidates {names}")
        if ref[0].precision != "fp32":
            raise ValueError(f"build.reference '{self.reference}' must have precision fp32, not {ref[0].precision}")
        if self.tensorrt_on == "gate" and self.backend_of(ref[0]) == "tensorrt":
            raise ValueError(
                f"build.reference '{self.reference}' would be a TensorRT engine built on the gate, but the host runs "
                "the FP32 reference (agreement labels, the mAP baseline): give it `backend: onnxruntime` (an FP32 "
                "engine can be a candidate of its own, e.g. {name: trt-fp32, precision: fp32}), or set "
                "build.tensorrt_on: host"
            )
        if self.speed_reference is not None:
            speed = [c for c in self.candidates if c.name == self.speed_reference]
            if not speed:
                raise ValueError(
                    f"build.speed_reference '{self.speed_reference}' is not one of build.candidates {names}: declare "
                    "it (e.g. {name: fp32-ov, precision: fp32, backend: openvino, method: ultralytics}) or set "
                    "build.speed_reference: null to time speed-ups against build.reference"
                )
            if speed[0].precision != "fp32":
                raise ValueError(
                    f"build.speed_reference '{self.speed_reference}' must have precision fp32, not {speed[0].precision}"
                )
            if self.built_on_gate(speed[0]):
                raise ValueError(
                    f"build.speed_reference '{self.speed_reference}' would be built and timed on the gate, but the "
                    "host times every CPU candidate against it: give it a CPU backend or set it to null (an FP32 "
                    "engine timed on the gate is already the basis of the gate engines' speed-ups)"
                )
        return self

    @property
    def speed_reference_name(self) -> str:
        """The candidate every speed-up is measured against (`speed_reference`, else the accuracy reference)."""
        return self.speed_reference or self.reference

    def built_on_gate(self, candidate: CandidateConfig) -> bool:
        """Whether the candidate's engine is built by the gate's worker (the host exports only its ONNX)."""
        return self.tensorrt_on == "gate" and self.backend_of(candidate) == "tensorrt"

    def backend_of(self, candidate: CandidateConfig) -> Backend:
        """The runtime a candidate is built for and validated on (our methods each build for one runtime)."""
        if candidate.method != "ultralytics":
            return METHOD_BACKEND[candidate.method]  # type: ignore[return-value]
        return candidate.backend or self.backend


class ValidateConfig(_Frozen):
    """Accuracy, agreement and latency measurement of every candidate (defaults: `params.yaml` `validate:`)."""

    imgsz: int = Field(640, ge=32, multiple_of=32)
    conf: float = Field(0.001, gt=0, lt=1)
    iou: float = Field(0.7, gt=0, lt=1)
    agreement_conf: float = Field(0.25, gt=0, lt=1)
    warmup: int = Field(10, ge=1)
    runs: int = Field(200, ge=1)
    # a candidate's timed runs stop once they took runs_budget_s, after at least min_runs (or all runs, if fewer):
    # the FP32 references and ONNX Runtime INT8 (50-80 ms) need no 200 runs; close calls are re-timed anyway
    runs_budget_s: float | None = Field(5.0, gt=0)
    min_runs: int = Field(50, ge=1)
    threads: int = Field(2, ge=1)  # pinned for torch, ONNX Runtime and OpenVINO so latencies compare
    batch_sizes: tuple[int, ...] = Field((1, 4, 8), min_length=1)  # throughput batches (if the artifact allows)
    grid_frames: int = Field(6, ge=1)  # frames in the FP32-vs-candidate image grid, worst disagreements first
    # interleaved re-timing: candidates (the reference aside) whose p50 is within `retime_within` of the fastest one's
    # are timed again in one process, A B B A for `retime_rounds` rounds of `retime_runs` runs, because candidates
    # timed one after another in separate processes drift apart by more than each one's own spread. 0 rounds: off.
    retime_within: float = Field(0.25, ge=0)
    retime_rounds: int = Field(6, ge=0)
    retime_runs: int = Field(20, ge=1)
    memory_frames: int = Field(3, ge=1)  # inferences the engine-memory probe runs (tasks/runtime/memory.py)
    # required: no labelled holdout (or one without a single box) stops validation. optional: without one, a rebuild
    # is judged on agreement with FP32 alone (the mAP gates are skipped, never compared 0 against 0).
    labels: Literal["required", "optional"] = "required"
    # how sure a labelled drop is: a paired bootstrap over the holdout's images (both models scored on the same
    # resamples, a fixed seed: the same numbers give the same interval), its central `bootstrap_level` interval
    # reported beside every mAP drop (`map_drop_ci`, `quant_map_drop_ci`, `geometry_map_drop_ci`). 0 resamples: off
    bootstrap_resamples: int = Field(1000, ge=0)
    bootstrap_level: float = Field(0.95, gt=0.5, lt=1)

    @model_validator(mode="after")
    def _check_batches(self) -> ValidateConfig:
        if any(b < 1 for b in self.batch_sizes):
            raise ValueError(f"validate.batch_sizes: every batch size must be >= 1, got {list(self.batch_sizes)}")
        return self


SECRET_QUERY_KEYS = ("token", "key", "secret", "password", "passwd", "sig", "signature", "credential", "auth")


def redact_uri(uri: str) -> str:
    """`uri` as it may be logged or shown: a user name or password in it, and query values whose name says they
    are secret (token, key, signature, ...), replaced by `***`. A tracking URI may carry the server's credentials.
    Anything else is left as written (`sqlite:////abs/path` keeps its slashes)."""
    from urllib.parse import parse_qsl, urlencode

    out = redact_text(uri)
    base, sep, rest = out.partition("?")
    if not sep:
        return out
    query, hash_sep, fragment = rest.partition("#")
    pairs = parse_qsl(query, keep_blank_values=True)
    safe = [(k, "***" if any(s in k.lower() for s in SECRET_QUERY_KEYS) else v) for k, v in pairs]
    return f"{base}?{urlencode(safe, safe='*')}{hash_sep}{fragment}"


_USERINFO = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@'\"]+@")


def redact_text(text: str) -> str:
    """`text` with the user name and password of every URI in it replaced by `***` (for messages and logs that
    may quote a tracking URI)."""
    return _USERINFO.sub(r"\1***@", text)


class TrackingConfig(_Frozen):
    """MLflow tracking and model registry (defaults: `params.yaml` `tracking:`)."""

    uri: str = "sqlite:///mlflow.db"
    artifacts: Path = Path("mlartifacts")
    experiment: str = "alpr-ops"
    registered_model: str = "gate-plate-detector"

    @property
    def shown_uri(self) -> str:
        """The URI for logs and messages, credentials redacted (`redact_uri`)."""
        return redact_uri(self.uri)

    @field_serializer("uri", when_used="json")
    def _redacted(self, uri: str) -> str:
        """Redacted in JSON: Prefect records a flow's parameters (the whole `Params`) as JSON and shows them to anyone
        with access to it. A run restarted from them (`alpr-ops resume`) takes the credentials from its environment
        (`tasks.support.tracking.resolve_uri`)."""
        return redact_uri(uri)


class PromoteConfig(_Frozen):
    """The promotion gates and the deployed gate folder (defaults: `params.yaml` `promote:`)."""

    auto: bool = True  # `rebuild` promotes the winner at its end
    max_map_drop: float = Field(0.01, ge=0, le=1)  # against the square FP32 reference: what the user sees
    # against FP32 at the candidate's own geometry (input shape and crop): what quantization alone cost
    max_quant_drop: float = Field(0.005, ge=0, le=1)
    # agreement mAP50-95 with FP32 at the candidate's own geometry: a good INT8 build agrees at 0.95 or more (demo and
    # held-out footage), Ultralytics' own INT8 exports at 0.83-0.89, a lossy export that the gate exists to stop
    min_agreement: float = Field(0.95, ge=0, le=1)
    max_p95_ms: float = Field(500.0, gt=0)  # inference latency p95 on the validating machine
    min_speedup: float = Field(1.0, gt=0)  # FP32 p50 / candidate p50
    # p50s within this fraction of the fastest passing candidate's (or within the noise the interleaved re-timing
    # measured, if larger) are ties, and the tie goes to the most faithful to FP32
    latency_tie: float = Field(0.05, ge=0, lt=1)
    champion_tolerance: float = Field(0.005, ge=0, le=1)  # mAP50-95 a challenger may lose against the champion
    # the winner's p50 over the champion's, the two timed together interleaved: above this (plus the noise of that
    # timing) an unattended rebuild keeps the champion and leaves the winner as a pending decision (docs/promotion.md).
    # None: no latency comparison with the champion (its other checks still apply)
    max_slowdown: float | None = Field(1.10, ge=1.0)
    smoke_tolerance: float = Field(0.01, ge=0, le=1)  # smoke-test mAP50-95 vs the validated one
    gate_dir: Path = Path("deploy/gate")
    keep_releases: int = Field(5, ge=1)
    allow_unlabelled: bool = False  # promote a rebuild validated without a labelled holdout (validate.labels: optional)


class LabelConfig(_Frozen):
    """Your own footage: the videos reserved for the labelled holdout and the proposal a reviewer corrects
    (defaults: `params.yaml` `label:`)."""

    videos: tuple[str, ...] = ()  # names of videos reserved for labelling; empty: a share chosen by content hash
    fraction: float = Field(0.2, ge=0, lt=1)  # that share, used only until a labelled holdout records its videos
    frames: int = Field(150, ge=1)  # frames proposed for review, spread over videos, brightness and plate/no plate
    prelabel_conf: float = Field(0.1, gt=0, lt=1)  # pre-labels: low, so a reviewer deletes more than draws
    project: str = Field("alpr-ops holdout", min_length=3)  # the Label Studio project's title


class WatchConfig(_Frozen):
    """The watcher on `paths.videos` that starts a rebuild when new videos have landed (issue 6)."""

    poll_s: float = Field(2.0, gt=0)  # how often the folder is scanned (works on network shares, unlike inotify)
    settle_s: float = Field(10.0, gt=0)  # a file has landed once its size and mtime stayed unchanged this long
    debounce_s: float = Field(30.0, ge=0)  # after the last file landed, wait this long for more: one rebuild per burst


class NightlyConfig(_Frozen):
    """The scheduled regression check of the champion on the newest footage (issue 6)."""

    cron: str = "0 2 * * *"  # 02:00 every night
    timezone: str | None = None  # IANA name, e.g. Europe/Paris; None = the serving machine's local time zone
    newest_videos: int = Field(5, ge=1)  # the newest videos (by mtime) in paths.videos whose frames are re-checked
    max_agreement_drop: float = Field(0.05, ge=0, le=1)  # agreement mAP50-95 lost against the promotion-time value
    # mean brightness of the newest frames vs the frames of the videos the champion was built from: |ratio - 1|.
    # Measured: the plate model and its INT8 export keep agreeing on much darker frames, so agreement alone does not
    # say the footage left what the champion was calibrated on; this does.
    max_brightness_change: float = Field(0.35, gt=0, lt=1)
    min_reference_boxes: int = Field(1, ge=0)  # FP32 plates on the newest frames below which they show no plates
    # agreement mAP50-95 with FP32 on the newest frames. Its own floor, lower than promote.min_agreement: promotion
    # picks among candidates on the frames they were gated on, while the nightly asks whether the deployed champion
    # still works on footage it never saw; a small dip is what new footage does (max_agreement_drop watches it),
    # below 0.9 it disagrees with FP32 as often as the lossy exports promotion rejects.
    min_agreement: float = Field(0.9, ge=0, le=1)
    # frames of the newest videos on which the FP32 reference (full frame) finds a plate outside the champion's
    # crop: more than this and the camera's view has changed (a regression; the next rebuild learns the new region).
    # 2: one stray false box is on one frame, a real vehicle outside the region on several (frames are extract.
    # interval_s = 0.5 s apart and a vehicle takes seconds to pass)
    max_frames_outside_roi: int = Field(2, ge=0)


class ServeConfig(_Frozen):
    """Prefect deployments: which work pool builds for which gate hardware (issue 6)."""

    work_pools: dict[str, str] = {"openvino": "gate-cpu", "tensorrt": "gate-orin"}  # build.backend -> work pool
    port: int = Field(4200, ge=1, le=65535)  # `alpr-ops serve`'s local Prefect server (UI and API), on 127.0.0.1
    gate_wait_s: float = Field(1800, gt=0)  # how long the host waits for a gate worker's engine build (issue 14)


class Params(_Frozen):
    """The whole of `params.yaml`; every default equals the file's value (see the module docstring)."""

    paths: PathsConfig = PathsConfig()
    sample: SampleConfig = SampleConfig()
    model: ModelConfig = ModelConfig()
    extract: ExtractConfig = ExtractConfig()
    build: BuildConfig = BuildConfig()
    validate_: ValidateConfig = Field(ValidateConfig(), alias="validate")
    tracking: TrackingConfig = TrackingConfig()
    promote: PromoteConfig = PromoteConfig()
    label: LabelConfig = LabelConfig()
    watch: WatchConfig = WatchConfig()
    nightly: NightlyConfig = NightlyConfig()
    serve: ServeConfig = ServeConfig()

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def rooted(self, root: Path) -> Params:
        """The same params with every relative path made absolute under `root` (the project folder)."""

        def fix(p: Path) -> Path:
            return p if p.is_absolute() else root / p

        paths = self.paths.model_copy(update={k: fix(v) for k, v in self.paths.model_dump().items()})
        tracking = self.tracking.model_copy(update={"artifacts": fix(self.tracking.artifacts)})
        promote = self.promote.model_copy(update={"gate_dir": fix(self.promote.gate_dir)})
        uri = self.tracking.uri
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            tracking = tracking.model_copy(update={"uri": f"sqlite:///{root / uri.removeprefix('sqlite:///')}"})
        return self.model_copy(update={"paths": paths, "tracking": tracking, "promote": promote})


class ConfigError(ValueError):
    """`params.yaml` is missing or wrong; the message names the file and the key."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (SafeLoader keeps the last one silently)."""


def _unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise DuplicateKeyError(f"line {line}: key {key!r} is given twice (first at line {seen[key]})")
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


class DuplicateKeyError(ValueError):
    """A YAML mapping gives the same key twice."""


def load_params(path: Path) -> Params:
    """Parse `params.yaml` into `Params`, with paths made absolute relative to the file's folder."""
    if not path.is_file():
        raise ConfigError(f"{path}: not found")
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}  # a SafeLoader: no arbitrary objects
    except DuplicateKeyError as e:
        raise ConfigError(f"{path}: {e}; keep one") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        params = Params.model_validate(raw)
    except ValidationError as e:
        lines = [f"  {'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()]
        raise ConfigError(f"{path}: invalid parameters:\n" + "\n".join(lines)) from e
    return params.rooted(path.resolve().parent)
