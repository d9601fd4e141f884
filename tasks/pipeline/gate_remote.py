"""The host's half of a gate-side TensorRT build: write the bundle the gate needs, log it to the candidate's MLflow
run, start the `gate-build` deployment on the gate's work pool and read what the gate logged back.

The host has PyTorch and Ultralytics: it exports the ONNX (FP32, or Q/DQ for trt-qdq) and runs the FP32 reference on
the agreement frames (through the `Detector` path the gate runs the engine with). The gate (`tasks/edge/gate_build.py`,
`flows/gate_build.py`) has TensorRT and the GPU. A gate build that failed, or a gate that did not answer, is a failed
candidate with its reason, never a pass.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from tasks.edge import gate_build as edge
from tasks.edge.agreement import Detections, above
from tasks.support.candidate import Candidate
from tasks.support.config import Params, TrackingConfig, ValidateConfig
from tasks.support.errors import AlprError, Remedy

if TYPE_CHECKING:
    from tasks.pipeline.track import RebuildRecord
    from tasks.pipeline.validate import ValidationReport

log = logging.getLogger(__name__)

GATE_FLOW = "gate-build"  # flows/gate_build.py's flow name; its deployment is `gate-build/<pool>`


class GateUnavailable(AlprError):
    """No gate worker ran the build in time (no pool, no deployment, no worker); the remedy says what to start."""


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
    candidate: str,
    onnx: Path,
    reference: Candidate,
    images: list[Path],
    cfg: ValidateConfig,
    out: Path,
    detections: list[Detections] | None = None,
) -> Path:
    """The gate bundle of `candidate` (its ONNX) with the FP32 `reference`'s detections on `images` at
    `agreement_conf`, as validation computes them (`validate.detect`; `detections`: already computed that way). The
    gate reports its own detections at `conf`, validation's mAP threshold."""
    from tasks.edge.tensorrt import onnx_metadata
    from tasks.pipeline.validate import detect

    settings = edge.GateSettings(cfg.agreement_conf, cfg.iou, cfg.warmup, cfg.runs, conf=cfg.conf)
    if detections is None:
        detections = [above(d, cfg.agreement_conf) for d in detect(reference, images, cfg)]
    dets = detections
    if not any(len(d.conf) for d in dets):  # as validation: no reference box, no agreement to measure
        raise edge.BundleInvalid(
            f"the reference '{reference.name}' finds no plate (conf >= {cfg.agreement_conf}) on any of {len(images)} "
            "frames for the gate: agreement could not be measured there. Use frames that show vehicles.",
            remedy=Remedy.HOLDOUT,
        )
    return edge.write_bundle(out, candidate, onnx, onnx_metadata(onnx), images, dets, settings)


def log_bundle(tracking: TrackingConfig, run_id: str, bundle: Path) -> None:
    """Log the bundle folder to the candidate's run, where the gate downloads it (`edge.BUNDLE_PATH`)."""
    from tasks.support.tracking import client

    edge.read_bundle(bundle)  # never hand the gate a bundle it cannot read
    client(tracking).log_artifacts(run_id, str(bundle), edge.BUNDLE_PATH)


