"""The TensorRT path: real where `tensorrt` imports and a CUDA GPU exists, a clear refusal elsewhere."""

import importlib.util
from pathlib import Path

import pytest

from tasks.pipeline.build import BackendUnavailable, build_candidates, check_tensorrt
from tasks.support.config import BuildConfig, CandidateConfig

pytestmark = [pytest.mark.integration, pytest.mark.tensorrt]


def _gpu() -> str:
    """Why no engine can be built here ("" when one can): the gate's own device query (`device_info`: TensorRT,
    Polygraphy's libcudart, a CUDA device), never PyTorch, which the gate does not have."""
    if importlib.util.find_spec("tensorrt") is None:
        return "no tensorrt package"
    from tasks.edge.tensorrt import TensorRTUnavailable, device_info

    try:
        device_info()
    except TensorRTUnavailable as e:
        return f"no CUDA GPU usable by TensorRT ({e})"
    return ""


_MISSING = _gpu()
HAVE_TRT = not _MISSING
SKIP_REASON = f"TensorRT engines need the tensorrt package and a CUDA GPU; this machine has {_MISSING}"


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is available here: the refusal path does not apply")
def test_tensorrt_backend_refuses_with_the_reason_and_the_fix() -> None:
    with pytest.raises(BackendUnavailable) as err:
        check_tensorrt()
    message = str(err.value)
    assert "TensorRT backend unavailable here" in message
    assert "build.backend: openvino" in message
    assert ("tensorrt` Python package" in message) or ("no CUDA GPU" in message)


def tensorrt_build(*precisions: str) -> BuildConfig:
    """The FP32 ONNX reference plus one TensorRT engine per precision (their backend comes from build.backend), built
    here (tensorrt_on: host: this machine is the gate's hardware). tensorrt_on: gate is test_gate_rebuild.py's, and
    its gate side `test_gate_side_build_times_and_checks_an_engine_without_pytorch` below."""
    engines = tuple(CandidateConfig(name=f"trt-{p}", precision=p) for p in precisions)
    reference = CandidateConfig(name="fp32", precision="fp32", backend="onnxruntime")
    return BuildConfig(
        backend="tensorrt", tensorrt_on="host", imgsz=320, speed_reference=None, candidates=(reference, *engines)
    )


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is available here: the refusal path does not apply")
def test_tensorrt_build_fails_before_building_anything(built: tuple, plate_model: Path, tmp_path: Path) -> None:
    params, _ = built
    out = tmp_path / "candidates"
    with pytest.raises(BackendUnavailable):
        build_candidates(
            plate_model, params.paths.calibration_yaml, out, tensorrt_build("int8"), params.model.sha256, "h"
        )
    assert not out.exists(), "TensorRT was checked only after other candidates were built"


@pytest.mark.skipif(not HAVE_TRT, reason=SKIP_REASON)
def test_tensorrt_int8_engine_builds_and_validates(built: tuple, plate_model: Path, tmp_path: Path) -> None:
    from tasks.pipeline.validate import run_validation

    params, _ = built
    cfg = tensorrt_build("fp16", "int8")
    built_trt = build_candidates(
        plate_model, params.paths.calibration_yaml, tmp_path / "c", cfg, params.model.sha256, "h"
    )
    assert [c.path.suffix for c in built_trt] == [".onnx", ".engine", ".engine"]
    metrics = run_validation(built_trt, params.paths.holdout, "fp32", params.validate_).metrics
    assert metrics["trt-int8"]["agreement_map50"] > 0.5


def test_engine_header_round_trips_and_an_engine_without_its_device_is_refused(tmp_path: Path) -> None:
    from tasks.edge.tensorrt import EngineMismatch, check_engine, read_engine, write_engine

    path = write_engine(tmp_path / "m.engine", {"stride": 32, "names": {"0": "plate"}}, b"\x00engine-bytes")
    assert read_engine(path) == ({"stride": 32, "names": {"0": "plate"}}, b"\x00engine-bytes")
    with pytest.raises(EngineMismatch, match="does not record its GPU"):
        check_engine(path)
    (tmp_path / "raw.engine").write_bytes(b"\xff\xfe\xfd\xfcnot json")
    with pytest.raises(EngineMismatch, match="no metadata header"):
        read_engine(tmp_path / "raw.engine")


