"""The rebuild's gate step (build.tensorrt_on: gate) on CPU: a TensorRT candidate is built here only to its ONNX and
not run here; a real `gate-build` worker of the tensorrt pool takes its bundle from a real MLflow server and fails at
the TensorRT import, and that candidate alone fails, with the gate's reason; nothing TensorRT can win. The host
scores gate detections with the one metric (`scoring.score`: Ultralytics' matching and AP), checked on the FP32
reference's real detections."""

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
    return BuildConfig(backend="tensorrt", imgsz=320, speed_reference=None, candidates=(REFERENCE, *candidates))


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
        BuildConfig(
            backend="tensorrt", speed_reference=None, candidates=(CandidateConfig(name="fp32", precision="fp32"),)
        )


def test_validation_leaves_a_gate_built_candidate_pending(gate_validation) -> None:
    from tasks.pipeline.validate import GATE_KEY, GATE_PENDING

    row = gate_validation.metrics["trt-fp32"]
    assert row[GATE_KEY] == GATE_PENDING and "latency_p50_ms" not in row and "agreement_map50_95" not in row
    assert "trt-fp32" not in gate_validation.latency_samples
    assert gate_validation.metrics["fp32"]["latency_p50_ms"] > 0 and "map_drop" in gate_validation.metrics["fp32"]


def test_host_scores_gate_detections_with_the_one_metric(built: tuple, gate_built: list, gate_validation) -> None:
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
    from tasks.pipeline.validate import detect

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
    low = detect(ref, scoring.frames, cfg)  # at validate.conf, as the gate reports
    scored = score_gate_detections({f.name: d for f, d in zip(scoring.frames, low, strict=True)}, scoring, cfg)
    validated = gate_validation.metrics["fp32"]  # validation of the same model on the same holdout
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
    from tasks.operations.policy import decide
    from tasks.pipeline import track
    from tasks.pipeline.gate_remote import gate_engines
    from tasks.pipeline.validate import GATE_KEY
    from tasks.support import tracking as trk

    params, _ = built
    report, trt = gate_validation, gate_built[1]
    with mlflow_server_at(tmp_path) as url:
        p: Params = params.model_copy(
            update={
                "tracking": params.tracking.model_copy(update={"uri": url}),
                "serve": params.serve.model_copy(update={"work_pools": {"tensorrt": gate_worker}, "gate_wait_s": 240}),
                "build": gate_build_config(TRT_FP32),  # the candidates gate_built holds
            }
        )
        deploy_gate_build(p, REPO)
        record = track.log_rebuild(p, gate_built, report.metrics, {"frames_hash": "h"}, report)
        record, metrics = gate_engines(p, gate_built, record, report, tmp_path)
        mc = trk.client(p.tracking)
        run = mc.get_run(record.candidates[trt.name].run_id)
        versions = mc.search_model_versions(f"run_id = '{run.info.run_id}'")
    reason = metrics[trt.name][GATE_KEY]
    assert reason.startswith("failed: gate build Failed") and "TensorRT" in reason, reason
    assert run.data.tags[GATE_KEY] == reason
    # never registered as deployable: no registry version, no artifact hash on its run
    assert record.candidates[trt.name].version == "" and not versions and "artifact_sha256" not in run.data.tags
    assert "latency_p50_ms" not in metrics[trt.name] and "agreement_map50_95" not in run.data.metrics
    assert metrics["fp32"] == report.metrics["fp32"]  # the host's candidates: untouched
    decision = decide(metrics, params.promote)
    assert not decision.verdicts[trt.name].passed
    assert "TensorRT" in decision.explain() and decision.winner != trt.name
    assert decision.verdicts["fp32"].checks[0].gate == "map_drop"  # judged as before: numbers, not the gate


# --- promotion of an engine built on the gate -----------------------------------------------------------------------
# The host cannot run TensorRT, so no test here has a real engine. These tests log, as the gate's own `log_result`
# does, an engine-layout file written with the project's writer (`tensorrt.save_engine`) around PLACEHOLDER plan bytes:
# it is NOT a runnable engine. They check the chain (the engine's hash recorded on the run and the registry version,
# verified at deploy, the manifest pointing at the gate's measurement of those bytes), not TensorRT.