def gate_metrics(tracking: TrackingConfig, run_id: str) -> dict[str, float]:
    """The metrics the gate logged to `run_id` (prefix removed)."""
    from tasks.support.tracking import GATE_PREFIX, client

    metrics = client(tracking).get_run(run_id).data.metrics
    return {k.removeprefix(GATE_PREFIX): float(v) for k, v in metrics.items() if k.startswith(GATE_PREFIX)}


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
            f"tracking.uri {params.tracking.shown_uri!r} is a local store the gate box cannot reach: the gate "
            "downloads its bundle from MLflow and logs its results there, so run an MLflow server "
            "(docs/operations.md: past one machine) and set tracking.uri to its http(s) address",
            remedy=Remedy.PARAMS,
        )
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
            client.read_deployment_by_name(deployment)
        except ObjectNotFound as e:
            raise GateUnavailable(
                f"work pool {pool!r} or deployment {deployment!r} does not exist on the Prefect server",
                remedy=Remedy.GATE_WORKER,
                pool=pool,
            ) from e
    # the store's address, never its credentials: Prefect shows a run's parameters to anyone with access to it. The
    # worker takes them from its own environment (tasks.support.tracking.resolve_uri, docs/tensorrt.md).
    parameters = {"run_id": run_id, "tracking_uri": params.tracking.shown_uri}
    run = run_deployment(deployment, parameters=parameters, timeout=timeout_s, poll_interval=1, as_subflow=False)
    state = run.state
    if state is None or not state.is_final():
        started = state is not None and state.is_running()
        if started:
            hint, remedy = "it is still running: raise serve.gate_wait_s if the gate is this slow", Remedy.PARAMS
        else:
            hint, remedy = f"no worker of pool {pool!r} took it (the run is cancelled)", Remedy.GATE_WORKER
            with get_client(sync_client=True) as client:
                client.set_flow_run_state(run.id, Cancelled(message="no gate worker answered"), force=True)
        raise GateUnavailable(
            f"{deployment}: flow run {run.name} not finished after {timeout_s:g} s "
            f"({getattr(state, 'name', 'no state')}); {hint}",
            remedy=remedy,
            pool=pool,
        )
    return outcome_of(state, params.tracking, run_id)


# --- the rebuild's gate step: bundles out, the gate's numbers merged in --------------------------------------------

SPEEDUP_BASIS = "speedup_basis"


def gate_detections(tracking: TrackingConfig, run_id: str) -> dict[str, Detections]:
    """The gate's raw detections per frame name, from the run's `gate_build/detections.json`."""
    import json
    import tempfile

    from tasks.support.tracking import client

    with tempfile.TemporaryDirectory(prefix="alpr-gate-dets-") as tmp:
        try:
            local = client(tracking).download_artifacts(run_id, f"{edge.RESULT_PATH}/{edge.DETECTIONS_JSON}", tmp)
            doc = json.loads(Path(local).read_text())
            return {str(f["name"]): Detections.from_json(f["detections"]) for f in doc}
        except Exception as e:  # absent (an older gate), unreadable: nothing to score, so the candidate fails
            raise edge.BundleInvalid(
                f"run {run_id}: the gate logged no readable {edge.RESULT_PATH}/{edge.DETECTIONS_JSON} "
                f"({type(e).__name__}: {e}); update the gate's project clone and rebuild"
            ) from e


@dataclass(frozen=True)
class GateScoring:
    """What the host scores every gate-built candidate against: the agreement frames and the reference's detections
    on them (as validation made them), and the labelled holdout's images and boxes (none: agreement alone)."""

    frames: list[Path]
    reference: list[Detections]  # at agreement_conf
    names: dict[int, str]
    labelled: list[Path]
    truth: list[Detections]


def score_gate_detections(found: dict[str, Detections], scoring: GateScoring, cfg: ValidateConfig) -> dict[str, Any]:
    """The metrics validation gives a candidate, from the gate's detections (at `validate.conf`), with the one
    metric (`tasks/pipeline/scoring.py`): agreement mAP and box counts against the reference, and on a labelled
    holdout mAP, precision and recall, overall and per class."""
    from tasks.pipeline.scoring import accuracy, agreement

    missing = [f.name for f in scoring.frames if f.name not in found]
    if missing:
        raise edge.BundleInvalid(f"the gate reported no detections for {len(missing)} frames ({missing[:3]})")
    preds = [found[f.name] for f in scoring.frames]
    row: dict[str, Any]
    row, _ = agreement(scoring.reference, preds, scoring.frames, scoring.names, cfg.agreement_conf)
    if scoring.labelled:
        preds = [found[f.name] for f in scoring.labelled]
        row.update(accuracy(scoring.truth, preds, scoring.names, scoring.labelled)[0])
    return row