@pytest.mark.skipif(not HAVE_TRT, reason=SKIP_REASON)
def test_strongly_typed_qdq_engine_records_its_device_and_refuses_another(
    built: tuple, plate_model: Path, tmp_path: Path
) -> None:
    from tasks.edge.tensorrt import EngineMismatch, check_engine, read_engine, with_device, write_engine
    from tasks.pipeline.validate import run_validation

    params, _ = built
    ours = CandidateConfig(name="trt-qdq", precision="int8", method="trt-qdq", qdq={"symmetric_activations": True})
    cfg = tensorrt_build().model_copy(update={"candidates": (tensorrt_build().candidates[0], ours)})
    out = build_candidates(
        plate_model, params.paths.calibration_yaml, tmp_path / "c", cfg, params.model.sha256, "h", gate=params.validate_
    )
    engine = out[1].path
    assert engine.suffix == ".engine"
    device = check_engine(engine)
    assert {"gpu", "compute_capability", "tensorrt"} <= set(device)
    metrics = run_validation(out, params.paths.holdout, "fp32", params.validate_).metrics
    assert metrics["trt-qdq"]["agreement_map50"] > 0.5
    header, blob = read_engine(engine)
    assert engine.with_suffix(".plan").read_bytes() == blob  # the plain plan, for trtexec / DeepStream / C++
    assert out[1].tensorrt["plan"] == engine.with_suffix(".plan").name and out[1].tensorrt["device"] == device
    write_engine(engine, with_device(header, {**device, "gpu": "some other GPU"}), blob)
    with pytest.raises(EngineMismatch, match="some other GPU"):
        check_engine(engine)


def test_an_engine_built_for_another_gpu_is_refused_before_any_loader_runs(tmp_path: Path) -> None:
    from tasks.edge.tensorrt import EngineMismatch, ensure_runnable, write_engine

    device = {"gpu": "Orin (nvgpu)", "compute_capability": "8.7", "tensorrt": "10.3.0"}
    engine = write_engine(tmp_path / "m.engine", {"stride": 32, "device": device}, b"\x00engine-bytes")
    with pytest.raises(EngineMismatch, match=r"built for 'Orin \(nvgpu\)'"):
        ensure_runnable(engine)
    ensure_runnable(tmp_path / "m.onnx")  # other formats are not TensorRT's to refuse


# --- the Q/DQ ONNX our trt-qdq candidates hand to TensorRT's parser, checked on the CPU -----------------------------

# TensorRT 10's ONNX parser: "TensorRT 10.0 supports operators in the inclusive range of opset 9 to opset 20"
# (onnx/onnx-tensorrt, branch 10.0-GA, docs/operators.md; later 10.x releases extend the top, never the bottom).
# Same file: DequantizeLinear takes INT8, FP8, INT4 (FP4 from 10.8) with `x_zero_point` zero; QuantizeLinear's
# `y_zero_point` must be 0.
TRT10_OPSETS = range(9, 21)
COMPUTE_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}  # what TensorRT runs in INT8 from Q/DQ inputs
NEVER_QUANTIZED = {"Sigmoid", "Reshape"}  # activation-only ops whose outputs feed no compute op in this detector
ACTIVATION_ONLY = {"Sigmoid", "Concat", "Split", "Reshape", "Mul", "Add", "Resize", "MaxPool", "Softmax", "Transpose"}