GATE_DEVICE = {"gpu": "Orin (nvgpu)", "compute_capability": "8.7", "tensorrt": "10.3.0"}
LOOSE_GATES = {
    "max_map_drop": 0.05,
    "max_quant_drop": 0.05,
    "min_agreement": 0.5,
}  # the chain is under test, not the thresholds


@pytest.fixture(scope="module")
def gate_scoring(built: tuple, gate_built: list) -> tuple:
    """What the host scores gate detections against, and the FP32 reference's own detections at `validate.conf`
    (what the test's placeholder "gate" reports: a faithful engine)."""
    from tasks.pipeline.gate_remote import scoring_inputs
    from tasks.pipeline.validate import detect

    params, _ = built
    cfg, ref = params.validate_, gate_built[0]
    scoring = scoring_inputs(params, ref)
    return scoring, detect(ref, scoring.frames, cfg)


def log_placeholder_engine(tracking_uri: str, run_id: str, cand, scoring, detections, work: Path, plan: bytes) -> str:
    """Log to `run_id` what the gate logs after building and measuring an engine (`edge.log_result`: metrics, engine,
    plan, engine record, detections), with an engine file around `plan` (placeholder bytes, not a runnable engine).
    Returns the engine's sha256."""
    from tasks.edge import gate_build as edge
    from tasks.edge.tensorrt import engine_header, engine_record, onnx_metadata, save_engine

    work.mkdir(parents=True, exist_ok=True)
    engine, _ = save_engine(
        work / f"{cand.path.stem}.engine", engine_header(onnx_metadata(cand.path), GATE_DEVICE), plan
    )
    record = engine_record(engine)
    dets = tuple((f.name, d) for f, d in zip(scoring.frames, detections, strict=True))
    result = edge.GateResult(cand.name, engine, record, {"latency_p50_ms": 1.0, "latency_p95_ms": 1.5}, (1.0,), dets)
    edge.log_result(run_id, result, tracking_uri)
    return record["engine_sha256"]


def tracked_and_gate_logged(p: Params, gate_built: list, report, gate_scoring, work: Path, plan: bytes) -> tuple:
    """A rebuild of the reference and the gate-built candidate logged to `p`'s store, then the "gate" (above) logs
    its engine to the candidate's run. Returns (record, engine sha256, the gate's outcome)."""
    from tasks.pipeline import track
    from tasks.pipeline.gate_remote import GateOutcome, gate_metrics
    from tasks.support import tracking as trk

    trt = gate_built[1]
    record = track.log_rebuild(p, gate_built, report.metrics, {"frames_hash": "h"})
    run_id = record.candidates[trt.name].run_id
    # the ONNX is not what ships: no registry version and no artifact hash until the gate measured the engine
    assert record.candidates[trt.name].version == "" and record.candidates["fp32"].version
    assert "artifact_sha256" not in trk.client(p.tracking).get_run(run_id).data.tags
    scoring, dets = gate_scoring
    sha = log_placeholder_engine(p.tracking.uri, run_id, trt, scoring, dets, work, plan)
    return record, sha, GateOutcome(run_id, True, "", gate_metrics(p.tracking, run_id))