def scoring_inputs(params: Params, reference: Candidate) -> GateScoring:
    """The frames and reference detections validation used (`agreement_images`, `detect`), rebuilt the same way."""
    from tasks.pipeline.validate import agreement_images, class_names, detect, holdout_images, holdout_truth

    cfg, p = params.validate_, params.paths
    names = class_names(reference)
    labelled = holdout_images(p.holdout, list(names.values()), cfg.labels)
    frames, _ = agreement_images(p.holdout_frames, labelled)
    truth = holdout_truth(p.holdout, labelled, list(names.values())) if labelled else []
    reference_dets = [above(d, cfg.agreement_conf) for d in detect(reference, frames, cfg)]
    return GateScoring(frames, reference_dets, names, labelled, truth)


def _ask_gate(
    params: Params, cand: Candidate, run_id: str, scoring: GateScoring, reference: Candidate, work: Path
) -> GateOutcome:
    """Bundle, log, request; whatever goes wrong is this candidate's failure with the reason, never the rebuild's."""
    try:
        bundle = write_bundle(
            cand.name, cand.path, reference, scoring.frames, params.validate_, work / cand.name, scoring.reference
        )
        log_bundle(params.tracking, run_id, bundle)
        return request_gate_build(params, run_id, params.serve.gate_wait_s)
    except Exception as e:  # fail closed for this candidate; the host's other candidates go on to promotion
        log.warning("candidate %s: the gate build did not run: %s", cand.name, e)
        return GateOutcome(run_id, False, f"{type(e).__name__}: {e}")


