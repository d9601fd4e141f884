"""Record a rebuild in MLflow and read it back: a parent run with the lineage (tasks/pipeline/lineage.py), a child run
per candidate, a registry version each; the newest finished rebuild and the registered version of an artifact.

All calls go through an explicit `MlflowClient` (`tasks.support.tracking.client`), so nothing global (tracking URI,
active run) is set as a side effect and several stores can be used side by side (tests, a server).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.pipeline.lineage import rebuild_datasets, snapshot_table, video_table
from tasks.pipeline.validate import CI_KEYS, GATE_KEY, GATE_MEASURED, GEOMETRY_KEY, NO_HOLDOUT, ROLE_KEY, interval
from tasks.pipeline.validation_cache import CACHE_KEY
from tasks.runtime.latency import ROUNDS_KEY
from tasks.support.candidate import Candidate
from tasks.support.config import Params, TrackingConfig
from tasks.support.shape import shape_text
from tasks.support.tracking import (
    ARTIFACT_PATH,
    KIND_TAG,
    LINEAGE_JSON,
    PARENT_TAG,
    PRUNED_TAG,
    REUSED_RUN_TAG,
    REUSED_VERSION_TAG,
    RUN_NAME_TAG,
    client,
    experiment_id,
    gate_tag,
)
from tasks.support.verify import SHA_TAG
from tasks.support.videos import VideoInput

if TYPE_CHECKING:
    from tasks.pipeline.validate import ValidationReport

log = logging.getLogger(__name__)

GATE_ONNX_PATH = "gate_onnx"  # a gate-built candidate's ONNX (what the gate builds its engine from), not deployable
ONNX_SHA_TAG = "onnx_sha256"  # its sha256 on the run (artifact_sha256 is the engine's, once the gate measured it)


@dataclass(frozen=True)
class TrackedCandidate:
    name: str
    run_id: str
    version: str
    source: str


@dataclass(frozen=True)
class RebuildRecord:
    """Where a rebuild was recorded: the parent run and, per candidate, its run and registry version."""

    experiment_id: str
    parent_run_id: str
    candidates: dict[str, TrackedCandidate]


def flatten(prefix: str, data: dict[str, Any]) -> dict[str, str]:
    """`{'a': {'b': 1}}` -> `{'a.b': '1'}`, for MLflow params."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(name, value))
        else:
            out[name] = str(value)
    return out


def log_rebuild(
    params: Params,
    candidates: list[Candidate],
    metrics: dict[str, dict[str, float | str]],
    lineage: dict[str, str],
    report: ValidationReport | None = None,
    inputs: Sequence[VideoInput] | None = None,
) -> RebuildRecord:
    """Log one rebuild (parent + child runs), upload each artifact and register it as a model version.

    With the validation `report`, each run also gets its plots (latency histogram/CDF, PR curve, FP32-vs-candidate
    grid) and the data behind them, and every run records its datasets (videos, calibration, holdout frames).
    """
    from mlflow.entities import Param

    mc = client(params.tracking)
    exp = experiment_id(mc, params.tracking)
    tags = {KIND_TAG: "rebuild", RUN_NAME_TAG: f"rebuild-{lineage.get('frames_hash', '')[:8]}", **lineage}
    if report is not None:
        tags["agreement_frames"] = report.agreement_source
        tags["labelled_holdout"] = f"{report.holdout_images} images" if report.holdout_images else NO_HOLDOUT
        ref_row = report.metrics[report.reference]
        tags.update({k: str(ref_row[k]) for k in ("cpu_model", "gpu_name") if k in ref_row})
        if CACHE_KEY in report.extra:  # on the parent run: "hit <key>" (the report was reused) or "stored <key>"
            tags[CACHE_KEY] = report.extra[CACHE_KEY]
    parent = mc.create_run(exp, tags=tags)
    pid = parent.info.run_id
    _log_holdout_review(mc, pid, params.paths.holdout, int(parent.info.start_time))
    shared = flatten("", params.model_dump(mode="json", by_alias=True, include={"extract", "validate_", "build"}))
    shared.pop("build.candidates", None)
    mc.log_batch(pid, params=[Param(k, v) for k, v in shared.items()])
    try:
        parent_inputs, child_inputs = rebuild_datasets(params, report, inputs)
        if parent_inputs:
            mc.log_inputs(pid, datasets=parent_inputs)
        _log_parent_artifacts(mc, pid, params, lineage, metrics, report, inputs)
        log_roi(mc, pid, params)
        name = params.tracking.registered_model
        if mc.search_registered_models(filter_string=f"name = '{name}'") == []:
            mc.create_registered_model(name, description="INT8/FP32 plate detector candidates for the gate runtime")
        tracked = {}
        for cand in candidates:
            tracked[cand.name] = _log_candidate(
                mc, exp, pid, cand, metrics[cand.name], lineage, name, report, child_inputs, params
            )
        mc.set_terminated(pid)
    except BaseException:
        mc.set_terminated(pid, status="FAILED")
        raise
    log.info("logged rebuild %s with %d candidates to %s", pid, len(tracked), params.tracking.shown_uri)
    return RebuildRecord(exp, pid, tracked)


