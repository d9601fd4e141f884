"""The rebuild's gate step (build.tensorrt_on: gate) on CPU: a TensorRT candidate is built here only to its ONNX and
not run here; a real `gate-build` worker of the tensorrt pool takes its bundle from a real MLflow server and fails at
the TensorRT import, and that candidate alone fails, with the gate's reason; nothing TensorRT can win. The host
scores gate detections with Ultralytics' own metric functions, checked on the FP32 reference's real detections."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import mlflow_server_at

from tasks.support.config import BuildConfig, CandidateConfig, Params

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
REFERENCE = CandidateConfig(name="fp32", precision="fp32", backend="onnxruntime")
TRT_FP32 = CandidateConfig(name="trt-fp32", precision="fp32")  # backend from build.backend: tensorrt


def gate_build_config(*candidates: CandidateConfig) -> BuildConfig:
    return BuildConfig(backend="tensorrt", imgsz=320, candidates=(REFERENCE, *candidates))


@pytest.fixture(scope="module")
def gate_built(built: tuple, plate_model: Path, tmp_path_factory: pytest.TempPathFactory) -> list:
    """The FP32 reference and an FP32 TensorRT candidate built with tensorrt_on: gate (the host exports its ONNX)."""
    from tasks.pipeline.build import build_candidates

    params, _ = built
    out = tmp_path_factory.mktemp("gate-built") / "candidates"
    return build_candidates(
        plate_model, params.paths.calibration_yaml, out, gate_build_config(TRT_FP32), params.model.sha256, "h"
    )


@pytest.fixture(scope="module")
def gate_validation(built: tuple, gate_built: list):
    """Validation of the two: the reference measured, the gate-built candidate not run here (`gate: pending`)."""
    from tasks.pipeline.validate import run_validation

    params, _ = built
    return run_validation(gate_built, params.paths.holdout, "fp32", params.validate_, params.paths.holdout_frames)


def test_a_gate_built_candidate_is_its_onnx_on_the_host(gate_built: list) -> None:
    ref, trt = gate_built
    assert trt.backend == "tensorrt" and trt.path.suffix == ".onnx" and trt.path.is_file()
    assert trt.tensorrt == {"built_on": "gate", "onnx": trt.artifact} and trt.gate_built and not ref.gate_built
    assert trt.cache_key != ref.cache_key


def test_engine_exports_that_need_tensorrt_are_refused_before_anything_is_built(
    built: tuple, plate_model: Path, tmp_path: Path
) -> None:
    from tasks.pipeline.build import BackendUnavailable, build_candidates

    params, _ = built
    cfg = gate_build_config(TRT_FP32, CandidateConfig(name="trt-int8", precision="int8"))
    with pytest.raises(BackendUnavailable, match=r"'trt-int8'.*method: trt-qdq.*tensorrt_on: host"):
        build_candidates(plate_model, params.paths.calibration_yaml, tmp_path / "c", cfg, params.model.sha256, "h")
    assert not (tmp_path / "c").exists()
    with pytest.raises(ValueError, match="the host runs the FP32 reference"):  # a reference the host cannot run
        BuildConfig(backend="tensorrt", candidates=(CandidateConfig(name="fp32", precision="fp32"),))


def test_validation_leaves_a_gate_built_candidate_pending(gate_validation) -> None:
    from tasks.pipeline.validate import GATE_KEY, GATE_PENDING

    row = gate_validation.metrics["trt-fp32"]
    assert row[GATE_KEY] == GATE_PENDING and "latency_p50_ms" not in row and "agreement_map50_95" not in row
    assert "trt-fp32" not in gate_validation.latency_samples
    assert gate_validation.metrics["fp32"]["latency_p50_ms"] > 0 and "map_drop" in gate_validation.metrics["fp32"]


def test_host_scores_gate_detections_with_ultralytics_metrics(built: tuple, gate_built: list, gate_validation) -> None:
    """Real detections (the FP32 reference's) in place of the gate's: its own give full agreement; boxes shifted by
    a fifth of their width agree less; at `validate.conf` the labelled mAP is validation's own."""
    from tasks.edge.agreement import Detections
    from tasks.pipeline.gate_remote import (
        GateOutcome,
        merge_gate_row,
        score_gate_detections,
        scoring_inputs,
        set_speedups,
    )
    from tasks.pipeline.validate import predict

    params, _ = built
    cfg, ref = params.validate_, gate_built[0]
    scoring = scoring_inputs(params, ref)
    assert scoring.labelled and sum(len(d.conf) for d in scoring.reference) > 0
    same = score_gate_detections(
        {f.name: d for f, d in zip(scoring.frames, scoring.reference, strict=True)}, scoring, cfg
    )
    # 0.995: Ultralytics' AP of a perfect match (its 101-point interpolation), what its validator gives FP32 itself
    assert same["agreement_map50_95"] == pytest.approx(0.995) and same["boxes_lost"] == same["boxes_gained"] == 0

    def shift(d: Detections) -> Detections:
        return dataclasses.replace(
            d, xyxy=tuple((x1 + (x2 - x1) / 5, y1, x2 + (x2 - x1) / 5, y2) for x1, y1, x2, y2 in d.xyxy)
        )

    shifted = score_gate_detections(
        {f.name: shift(d) for f, d in zip(scoring.frames, scoring.reference, strict=True)}, scoring, cfg
    )
    assert shifted["agreement_map50_95"] < 0.9 * same["agreement_map50_95"]
    low = predict(ref, scoring.frames, cfg.model_copy(update={"agreement_conf": cfg.conf}))  # as the gate reports
    scored = score_gate_detections({f.name: d for f, d in zip(scoring.frames, low, strict=True)}, scoring, cfg)
    validated = gate_validation.metrics["fp32"]  # Ultralytics' validator on the same model and holdout
    assert scored["map50_95"] == pytest.approx(validated["map50_95"], abs=0.02)
    assert scored["map50"] == pytest.approx(validated["map50"], abs=0.02)
    # merged as the gate step merges a measured engine: the gate's latency, the host's scores, the drop vs FP32
    outcome = GateOutcome("run", True, "", {"latency_p50_ms": 4.0, "latency_p95_ms": 5.0, "boxes_matched": 99.0})
    metrics = {"fp32": validated, "trt": merge_gate_row({"gate": "pending"}, outcome, scored, validated)}
    set_speedups(metrics, [dataclasses.replace(ref, name="trt", precision="int8")], validated)
    row = metrics["trt"]
    assert (
        row["gate"] == "measured" and row["latency_p50_ms"] == 4.0 and row["boxes_matched"] == scored["boxes_matched"]
    )
    assert row["map_drop"] == pytest.approx(validated["map50_95"] - scored["map50_95"], abs=1e-5)
    assert row["speedup"] == round(validated["latency_p50_ms"] / 4.0, 3) and "host" in row["speedup_basis"]
    failed = merge_gate_row({"gate": "pending"}, GateOutcome("run", False, "no worker"), None, validated)
    assert failed == {"gate": "failed: no worker"}


@pytest.fixture
def gate_worker(prefect_api: str, tmp_path: Path) -> Iterator[str]:
    """A real `prefect worker start` on a tensorrt pool of its own (this code on its path); yields the pool."""
    pool = f"gate-orin-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_WORKER_QUERY_SECONDS": "1",
           "PYTHONPATH": str(REPO), "PREFECT_HOME": str(tmp_path / "prefect-home")}  # fmt: skip
    log = (tmp_path / "worker.log").open("wb")
    cmd = [str(Path(sys.executable).with_name("prefect")), "worker", "start", "--pool", pool, "--type", "process"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield pool
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()


def test_a_gate_that_cannot_build_fails_its_candidate_alone(
    built: tuple, gate_built: list, gate_validation, gate_worker: str, tmp_path: Path
) -> None:
    from flows.deployments import deploy_gate_build
    from tasks.operations.promote import decide
    from tasks.pipeline import track
    from tasks.pipeline.gate_remote import gate_engines
    from tasks.pipeline.validate import GATE_KEY

    params, _ = built
    report, trt = gate_validation, gate_built[1]
    with mlflow_server_at(tmp_path) as url:
        p: Params = params.model_copy(
            update={
                "tracking": params.tracking.model_copy(update={"uri": url}),
                "serve": params.serve.model_copy(update={"work_pools": {"tensorrt": gate_worker}, "gate_wait_s": 240}),
            }
        )
        deploy_gate_build(p, REPO)
        record = track.log_rebuild(p, gate_built, report.metrics, {"frames_hash": "h"}, report)
        metrics = gate_engines(p, gate_built, record, report, tmp_path)
        run = track.client(p.tracking).get_run(record.candidates[trt.name].run_id)
    reason = metrics[trt.name][GATE_KEY]
    assert reason.startswith("failed: gate build Failed") and "TensorRT" in reason, reason
    assert run.data.tags[GATE_KEY] == reason
    assert "latency_p50_ms" not in metrics[trt.name] and "agreement_map50_95" not in run.data.metrics
    assert metrics["fp32"] == report.metrics["fp32"]  # the host's candidates: untouched
    decision = decide(metrics, params.promote)
    assert not decision.verdicts[trt.name].passed
    assert "TensorRT" in decision.explain() and decision.winner != trt.name
    assert decision.verdicts["fp32"].checks[0].gate == "map_drop"  # judged as before: numbers, not the gate