def merge_gate_row(
    row: dict[str, Any],
    outcome: GateOutcome,
    scored: dict[str, Any] | None,
    reference_row: dict[str, Any],
    geometry_row: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A gate-built candidate's row: failed with the gate's reason, or measured (the gate's latency, the host's
    scores, mAP drop against the reference and, `quant_map_drop`, against FP32 at its geometry: `geometry_row`,
    the reference's own when None). The speed-up is set by the caller (it needs every gate outcome)."""
    from tasks.pipeline.validate import GATE_KEY, GATE_MEASURED

    if not outcome.passed or scored is None:
        return {**row, GATE_KEY: f"failed: {outcome.reason}"[:4900]}
    merged = {**row, **scored, GATE_KEY: GATE_MEASURED}
    merged.update({k: outcome.metrics[k] for k in ("latency_p50_ms", "latency_p95_ms")})
    if "map50_95" in merged and "map50_95" in reference_row:
        merged["map_drop"] = round(float(reference_row["map50_95"]) - float(merged["map50_95"]), 5)
        geometry = geometry_row if geometry_row is not None else reference_row
        if "map50_95" in geometry:
            merged["quant_map_drop"] = round(float(geometry["map50_95"]) - float(merged["map50_95"]), 5)
    return merged


class GateStep(NamedTuple):
    """The rebuild after its gate step: the record (a gate-built candidate the gate measured now has the registry
    version of its engine) and every candidate's metrics (gate-built rows merged)."""

    record: RebuildRecord
    metrics: dict[str, dict[str, Any]]


def gate_engines(
    params: Params,
    candidates: list[Candidate],
    record: RebuildRecord,
    report: ValidationReport,
    work_dir: Path | None = None,
) -> GateStep:
    """The rebuild's gate step, after tracking: each gate-built candidate's engine is built and timed on the gate
    (`request_gate_build`), then `finish_gate_step` scores, registers and logs. A gate that failed or did not answer
    fails that candidate with its reason (its row says `gate: failed: ...`), and the other candidates are untouched."""
    import tempfile

    gated = [c for c in candidates if c.gate_built]
    if not gated:
        return GateStep(record, {name: dict(row) for name, row in report.metrics.items()})
    reference = next(c for c in candidates if c.name == params.build.reference)
    try:
        scoring: GateScoring | None = scoring_inputs(params, reference)
        unscored = ""
    except Exception as e:  # validation passed on these inputs a moment ago; still, never a crash of the rebuild
        scoring, unscored = None, f"the host could not prepare the gate's frames: {type(e).__name__}: {e}"
        log.warning("%s", unscored)
    outcomes = {}
    with tempfile.TemporaryDirectory(prefix="alpr-gate-bundles-", dir=work_dir) as tmp:
        for cand in gated:
            run_id = record.candidates[cand.name].run_id
            if scoring is None:
                outcomes[cand.name] = GateOutcome(run_id, False, unscored)
            else:
                outcomes[cand.name] = _ask_gate(params, cand, run_id, scoring, reference, Path(tmp))
    return finish_gate_step(params, candidates, record, report.metrics, outcomes, scoring)


def finish_gate_step(
    params: Params,
    candidates: list[Candidate],
    record: RebuildRecord,
    validated: dict[str, dict[str, Any]],
    outcomes: dict[str, GateOutcome],
    scoring: GateScoring | None,
) -> GateStep:
    """What the host does once the gate answered: score each measured engine's detections here like every other
    candidate's, register the engine the gate logged as the candidate's artifact (`track.register_gate_engine`:
    checked against the gate's own engine record, its hash on the run and the new registry version), and log the
    merged row to its run. A candidate the gate did not measure, or whose engine does not match its record, is
    failed with the reason and never registered."""
    import time

    from mlflow.entities import Metric

    from tasks.pipeline.track import register_gate_engine
    from tasks.pipeline.validate import GATE_KEY, GATE_MEASURED
    from tasks.support.tracking import client

    metrics = {name: dict(row) for name, row in validated.items()}
    gated = [c for c in candidates if c.gate_built]
    reference_row = metrics[params.build.reference]
    tracked = dict(record.candidates)
    for cand in gated:
        run_id = record.candidates[cand.name].run_id
        outcome = outcomes[cand.name]
        scored = None
        if outcome.passed and scoring is not None:
            try:
                scored = score_gate_detections(gate_detections(params.tracking, run_id), scoring, params.validate_)
                scored["gate_frames"] = float(len(scoring.frames))  # the frames the gate ran this engine on
            except Exception as e:
                outcome = GateOutcome(run_id, False, f"{type(e).__name__}: {e}")
        geometry_row = metrics.get(str(metrics[cand.name].get("geometry_reference", "")))
        row = merge_gate_row(metrics[cand.name], outcome, scored, reference_row, geometry_row)
        if row[GATE_KEY] == GATE_MEASURED:
            try:
                tracked[cand.name] = register_gate_engine(params.tracking, cand, run_id)
            except Exception as e:  # fail closed: an engine that does not match its record is never deployable
                why = f"the gate's engine was not registered: {type(e).__name__}: {e}"
                log.warning("candidate %s: %s", cand.name, why)
                row = merge_gate_row(metrics[cand.name], GateOutcome(run_id, False, why), None, reference_row)
        metrics[cand.name] = row
    speed_row = metrics[params.build.speed_reference_name]
    set_speedups(metrics, [c for c in gated if metrics[c.name][GATE_KEY] == GATE_MEASURED], speed_row)
    mc, now = client(params.tracking), int(time.time() * 1000)
    for cand in gated:
        row, run_id = metrics[cand.name], record.candidates[cand.name].run_id
        numeric = [Metric(k, float(v), now, 0) for k, v in row.items() if isinstance(v, int | float)]
        mc.log_batch(run_id, metrics=numeric)
        for key in (GATE_KEY, SPEEDUP_BASIS):
            if key in row:
                mc.set_tag(run_id, key, str(row[key])[:4900])
        log.info("candidate %s on the gate: %s", cand.name, row[GATE_KEY])
    return GateStep(dataclasses.replace(record, candidates=tracked), metrics)


def set_speedups(metrics: dict[str, dict[str, Any]], measured: list[Candidate], speed_row: dict[str, Any]) -> None:
    """Speed-up of each measured gate engine: against an FP32 engine timed on the same gate when one was (like for
    like), else against the host's FP32 speed reference (`speed_row`; another machine: the basis says so)."""
    fp32 = [c for c in measured if c.precision == "fp32"]
    if fp32:
        base, basis = float(metrics[fp32[0].name]["latency_p50_ms"]), f"{fp32[0].name} on the gate"
    else:
        base, basis = (
            float(speed_row["latency_p50_ms"]),
            "the host's FP32 speed reference (no FP32 engine timed on the gate)",
        )
    for c in measured:
        row = metrics[c.name]
        row["speedup"] = round(base / float(row["latency_p50_ms"]), 3)
        row[SPEEDUP_BASIS] = basis
