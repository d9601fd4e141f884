"""The split TensorRT build on CPU: the host's bundle goes through a real MLflow store to the gate side and back;
the gate flow, run for real on Prefect, stops at the TensorRT import with a typed error that the host reports as a
failed candidate; a gate pool without a worker is refused within the timeout. (With TensorRT and a GPU, the whole
path runs in tests/integration/test_tensorrt.py.)"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tasks.support.config import TrackingConfig

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def candidate_run(tmp_path_factory: pytest.TempPathFactory, built: tuple) -> tuple[TrackingConfig, str, Path]:
    """A candidate run in a fresh sqlite MLflow store, holding the host's gate bundle (FP32 ONNX, 3 holdout frames,
    the FP32 reference's detections on them)."""
    from tasks.pipeline import gate_remote
    from tasks.support import tracking as trk

    params, candidates = built
    tmp_path = tmp_path_factory.mktemp("gate-build")
    fp32 = next(c for c in candidates if c.name == params.build.reference)
    tracking = TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifacts=tmp_path / "mlartifacts")
    client = trk.client(tracking)
    run_id = client.create_run(trk.experiment_id(client, tracking)).info.run_id
    images = sorted((params.paths.holdout / "images").iterdir())[:3]
    bundle = gate_remote.write_bundle("trt-test", fp32.path, fp32, images, params.validate_, tmp_path / "bundle")
    gate_remote.log_bundle(tracking, run_id, bundle)
    return tracking, run_id, bundle


def test_the_hosts_bundle_reaches_the_gate_side_through_mlflow(candidate_run, tmp_path: Path) -> None:
    from tasks.edge.gate_build import download_bundle

    tracking, run_id, sent = candidate_run
    got = download_bundle(run_id, tracking.uri, str(tmp_path / "gate"))
    assert got.folder != sent and got.onnx.read_bytes() == (sent / got.onnx.name).read_bytes()
    assert [f.read_bytes() for f in got.frames] == [(sent / "frames" / f.name).read_bytes() for f in got.frames]
    doc = json.loads((sent / "bundle.json").read_text())
    assert [json.loads(json.dumps(d.to_json())) for d in got.reference] == [f["reference"] for f in doc["frames"]]
    assert sum(len(d.conf) for d in got.reference) > 0, "the reference found nothing: agreement would be empty"
    assert got.metadata["names"] and got.metadata["imgsz"]  # Ultralytics' export metadata, for the engine header
    assert got.settings.runs > 0 and 0 < got.settings.agreement_conf < 1


def _tensorrt_imports() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:  # absent or broken: both mean the gate flow must fail typed here
        return False
    return True


@pytest.mark.skipif(_tensorrt_imports(), reason="tensorrt imports here: the GPU test covers the gate flow instead")
def test_the_gate_flow_without_tensorrt_fails_typed_and_the_host_reports_a_failed_candidate(
    candidate_run, tmp_path: Path, prefect_api: str
) -> None:
    from flows.gate_build import gate_build
    from tasks.edge.tensorrt import TensorRTUnavailable
    from tasks.pipeline.gate_remote import gate_metrics, outcome_of

    tracking, run_id, _ = candidate_run
    state = gate_build(run_id, tracking.uri, str(tmp_path / "gate"), return_state=True)
    assert state.is_failed()
    assert isinstance(state.result(raise_on_failure=False), TensorRTUnavailable)
    outcome = outcome_of(state, tracking, run_id)
    assert not outcome.passed and outcome.metrics == {}
    assert "TensorRT cannot build here" in outcome.reason
    assert gate_metrics(tracking, run_id) == {}, "a failed gate build logged metrics"


def test_a_gate_pool_without_a_worker_is_refused_within_the_timeout(built: tuple, prefect_api: str) -> None:
    from prefect.client.orchestration import get_client

    from cli.advice import explain
    from flows.deployments import deploy_gate_build
    from tasks.pipeline.gate_remote import GateUnavailable, request_gate_build
    from tasks.support.errors import Remedy

    params, _ = built
    pool = f"gate-orin-{uuid.uuid4().hex[:8]}"  # a pool of its own: no worker anywhere serves it
    serve = params.serve.model_copy(update={"work_pools": {"tensorrt": pool}})
    params = params.model_copy(update={"serve": serve})
    with pytest.raises(GateUnavailable, match="is a local store the gate box cannot reach"):
        request_gate_build(params, "run-x", timeout_s=2)  # the session's sqlite store
    # a server address (nothing listens there: the gate would be the one to use it)
    params = params.model_copy(update={"tracking": params.tracking.model_copy(update={"uri": "http://127.0.0.1:9"})})
    with pytest.raises(GateUnavailable, match="does not exist on the Prefect server"):
        request_gate_build(params, "run-x", timeout_s=2)
    assert deploy_gate_build(params, Path(__file__).resolve().parents[2]) == f"gate-build/{pool}"
    with pytest.raises(GateUnavailable, match=rf"not picked up|no worker of pool '{pool}'") as err:
        request_gate_build(params, "run-x", timeout_s=2)
    assert err.value.remedy == Remedy.GATE_WORKER and err.value.facts["pool"] == pool  # the task names no command
    assert f"prefect worker start --pool {pool}" in explain(err.value)  # the CLI words it, with the pool
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
        mine = [r for r in runs if r.parameters.get("run_id") == "run-x" and r.deployment_id is not None]
        assert mine and all(r.state.is_cancelled() for r in mine if r.state is not None)


def test_the_gates_detections_reach_the_host_through_mlflow(candidate_run, tmp_path: Path) -> None:
    """What the gate logs after a build (`log_result`: engine, plan, and its raw detections per frame) is what the
    host's gate step scores (`gate_detections`); here the engine is placeholder bytes, the detections real ones."""
    from tasks.edge.gate_build import GateResult, log_result, read_bundle
    from tasks.edge.tensorrt import save_engine
    from tasks.pipeline.gate_remote import gate_detections
    from tasks.support import tracking as trk

    tracking, _, sent = candidate_run
    client = trk.client(tracking)
    run_id = client.create_run(trk.experiment_id(client, tracking)).info.run_id  # a run of its own
    bundle = read_bundle(sent)
    engine, _ = save_engine(tmp_path / "model.engine", {"stride": 32}, b"\x00not-a-plan")
    dets = tuple((f.name, d) for f, d in zip(bundle.frames, bundle.reference, strict=True))
    log_result(run_id, GateResult("trt-test", engine, {}, {"latency_p50_ms": 1.5}, (1.5,), dets), tracking.uri)
    assert gate_detections(tracking, run_id) == dict(dets)