def test_a_measured_gate_engine_is_registered_and_promoted_by_its_hash(
    store: Params, gate_built: list, gate_validation, gate_scoring, tmp_path: Path
) -> None:
    """The engine bytes are a placeholder (not a runnable engine): this checks the chain (hash recorded, verified at
    deploy, manifest), not TensorRT."""
    from tasks.operations.promote import promote
    from tasks.runtime.releases import current_release, read_manifest, verify_release
    from tasks.support import tracking as trk

    trt = gate_built[1]
    p = store.model_copy(
        update={"promote": store.promote.model_copy(update=LOOSE_GATES), "build": gate_build_config(TRT_FP32)}
    )
    record, sha, outcome = tracked_and_gate_logged(
        p, gate_built, gate_validation, gate_scoring, tmp_path / "gate", b"\x00placeholder plan, not an engine\xff"
    )
    from tasks.pipeline.gate_remote import finish_gate_step  # after the tracking checks: they fail on older code

    step = finish_gate_step(p, gate_built, record, gate_validation.metrics, {trt.name: outcome}, gate_scoring[0])
    assert step.metrics[trt.name]["gate"] == "measured"
    tracked, mc = step.record.candidates[trt.name], trk.client(p.tracking)
    assert tracked.version and tracked.source.endswith("/artifact")
    version_tags = mc.get_model_version(p.tracking.registered_model, tracked.version).tags
    assert mc.get_run(tracked.run_id).data.tags["artifact_sha256"] == version_tags["artifact_sha256"] == sha
    result = promote(step.record, step.metrics, p.promote, p.tracking, p.paths.holdout, p.validate_)
    assert result.decision.winner == trt.name and result.version == tracked.version, result.decision.explain()
    manifest = read_manifest(result.release)
    measured = manifest["smoke_test"]["gate_build"]
    assert manifest["sha256"] == measured["engine_sha256"] == sha
    assert measured["frames"] == len(gate_scoring[0].frames) and measured["run_id"] == tracked.run_id
    assert measured["agreement_map50_95"] == step.metrics[trt.name]["agreement_map50_95"]
    assert "gate runtime verifies" in manifest["smoke_test"]["host"]
    assert manifest["target_hardware"]["gpu"] == GATE_DEVICE["gpu"]
    deployed = verify_release(current_release(p.promote.gate_dir), sha)  # what the gate runtime checks at load
    assert deployed.path.suffix == ".engine" and deployed.gate_built
    assert mc.get_run(tracked.run_id).data.tags["gate.smoke_test"].startswith("pass: not run on this host")


def test_a_gate_engine_swapped_in_the_store_after_it_was_recorded_is_refused(
    store: Params, gate_built: list, gate_validation, gate_scoring, tmp_path: Path
) -> None:
    """Issue 15's shape for a gate-built engine: after registration, the engine in the artifact store is replaced by
    another engine file (placeholder plan bytes again, not a runnable engine), with its plan and `candidate.json`
    rewritten to match; promotion refuses it and nothing is deployed."""
    import json
    from urllib.parse import unquote, urlparse

    from tasks.edge.tensorrt import read_engine, save_engine
    from tasks.operations.promote import promote
    from tasks.support.errors import AlprError
    from tasks.support.hashing import sha256_file

    trt = gate_built[1]
    p = store.model_copy(
        update={"promote": store.promote.model_copy(update=LOOSE_GATES), "build": gate_build_config(TRT_FP32)}
    )
    record, sha, outcome = tracked_and_gate_logged(
        p, gate_built, gate_validation, gate_scoring, tmp_path / "gate", b"\x00the plan the gate measured"
    )
    from tasks.pipeline.gate_remote import finish_gate_step  # after the tracking checks: they fail on older code

    step = finish_gate_step(p, gate_built, record, gate_validation.metrics, {trt.name: outcome}, gate_scoring[0])
    folder = Path(unquote(urlparse(step.record.candidates[trt.name].source).path))
    meta = json.loads((folder / "candidate.json").read_text())
    header, _ = read_engine(folder / meta["artifact"])
    save_engine(folder / meta["artifact"], header, b"\x00another plan, put there later")
    meta["sha256"] = sha256_file(folder / meta["artifact"])
    (folder / "candidate.json").write_text(json.dumps(meta))
    assert meta["sha256"] != sha
    with pytest.raises(AlprError, match="recorded in"):
        promote(step.record, step.metrics, p.promote, p.tracking, p.paths.holdout, p.validate_)
    assert not (p.promote.gate_dir / "current").exists()
    assert not list((p.promote.gate_dir / "releases").glob("v*"))