def _log_holdout_review(mc: Any, pid: str, holdout_dir: Path, now: int) -> None:
    """How the reviewed labels differ from the detector's pre-labels (`holdout.json` `review`, written when the
    labels were pulled): the detector's own error on this camera, beside the holdout's dataset entry."""
    from mlflow.entities import Metric

    from tasks.pipeline.labels import read_holdout_info

    info = read_holdout_info(holdout_dir) if holdout_dir.is_dir() else None
    review = (info or {}).get("review") or {}
    numbers = {k: float(v) for k, v in review.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    if numbers:
        mc.log_batch(pid, metrics=[Metric(f"holdout_review.{k}", v, now, 0) for k, v in numbers.items()])
    if info is not None:
        mc.set_tag(pid, "holdout_source", str(info.get("source", "")))


def _log_parent_artifacts(
    mc: Any,
    pid: str,
    params: Params,
    lineage: dict[str, str],
    metrics: dict[str, dict[str, float | str]],
    report: ValidationReport | None,
    inputs: Sequence[VideoInput] | None = None,
) -> None:
    """The parent run's files: lineage (with the full video list: the extraction's snapshot `inputs` when given;
    the nightly check reads it as the champion's videos), the metrics of all candidates, latency CDFs."""
    with tempfile.TemporaryDirectory(prefix="alpr-track-") as tmp:
        out = Path(tmp)
        doc: dict[str, Any] = {"tags": lineage}
        if inputs is not None:
            doc["videos"] = snapshot_table(inputs).to_dict(orient="records")
        elif params.paths.videos.is_dir():
            doc["videos"] = video_table(params.paths.videos).to_dict(orient="records")
        (out / LINEAGE_JSON).write_text(json.dumps(doc, indent=2, sort_keys=True))
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        if report is not None:
            from tasks.pipeline.plots import latency_cdf_all

            latency_cdf_all(report, out / "plots" / "latency_cdf.png")
        mc.log_artifacts(pid, str(out))


def log_roi(mc: Any, run_id: str, params: Params) -> bool:
    """The build's region of interest (`roi.json` beside the candidates) on the rebuild's run: params `roi`,
    `roi_mode`, `roi_crop`, metrics `roi_plates`, `roi_area_fraction`, and `roi/roi.json` with `roi/roi.png` (the
    region drawn on a frame, `tasks/pipeline/roi_image.py`). Nothing is logged when the build wrote no `roi.json`;
    returns whether it did."""
    from mlflow.entities import Metric, Param

    from tasks.pipeline.roi_image import ROI_DIR, pick_frame, roi_run_values, write_roi_artifacts
    from tasks.support.roi import ROI_JSON, read_roi

    path = params.paths.candidates / ROI_JSON
    if not path.is_file():
        return False
    record = read_roi(path)
    values, numbers = roi_run_values(record)
    now = int(mc.get_run(run_id).info.start_time)
    mc.log_batch(
        run_id,
        metrics=[Metric(k, v, now, 0) for k, v in numbers.items()],
        params=[Param(k, v) for k, v in values.items()],
    )
    frame, plates = pick_frame(params.paths.holdout, params.model.names, (params.paths.calibration,))
    with tempfile.TemporaryDirectory(prefix="alpr-roi-") as tmp:
        mc.log_artifacts(run_id, str(write_roi_artifacts(record, frame, plates, Path(tmp) / ROI_DIR)), ROI_DIR)
    log.info("rebuild run %s: region of interest %s (%s)", run_id, values["roi"], record.reason or record.mode)
    return True


def _log_candidate_plots(mc: Any, rid: str, name: str, report: ValidationReport, grid_frames: int) -> None:
    """Plots and their data for one candidate run: `plots/*.png` and `validation/*.json`."""
    from dataclasses import asdict

    from tasks.pipeline.plots import candidate_plots

    with tempfile.TemporaryDirectory(prefix="alpr-plots-") as tmp:
        out = Path(tmp)
        candidate_plots(report, name, out / "plots", grid_frames)
        (out / "validation").mkdir()
        (out / "validation" / "latency_samples.json").write_text(json.dumps(report.latency_samples[name]))
        if name in report.pr_curves:
            (out / "validation" / "pr_curve.json").write_text(json.dumps(report.pr_curves[name]))
        worst = [{**asdict(d), "score": round(d.score, 4)} for d in report.diffs[name]]
        (out / "validation" / "disagreements.json").write_text(json.dumps(worst, indent=1))
        mc.log_artifacts(rid, str(out))


def _log_candidate(
    mc: Any,
    exp: str,
    parent_id: str,
    cand: Candidate,
    row: dict[str, float | str],
    lineage: dict[str, str],
    registered_model: str,
    report: ValidationReport | None = None,
    inputs: list[Any] | None = None,
    params: Params | None = None,
) -> TrackedCandidate:
    """One child run (a failure marks it FAILED, never leaves it RUNNING) and its registry version."""
    strings = {k: str(v) for k, v in row.items() if isinstance(v, str) and k not in ("backend", "precision")}
    # hardware (cpu_model, gpu_name), the batch note and the memory probe's input shape or why it did not run
    tags = {
        KIND_TAG: "candidate",
        PARENT_TAG: parent_id,
        RUN_NAME_TAG: cand.name,
        "candidate": cand.name,
        "backend": cand.backend,
        "precision": cand.precision,
        "method": cand.method,  # "ultralytics": Ultralytics' own export (a peer); otherwise our quantizer
        # what ships: this artifact; for an engine built on the gate, the engine, recorded once the gate measured it
        # (`register_gate_engine`): its ONNX is not deployable and gets no artifact hash and no registry version
        **({ONNX_SHA_TAG: cand.sha256} if cand.gate_built else {SHA_TAG: cand.sha256}),
        "base_model_sha256": cand.base_model_sha256,
        **lineage,
        **strings,  # so latencies and memory are read in context
    }
    run = mc.create_run(exp, tags=tags)
    rid = run.info.run_id
    try:
        if inputs:
            mc.log_inputs(rid, datasets=inputs)
        if report is not None and params is not None and cand.name in report.latency_samples:  # not gate-built
            _log_candidate_plots(mc, rid, cand.name, report, params.validate_.grid_frames)
        version, source = _fill_candidate_run(mc, run, cand, row, tags, registered_model)
    except BaseException:
        mc.set_terminated(rid, status="FAILED")
        raise
    mc.set_terminated(rid)
    return TrackedCandidate(cand.name, rid, version, source)


def register_gate_engine(tracking: TrackingConfig, cand: Candidate, run_id: str) -> TrackedCandidate:
    """Register the engine the gate built and measured for the gate-built candidate `cand` (its ONNX on the host):
    download what the gate logged to the run (`gate_build/`: engine, plan, engine record), check the engine and its
    plan against the gate's own record (`check_engine_record`), and record THAT engine as the candidate's artifact:
    logged to the run's `artifact/` with its `candidate.json`, its sha256 as `artifact_sha256` on the run and on the
    new registry version (`verify.recorded_sha256` requires both to agree). Called only for a candidate the gate
    measured (`gate_remote.finish_gate_step`); anything missing or mismatched raises, and nothing is registered."""
    import dataclasses
    import shutil

    from tasks.edge.gate_build import RESULT_PATH
    from tasks.edge.tensorrt import ENGINE_RECORD_JSON, EngineMismatch, check_engine_record, plan_path
    from tasks.support.candidate import CANDIDATE_JSON
    from tasks.support.hashing import path_size_mb
    from tasks.support.verify import verify_artifact

    mc = client(tracking)
    run = mc.get_run(run_id)
    with tempfile.TemporaryDirectory(prefix="alpr-gate-engine-") as tmp:
        got = Path(mc.download_artifacts(run_id, RESULT_PATH, tmp))
        try:
            record = json.loads((got / ENGINE_RECORD_JSON).read_text())
        except (OSError, ValueError) as e:
            raise EngineMismatch(f"run {run_id}: the gate logged no readable {RESULT_PATH}/{ENGINE_RECORD_JSON}") from e
        name = str(record.get("engine", ""))
        if Path(name).name != name or not name.endswith(".engine"):
            raise EngineMismatch(f"run {run_id}: the gate's engine record names '{name}', not an engine file beside it")
        check_engine_record(got / name, record)
        folder = Path(tmp) / ARTIFACT_PATH
        folder.mkdir()
        for f in (got / name, plan_path(got / name), got / ENGINE_RECORD_JSON):
            shutil.copyfile(f, folder / f.name)
        # the gate's record, and what the engine was built from: the ONNX the host exported (still `built_on: gate`)
        origin = {"built_on": cand.tensorrt.get("built_on"), "onnx": cand.artifact, "onnx_sha256": cand.sha256}
        engine = dataclasses.replace(
            cand,
            folder=folder,
            artifact=name,
            sha256=str(record["engine_sha256"]),
            size_mb=path_size_mb(folder / name),
            tensorrt={**record, **origin, "gate_run_id": run_id},
        )
        (folder / CANDIDATE_JSON).write_text(engine.to_json())
        verify_artifact(folder, engine.sha256, f"the gate's engine record of run {run_id}")  # path, format, hash
        mc.log_artifacts(run_id, str(folder), ARTIFACT_PATH)
    mc.set_tag(run_id, SHA_TAG, engine.sha256)
    version_tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
    version_tags.update({SHA_TAG: engine.sha256, GATE_KEY: GATE_MEASURED})
    source = f"{run.info.artifact_uri}/{ARTIFACT_PATH}"
    mv = mc.create_model_version(tracking.registered_model, source=source, run_id=run_id, tags=version_tags)
    log.info("registered the gate's engine of %s (sha256 %s) as version %s", cand.name, engine.sha256[:12], mv.version)
    return TrackedCandidate(cand.name, run_id, str(mv.version), source)


def registered_with_sha(mc: Any, registered_model: str, sha256: str) -> Any | None:
    """The oldest registry version of `registered_model` whose artifact sha256 is `sha256` and whose run still holds
    it (`alpr-ops gc` deletes the artifacts of old runs); None when there is none. A failure to read the registry
    raises: "could not read" never passes for "not registered"."""
    if not sha256:
        return None
    found = mc.search_model_versions(f"name = '{registered_model}' and tags.`{SHA_TAG}` = '{sha256}'")
    same = [mv for mv in found if (mv.tags or {}).get(SHA_TAG) == sha256]  # the filter, checked
    for mv in sorted(same, key=lambda mv: int(mv.version)):
        if not mc.get_run(mv.run_id).data.tags.get(PRUNED_TAG):
            return mv
    return None


def _fill_candidate_run(
    mc: Any, run: Any, cand: Candidate, row: dict[str, float | str], tags: dict[str, str], registered_model: str
) -> tuple[str, str]:
    """Params, metrics and the artifact of one candidate run, then its registry version; returns the version and
    its source. An artifact byte-identical to a registered version's (same sha256) is not uploaded nor registered
    again: that version is reused, keeping its own run and lineage, and this run names it."""
    from mlflow.entities import Metric, Param

    rid = run.info.run_id
    now = int(run.info.start_time)
    cand_params = {"candidate": cand.name, "backend": cand.backend, "precision": cand.precision, "imgsz": cand.imgsz,
                   "input_shape": shape_text(cand.input_shape)}  # fmt: skip
    cand_params.update({f"toolchain.{k}": v for k, v in cand.toolchain.items()})
    numeric = numeric_metrics(row)
    numeric["build_seconds"] = cand.build_seconds
    mc.log_batch(
        rid,
        metrics=[Metric(k, v, now, 0) for k, v in numeric.items()],
        params=[Param(k, str(v)) for k, v in cand_params.items()],
    )
    if cand.gate_built:  # the ONNX the gate builds from, kept for the record; no version until the gate measured it
        mc.log_artifacts(rid, str(cand.folder), GATE_ONNX_PATH)
        return "", ""
    existing = registered_with_sha(mc, registered_model, cand.sha256)
    if existing is not None:
        mc.set_tag(rid, REUSED_VERSION_TAG, str(existing.version))
        mc.set_tag(rid, REUSED_RUN_TAG, str(existing.run_id))
        log.info("%s: artifact sha256 %s is version %s's (run %s): reused, nothing registered", cand.name,
                 cand.sha256[:12], existing.version, existing.run_id)  # fmt: skip
        return str(existing.version), str(existing.source)
    mc.log_artifacts(rid, str(cand.folder), ARTIFACT_PATH)
    source = f"{run.info.artifact_uri}/{ARTIFACT_PATH}"
    version_tags = {k: v for k, v in tags.items() if not k.startswith("mlflow.")}
    mv = mc.create_model_version(registered_model, source=source, run_id=rid, tags=version_tags)
    return str(mv.version), source


def numeric_metrics(row: dict[str, Any]) -> dict[str, float]:
    """A metrics row as MLflow metrics: its numbers, and each bootstrap interval (`map_drop_ci`: [low, high]) as two
    metrics `map_drop_ci_low` and `map_drop_ci_high` (`validate.interval` reads them back)."""
    numeric = {k: float(v) for k, v in row.items() if isinstance(v, int | float)}
    for key in CI_KEYS:
        found = interval(row, key)
        if found is not None:
            numeric[f"{key}_low"], numeric[f"{key}_high"] = found
    return numeric


def newest_rebuild_run(mc: Any, cfg: TrackingConfig) -> Any | None:
    """The parent run of the newest finished rebuild in the store; None only when there is none (no experiment
    yet, or no finished rebuild in it). A store error raises."""
    exp = mc.get_experiment_by_name(cfg.experiment)
    if exp is None:
        return None
    parents = mc.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{KIND_TAG}` = 'rebuild' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return parents[0] if parents else None


def latest_rebuild(cfg: TrackingConfig) -> tuple[RebuildRecord, dict[str, dict[str, float | str]]] | None:
    """The newest finished rebuild in the store, with each candidate's metrics; None when there is none."""
    mc = client(cfg)
    parent = newest_rebuild_run(mc, cfg)
    if parent is None:
        return None
    pid, eid = parent.info.run_id, parent.info.experiment_id
    children = mc.search_runs([eid], filter_string=f"tags.`{PARENT_TAG}` = '{pid}'")
    all_versions = mc.search_model_versions(f"name = '{cfg.registered_model}'")
    versions = {mv.run_id: mv for mv in all_versions if mv.run_id}
    numbered = {str(mv.version): mv for mv in all_versions}
    tracked, metrics = {}, {}
    for run in sorted(children, key=lambda r: r.info.start_time):
        name = run.data.tags.get("candidate", run.info.run_name)
        mv = versions.get(run.info.run_id) or numbered.get(run.data.tags.get(REUSED_VERSION_TAG, ""))
        tracked[name] = TrackedCandidate(name, run.info.run_id, str(mv.version) if mv else "", mv.source if mv else "")
        metrics[name] = {
            **run.data.metrics,
            "backend": run.data.tags.get("backend", ""),
            "precision": run.data.tags.get("precision", ""),
            "passed": run.data.tags.get(gate_tag("passed"), ""),
            **{
                k: run.data.tags[k]
                for k in ("holdout", ROLE_KEY, ROUNDS_KEY, GATE_KEY, GEOMETRY_KEY, "geometry", "input_shape")
                if k in run.data.tags
            },
        }
    return RebuildRecord(eid, pid, tracked), metrics