def tensorrt_qdq_violations(model) -> tuple[list[str], dict[str, int]]:
    """What in a Q/DQ ONNX breaks TensorRT 10's documented ONNX-parser rules, or the placement TensorRT fuses best
    (Q/DQ at the inputs of compute ops only, as NVIDIA ModelOpt places them); and counts of what was checked."""
    from onnx import TensorProto, numpy_helper, shape_inference

    model = shape_inference.infer_shapes(model)
    graph = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    init_types = {t.name: t.data_type for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            inits[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
            init_types[node.output[0]] = node.attribute[0].t.data_type
    types = {**init_types}
    for v in [*graph.value_info, *graph.input, *graph.output]:
        types.setdefault(v.name, v.type.tensor_type.elem_type)
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i, name in enumerate(n.input):
            consumers.setdefault(name, []).append((n, i))
    bad: list[str] = []
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    if opsets.get("ai.onnx") not in TRT10_OPSETS:
        bad.append(f"opset {opsets.get('ai.onnx')} outside TensorRT 10's {TRT10_OPSETS.start}-{TRT10_OPSETS.stop - 1}")
    bad += [
        f"{n.name}: {n.domain}::{n.op_type} is not an ONNX op" for n in graph.node if n.domain not in ("", "ai.onnx")
    ]
    counts = {"weight_qdq": 0, "activation_q": 0, "per_channel_scales": 0}
    for n in graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        attr = {a.name: a for a in n.attribute}
        zp = n.input[2] if len(n.input) > 2 and n.input[2] else None
        if zp is None:
            bad.append(f"{n.name}: no zero point (defaults to uint8)")
        elif init_types.get(zp) != TensorProto.INT8:
            bad.append(f"{n.name}: zero point {TensorProto.DataType.Name(init_types.get(zp, 0))}, not INT8")
        elif (inits[zp] != 0).any():
            bad.append(f"{n.name}: zero point not 0")
        if n.op_type == "DequantizeLinear" and types.get(n.input[0]) not in (None, TensorProto.INT8):
            bad.append(f"{n.name}: DequantizeLinear input {TensorProto.DataType.Name(types[n.input[0]])}, not INT8")
        scale = inits.get(n.input[1])
        if scale is None:
            bad.append(f"{n.name}: scale is not a constant")
            continue
        if n.op_type == "QuantizeLinear":
            if n.input[0] not in inits:
                counts["activation_q"] += 1
                after = [c for dq in consumers.get(n.output[0], []) for c in consumers.get(dq[0].output[0], [])]
                if not any(c.op_type in COMPUTE_OPS for c, _ in after):
                    bad.append(f"{n.name}: quantizes {n.input[0]}, which feeds no compute op ({COMPUTE_OPS})")
                src = producer.get(n.input[0])
                if src is not None and src.op_type in NEVER_QUANTIZED:
                    bad.append(f"{n.name}: Q/DQ on the output of {src.op_type} {src.name}")
            continue
        # DequantizeLinear: a weight (constant, or the Q of a constant) or an activation
        q = producer.get(n.input[0])
        weight = n.input[0] in inits or (q is not None and q.op_type == "QuantizeLinear" and q.input[0] in inits)
        uses = consumers.get(n.output[0], [])
        if scale.size > 1:
            counts["per_channel_scales"] += 1
            axis = attr["axis"].i if "axis" in attr else 1
            if not weight or axis != 0:
                bad.append(
                    f"{n.name}: per-channel scale ({scale.size}) on {'a weight' if weight else 'an activation'}"
                    f" with axis {axis}"
                )
        if weight:
            counts["weight_qdq"] += 1
            for c, i in uses:
                if c.op_type in COMPUTE_OPS and i == 2:
                    bad.append(f"{n.name}: quantized bias of {c.name}")
                elif c.op_type == "Conv" and i == 1:
                    w = inits[q.input[0]] if n.input[0] not in inits else inits[n.input[0]]
                    if scale.size != w.shape[0]:
                        bad.append(f"{n.name}: {scale.size} scales for the {w.shape[0]} output channels of {c.name}")
                else:
                    bad.append(f"{n.name}: weight Q/DQ feeding {c.op_type} input {i}")
            if n.input[0] in inits:
                bad.append(f"{n.name}: weight stored as INT8 (no Q/DQ pair on the weight)")
    for n in graph.node:  # activation-only ops are not quantized themselves: none reads a DQ that only it reads
        if n.op_type in ACTIVATION_ONLY:
            for name in n.input:
                dq = producer.get(name)
                if (
                    dq is not None
                    and dq.op_type == "DequantizeLinear"
                    and all(c.op_type in ACTIVATION_ONLY for c, _ in consumers.get(name, []))
                ):
                    bad.append(f"{n.name}: {n.op_type} reads a DequantizeLinear that feeds no compute op")
    return bad, counts


def fp16_violations(model) -> tuple[list[str], dict[str, int]]:
    """What in a trt-qdq ONNX built with `qdq.high_precision: fp16` breaks the rules of an FP16-outside-Q/DQ graph
    for a strongly typed TensorRT build: ONNX allows FP16 Q/DQ scales only from opset 19; TensorRT wants a
    QuantizeLinear's scale of its input's type; a Cast between a DequantizeLinear and its Conv can stop the INT8
    fusion, so each quantized Conv reads its DequantizeLinears directly; every float tensor is FP16 except where a
    rule needs FP32 (the model's input and output, kept FP32; Resize's scales, which ONNX types float32)."""
    from onnx import TensorProto, shape_inference

    model = shape_inference.infer_shapes(model)
    graph = model.graph
    types = {t.name: t.data_type for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant":
            types[n.output[0]] = n.attribute[0].t.data_type
    for v in [*graph.value_info, *graph.input, *graph.output]:
        types.setdefault(v.name, v.type.tensor_type.elem_type)
    producer = {o: n for n in graph.node for o in n.output}
    bad: list[str] = []
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 19:
        bad.append(f"opset {opset}: FP16 Q/DQ scales need opset 19")
    counts = {"conv_reads_dq": 0, "fp16_scales": 0, "fp32_tensors": 0}
    for n in graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            scale = types.get(n.input[1])
            if scale != TensorProto.FLOAT16:
                bad.append(f"{n.name}: scale {TensorProto.DataType.Name(scale or 0)}, not FLOAT16")
            else:
                counts["fp16_scales"] += 1
            if n.op_type == "QuantizeLinear" and types.get(n.input[0]) != scale:
                bad.append(f"{n.name}: input {TensorProto.DataType.Name(types.get(n.input[0], 0))}, scale another")
        if n.op_type == "Conv":
            feeds = [producer.get(i) for i in n.input[:2]]
            if any(f is not None and f.op_type == "DequantizeLinear" for f in feeds):
                if not all(f is not None and f.op_type == "DequantizeLinear" for f in feeds):
                    bad.append(f"{n.name}: a quantized Conv whose inputs are not both read from DequantizeLinear")
                counts["conv_reads_dq"] += 1
            for f in feeds:
                source = producer.get(f.input[0]) if f is not None and f.op_type == "Cast" else None
                if source is not None and source.op_type == "DequantizeLinear":
                    bad.append(f"{n.name}: a Cast between its DequantizeLinear and itself")
    allowed = {i.name for i in graph.input} | {o.name for o in graph.output}
    allowed |= {n.input[2] for n in graph.node if n.op_type == "Resize" and len(n.input) > 2 and n.input[2]}
    for name, t in types.items():
        if t == TensorProto.FLOAT:
            counts["fp32_tensors"] += 1
            if name not in allowed:
                bad.append(f"{name}: FP32 outside the model's input/output and Resize's scales")
    return bad, counts


def handed_to_tensorrt(
    plate_model: Path, sample_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **qdq: object
) -> tuple[Path, list[Path], dict]:
    """Build a trt-qdq candidate at imgsz 160 up to the ONNX it hands TensorRT (`build_strongly_typed_engine` is
    replaced by a copy of its input): that ONNX, the ONNX files the agreement gate scored (ONNX Runtime sessions
    opened by `quantize._ort_infer`, copied as they were when scored) and what quantization recorded."""
    import shutil

    import tasks.edge.tensorrt as trt_files
    from tasks.pipeline import quantize
    from tasks.pipeline.build import build_artifact
    from tasks.support.config import ValidateConfig

    calib = tmp_path / "calibration.yaml"  # the holdout frames as calibration frames (6: 4 calibrate, 2 gate)
    calib.write_text(f"path: {sample_data / 'holdout'}\nval: images\nnames: {{0: plate}}\n")
    handed = tmp_path / "handed_to_tensorrt.onnx"
    scored: list[Path] = []

    def parser_input(qdq_onnx: Path, engine_path: Path, workspace_gb: float = 4.0) -> Path:
        shutil.copyfile(qdq_onnx, handed)
        return engine_path

    ort_infer = quantize._ort_infer

    def scoring(path: Path):
        scored.append(shutil.copyfile(path, tmp_path / f"scored_{len(scored)}.onnx"))
        return ort_infer(path)

    monkeypatch.setattr(trt_files, "build_strongly_typed_engine", parser_input)
    monkeypatch.setattr(quantize, "_ort_infer", scoring)
    cand = CandidateConfig(
        name="trt-qdq",
        precision="int8",
        method="trt-qdq",
        qdq={"symmetric_activations": True, "subset_size": 4, **qdq},
    )
    (tmp_path / "out").mkdir()
    _, info = build_artifact(plate_model, cand, "tensorrt", calib, 160, tmp_path / "out", ValidateConfig(imgsz=160), [])
    return handed, scored, info


def test_trt_qdq_onnx_follows_tensorrts_onnx_parser_rules(
    plate_model: Path, sample_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Q/DQ ONNX that build hands to TensorRT for a trt-qdq candidate (the engine build itself is not run here),
    checked against TensorRT's parser rules and, with the default `qdq.high_precision: fp16`, the FP16 rules: what
    is not quantized is FP16, and the agreement gate scored exactly that graph."""
    import onnx

    handed, scored, info = handed_to_tensorrt(plate_model, sample_data, tmp_path, monkeypatch)
    violations, counts = tensorrt_qdq_violations(onnx.load(str(handed)))
    assert not violations, f"{len(violations)} violations:\n" + "\n".join(violations[:40])
    assert counts["weight_qdq"] > 40 and counts["activation_q"] > 40
    assert counts["per_channel_scales"] == counts["weight_qdq"]
    fp16, found = fp16_violations(onnx.load(str(handed)))
    assert not fp16, f"{len(fp16)} FP16 violations:\n" + "\n".join(fp16[:40])
    assert found["conv_reads_dq"] > 40 and found["fp16_scales"] > 80
    assert found["fp32_tensors"] >= 3  # input, output, the Resize scales: the rule above can find FP32
    assert info["qdq_placement"]["high_precision"] == "fp16" and info["qdq_placement"]["opset"] == 19
    *reference, candidate = scored  # AgreementGate: the FP32 reference (its detections, its score), the candidate
    assert candidate.read_bytes() == handed.read_bytes(), "the gate scored another graph than the one shipped"
    assert all(fp16_violations(onnx.load(str(r)))[0] for r in reference), "the reference is the FP32 export"


def test_trt_qdq_with_high_precision_fp32_ships_the_fp32_qdq_graph(
    plate_model: Path, sample_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnx
    from onnx import TensorProto

    handed, scored, info = handed_to_tensorrt(plate_model, sample_data, tmp_path, monkeypatch, high_precision="fp32")
    model = onnx.load(str(handed))
    assert not tensorrt_qdq_violations(model)[0]
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 18  # as exported
    assert {t.data_type for t in model.graph.initializer if t.data_type in (1, 10)} == {TensorProto.FLOAT}
    assert scored[-1].read_bytes() == handed.read_bytes() and info["qdq_placement"]["high_precision"] == "fp32"


def bundle_reference(bundle: Path) -> tuple:
    from tasks.edge.gate_build import read_bundle

    return read_bundle(bundle).reference


@pytest.mark.skipif(not HAVE_TRT, reason=SKIP_REASON)
@pytest.mark.timeout(900)  # an engine build on a Jetson takes minutes
def test_gate_side_build_times_and_checks_an_engine_without_pytorch(
    built: tuple, tmp_path: Path, prefect_api: str
) -> None:
    """The split path end to end where TensorRT and a GPU exist: the host's bundle (FP32 ONNX, reference
    detections) through MLflow, the gate-build flow (strongly typed engine, timing, agreement) in a fresh
    interpreter where PyTorch cannot be imported (as on the gate; this process loaded it for the host's build),
    results read back, and the gate's detections scored on the host as the rebuild's gate step scores them."""
    from prefect.client.orchestration import get_client
    from torchless import run_without_torch

    from tasks.edge.gate_build import RESULT_PATH
    from tasks.pipeline import gate_remote
    from tasks.support import tracking as trk
    from tasks.support.config import TrackingConfig

    params, candidates = built
    fp32 = next(c for c in candidates if c.name == params.build.reference)
    tracking = TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifacts=tmp_path / "mlartifacts")
    client = trk.client(tracking)
    run_id = client.create_run(trk.experiment_id(client, tracking)).info.run_id
    images = sorted((params.paths.holdout / "images").iterdir())
    bundle = gate_remote.write_bundle("trt-fp32", fp32.path, fp32, images, params.validate_, tmp_path / "bundle")
    gate_remote.log_bundle(tracking, run_id, bundle)
    gate_side = (
        "import sys\n"
        "from flows.gate_build import gate_build\n"
        "state = gate_build(sys.argv[1], sys.argv[2], sys.argv[3], return_state=True)\n"
        "print(state.state_details.flow_run_id)\n"
    )
    ran = run_without_torch(gate_side, run_id, tracking.uri, str(tmp_path / "gate"), timeout=840)
    assert ran.returncode == 0, ran.stderr
    with get_client(sync_client=True) as prefect:
        state = prefect.read_flow_run(ran.stdout.strip().splitlines()[-1]).state
    outcome = gate_remote.outcome_of(state, tracking, run_id)
    assert outcome.passed, outcome.reason
    assert outcome.metrics["latency_p50_ms"] > 0
    assert outcome.metrics["boxes_matched"] >= 0.8 * outcome.metrics["boxes_reference"] > 0
    logged = {Path(a.path).name for a in client.list_artifacts(run_id, RESULT_PATH)}
    assert {"engine_record.json", "latency_ms.json", "detections.json"} <= logged
    assert any(n.endswith(".engine") for n in logged) and any(n.endswith(".plan") for n in logged)
    assert not any((tmp_path / "gate").iterdir()), "the gate's working copy was left behind"
    found = gate_remote.gate_detections(tracking, run_id)
    scoring = gate_remote.scoring_inputs(params, fp32)
    scoring = gate_remote.GateScoring(
        images, list(bundle_reference(bundle)), scoring.names, scoring.labelled, scoring.truth
    )
    scored = gate_remote.score_gate_detections(found, scoring, params.validate_)
    assert scored["agreement_map50_95"] > 0.9  # an FP32 engine of the reference's own model