def test_a_gate_candidate_that_failed_or_does_not_match_its_record_is_never_registered(
    store: Params, gate_built: list, gate_validation, gate_scoring, tmp_path: Path
) -> None:
    """A gate that failed, and a gate whose logged plan is not the one its engine record names (placeholder bytes,
    not a runnable engine), both leave the candidate failed: no registry version, no artifact hash, never promoted."""
    from urllib.parse import unquote, urlparse

    from tasks.operations.policy import decide
    from tasks.pipeline.gate_remote import GateOutcome
    from tasks.support import tracking as trk

    trt = gate_built[1]
    p = store.model_copy(
        update={"promote": store.promote.model_copy(update=LOOSE_GATES), "build": gate_build_config(TRT_FP32)}
    )
    record, _, measured = tracked_and_gate_logged(
        p, gate_built, gate_validation, gate_scoring, tmp_path / "gate", b"\x00the plan the gate built"
    )
    from tasks.pipeline.gate_remote import finish_gate_step  # after the tracking checks: they fail on older code

    run_id, mc = measured.run_id, trk.client(p.tracking)
    failed = GateOutcome(run_id, False, "gate build Failed: TensorRTUnavailable: no module named 'tensorrt'")
    gate_validation_metrics = gate_validation.metrics
    step = finish_gate_step(p, gate_built, record, gate_validation_metrics, {trt.name: failed}, gate_scoring[0])
    assert step.metrics[trt.name]["gate"].startswith("failed: gate build Failed")
    assert step.record.candidates[trt.name].version == ""
    # the gate says it measured, but the plan it logged beside the engine is not the one its record names
    logged = Path(unquote(urlparse(mc.get_run(run_id).info.artifact_uri).path)) / "gate_build"
    (logged / f"{trt.path.stem}.plan").write_bytes(b"\x00some other plan")
    step = finish_gate_step(p, gate_built, record, gate_validation_metrics, {trt.name: measured}, gate_scoring[0])
    assert step.metrics[trt.name]["gate"].startswith("failed: the gate's engine was not registered"), step.metrics
    assert step.record.candidates[trt.name].version == ""
    assert not mc.search_model_versions(f"run_id = '{run_id}'")
    assert "artifact_sha256" not in mc.get_run(run_id).data.tags
    decision = decide(step.metrics, p.promote)
    assert not decision.verdicts[trt.name].passed and decision.winner != trt.name


def test_gate_build_is_deployed_whenever_a_candidate_is_built_on_the_gate(built: tuple, prefect_api: str) -> None:
    """`alpr-ops deploy` on a real Prefect server: a CPU project (`build.backend: openvino`) with one candidate of
    `backend: tensorrt` built on the gate gets `gate-build` on the tensorrt pool; without one, it does not."""
    from prefect.client.orchestration import get_client

    from flows.deployments import deploy_to_pool

    params, _ = built
    pools = {"openvino": f"gate-cpu-{uuid.uuid4().hex[:8]}", "tensorrt": f"gate-orin-{uuid.uuid4().hex[:8]}"}
    trt = CandidateConfig(name="trt-fp32", precision="fp32", backend="tensorrt")
    p = params.model_copy(
        update={
            "build": BuildConfig(backend="openvino", imgsz=320, speed_reference=None, candidates=(REFERENCE, trt)),
            "serve": params.serve.model_copy(update={"work_pools": pools}),
        }
    )
    names = deploy_to_pool(p, REPO / "params.yaml", REPO)
    assert f"gate-build/{pools['tensorrt']}" in names
    with get_client(sync_client=True) as client:
        assert client.read_deployment_by_name(f"gate-build/{pools['tensorrt']}").work_pool_name == pools["tensorrt"]
    from flows.deployments import needs_gate_build

    on_host = p.model_copy(update={"build": p.build.model_copy(update={"tensorrt_on": "host"})})
    cpu_only = p.model_copy(
        update={"build": BuildConfig(backend="openvino", imgsz=320, speed_reference=None, candidates=(REFERENCE,))}
    )
    assert not needs_gate_build(on_host) and not needs_gate_build(cpu_only)
