"""The host's half of a gate-side TensorRT build: write the bundle the gate needs, log it to the candidate's MLflow
run, start the `gate-build` deployment on the gate's work pool and read what the gate logged back.

The host has PyTorch and Ultralytics: it exports the ONNX (FP32, or Q/DQ for trt-qdq) and runs the FP32 reference on
the agreement frames. The gate (`tasks/edge/gate_build.py`, `flows/gate_build.py`) has TensorRT and the GPU. A
gate build that failed, or a gate that did not answer, is a failed candidate with its reason, never a pass.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.edge import gate_build as edge
from tasks.support.candidate import Candidate
from tasks.support.config import Params, TrackingConfig, ValidateConfig
from tasks.support.errors import AlprError, Remedy

log = logging.getLogger(__name__)

GATE_FLOW = "gate-build"  # flows/gate_build.py's flow name; its deployment is `gate-build/<pool>`


class GateUnavailable(AlprError):
    """No gate worker ran the build in time (no pool, no deployment, no worker); the message says what to start."""


@dataclass(frozen=True)
class GateOutcome:
    """What the gate did with one candidate: built and measured (`passed`), or why not."""

    run_id: str
    passed: bool
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)  # the gate's, without the `gate.` prefix


def gate_pool(params: Params) -> str:
    """The work pool of the gate boxes that build TensorRT engines (`serve.work_pools.tensorrt`)."""
    pool = params.serve.work_pools.get("tensorrt")
    if not pool:
        raise GateUnavailable(
            f"serve.work_pools has no `tensorrt` pool (it maps {sorted(params.serve.work_pools)}); add "
            "{tensorrt: gate-orin} for the gate boxes' workers",
            remedy=Remedy.PARAMS,
        )
    return pool


def gate_deployment(params: Params) -> str:
    return f"{GATE_FLOW}/{gate_pool(params)}"


def write_bundle(
    candidate: str, onnx: Path, reference: Candidate, images: list[Path], cfg: ValidateConfig, out: Path
) -> Path:
    """The gate bundle of `candidate` (its ONNX) with the FP32 `reference`'s detections on `images`, as validation
    computes them (`agreement_conf`, `iou`, Ultralytics' predictor on the reference's own runtime)."""
    from tasks.pipeline.validate import predict
    from tasks.runtime.tensorrt import onnx_metadata

    settings = edge.GateSettings(cfg.agreement_conf, cfg.iou, cfg.warmup, cfg.runs)
    dets = predict(reference, images, cfg)
    if not any(len(d.conf) for d in dets):  # as validation: no reference box, no agreement to measure
        raise edge.BundleInvalid(
            f"the reference '{reference.name}' finds no plate (conf >= {cfg.agreement_conf}) on any of {len(images)} "
            "frames for the gate: agreement could not be measured there. Use frames that show vehicles.",
            remedy=Remedy.HOLDOUT,
        )
    return edge.write_bundle(out, candidate, onnx, onnx_metadata(onnx), images, dets, settings)


def log_bundle(tracking: TrackingConfig, run_id: str, bundle: Path) -> None:
    """Log the bundle folder to the candidate's run, where the gate downloads it (`edge.BUNDLE_PATH`)."""
    from tasks.pipeline.track import client

    edge.read_bundle(bundle)  # never hand the gate a bundle it cannot read
    client(tracking).log_artifacts(run_id, str(bundle), edge.BUNDLE_PATH)


def gate_metrics(tracking: TrackingConfig, run_id: str) -> dict[str, float]:
    """The metrics the gate logged to `run_id` (prefix removed)."""
    from tasks.pipeline.track import client

    metrics = client(tracking).get_run(run_id).data.metrics
    n = len(edge.METRIC_PREFIX)
    return {k[n:]: float(v) for k, v in metrics.items() if k.startswith(edge.METRIC_PREFIX)}


def outcome_of(state: Any, tracking: TrackingConfig, run_id: str) -> GateOutcome:
    """The outcome of a finished gate-build flow run: its metrics when it completed and logged them; otherwise a
    failed candidate with the gate's own error (the TensorRT import, the build, the bundle) as the reason."""
    if state is not None and state.is_completed():
        metrics = gate_metrics(tracking, run_id)
        if not metrics:
            return GateOutcome(run_id, False, "the gate's flow run completed but logged no metrics to the run")
        return GateOutcome(run_id, True, "", metrics)
    name = getattr(state, "name", "no state")
    reason = f"gate build {name}: {getattr(state, 'message', '') or 'no message'}"
    log.warning("candidate run %s: %s", run_id, reason)
    return GateOutcome(run_id, False, reason)


def request_gate_build(params: Params, run_id: str, timeout_s: float) -> GateOutcome:
    """Run the gate-build deployment for the candidate run `run_id` on the gate pool and wait for it; a gate that
    does not answer within `timeout_s` is refused with what to start (its queued run is cancelled)."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Cancelled

    pool, deployment = gate_pool(params), gate_deployment(params)
    if not params.tracking.uri.startswith(("http://", "https://", "databricks")):
        raise GateUnavailable(
            f"tracking.uri {params.tracking.uri!r} is a local store the gate box cannot reach: the gate "
            "downloads its bundle from MLflow and logs its results there, so run an MLflow server (README: Past one "
            "machine) and set tracking.uri to its http(s) address",
            remedy=Remedy.PARAMS,
        )
    start_worker = f"start one on the gate box: `prefect worker start --pool {pool}` (README: TensorRT on the gate)"
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
            client.read_deployment_by_name(deployment)
        except ObjectNotFound as e:
            raise GateUnavailable(
                f"work pool {pool!r} or deployment {deployment!r} does not exist on the Prefect server: deploy "
                f"first (`alpr-ops deploy` with build.backend: tensorrt), then {start_worker}"
            ) from e
    parameters = {"run_id": run_id, "tracking_uri": params.tracking.uri}
    run = run_deployment(deployment, parameters=parameters, timeout=timeout_s, poll_interval=1, as_subflow=False)
    state = run.state
    if state is None or not state.is_final():
        started = state is not None and state.is_running()
        if started:
            hint = "it is still running: raise serve.gate_wait_s if the gate is this slow"
        else:
            hint = f"no worker of pool {pool!r} took it (the run is cancelled): {start_worker}"
            with get_client(sync_client=True) as client:
                client.set_flow_run_state(run.id, Cancelled(message="no gate worker answered"), force=True)
        raise GateUnavailable(
            f"{deployment}: flow run {run.name} not finished after {timeout_s:g} s "
            f"({getattr(state, 'name', 'no state')}); {hint}"
        )
    return outcome_of(state, params.tracking, run_id)
