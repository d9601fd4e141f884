import json
import shutil
from pathlib import Path

import pytest

from tasks.pipeline.validate import (
    GEOMETRY_ROLE,
    ValidationError,
    agreement_images,
    run_validation,
    write_metrics,
    write_plot_data,
)

pytestmark = pytest.mark.integration

KEYS = {
    "map50", "map50_95", "box_precision", "box_recall", "agreement_map50", "agreement_map50_95",
    "latency_p50_ms", "latency_p95_ms", "e2e_p50_ms", "size_mb", "map_drop", "speedup", "backend", "precision",
    "role", "class.License_Plate.map50", "class.License_Plate.map50_95", "class.License_Plate.precision",
    "class.License_Plate.recall", "boxes_gained", "boxes_lost", "boxes_matched", "conf_shift_mean",
    "latency_p99_ms", "latency_mean_ms", "e2e_p99_ms", "throughput_batch1_fps", "throughput_best_fps", "best_batch",
    "engine_rss_mb", "runtime_rss_mb", "engine_mb", "pre_ms", "inference_ms", "post_ms", "threads",
    "threads_effective", "cpu_model", "gpu_name", "batch_note",
}  # fmt: skip


def _timed(metrics: dict) -> dict:
    """The rows of the models validation times: all but the FP32 at the INT8 geometry (never deployed, not timed)."""
    return {name: row for name, row in metrics.items() if row["role"] != GEOMETRY_ROLE}


def test_every_candidate_gets_every_metric(validated: dict, built: tuple) -> None:
    params, candidates = built
    assert set(validated) == {c.name for c in candidates}
    assert set(validated) - set(_timed(validated)) == {"fp32@192x320"}
    for name, row in _timed(validated).items():
        assert set(row) >= KEYS, name
        assert 0 <= row["map50_95"] <= row["map50"] <= 1
        assert 0 < row["latency_p50_ms"] <= row["latency_p95_ms"]
    ref, speed = validated["fp32"], validated["fp32-ov"]
    assert ref["map_drop"] == 0 and speed["speedup"] == 1  # mAP against the accuracy reference, speed the speed one
    assert ref["role"] == "accuracy reference" and speed["role"] == "speed reference"
    assert speed["precision"] == "fp32" and speed["backend"] == "openvino"
    for name, row in _timed(validated).items():  # every speed-up is the OpenVINO FP32's p50 over the candidate's
        assert row["speedup"] == round(speed["latency_p50_ms"] / row["latency_p50_ms"], 3), name
        assert name in ("fp32", "fp32-ov") or row["role"] == "candidate"
    # the same FP32 model on OpenVINO and on ONNX Runtime: the same detections, bar float rounding
    assert speed["agreement_map50_95"] > 0.9 and abs(speed["map50_95"] - ref["map50_95"]) < 0.01
    # the reference agrees with its own detections; the detector finds the synthetic plates
    assert ref["agreement_map50"] > 0.9
    assert ref["map50"] > 0.3
    assert validated["ov-int8"]["precision"] == "int8" and validated["ov-int8"]["backend"] == "openvino"
    # INT8 candidates still see what FP32 sees (a broken export that detects nothing would score ~0)
    for name in ("ov-int8", "ort-int8"):
        assert validated[name]["agreement_map50"] > 0.5, name
        assert validated[name]["map50"] > 0.5 * ref["map50"], name
    # validation reads the DVC-tracked holdout but never writes into it (no labels.cache beside the labels)
    assert sorted(p.name for p in params.paths.holdout.iterdir()) == ["holdout.json", "images", "labels"]


def test_metrics_json_round_trip(validated: dict, tmp_path: Path) -> None:
    path = write_metrics(tmp_path / "m" / "validate.json", "fp32", validated, "fp32-ov")
    assert json.loads(path.read_text())["reference"] == "fp32"
    assert json.loads(path.read_text())["speed_reference"] == "fp32-ov"
    assert json.loads(path.read_text())["candidates"] == json.loads(json.dumps(validated))


def test_missing_holdout_is_a_clear_error(built: tuple, tmp_path: Path) -> None:
    params, candidates = built
    with pytest.raises(ValidationError, match="no holdout images"):
        run_validation(candidates, tmp_path, "fp32", params.validate_)
    with pytest.raises(ValidationError, match="reference candidate 'nope'"):
        run_validation(candidates, params.paths.holdout, "nope", params.validate_)


def test_agreement_counts_latency_and_threads(validation_report, built: tuple) -> None:
    params, candidates = built
    shapes = {c.name: "x".join(str(v) for v in c.input_shape) for c in candidates}
    report = validation_report
    # agreement ran on the unlabelled frames of the holdout videos and the labelled holdout's images
    assert report.agreement_source.endswith("images") and "holdout_frames" in report.agreement_source
    assert report.agreement_frames == 4 + len(list((params.paths.holdout / "images").iterdir()))
    for name, row in _timed(report.metrics).items():
        # one class, labelled: per-class numbers equal the overall ones
        assert row["class.License_Plate.map50_95"] == pytest.approx(row["map50_95"]), name
        # every reference box is either matched or lost; gained boxes are the candidate's extras
        assert row["boxes_matched"] + row["boxes_lost"] == row["boxes_reference"], name
        assert row["latency_p50_ms"] <= row["latency_p95_ms"] <= row["latency_p99_ms"], name
        assert row["latency_runs"] == params.validate_.runs
        assert len(report.latency_samples[name]["inference_ms"]) == params.validate_.runs
        # threads were pinned, and the runtime itself reports the pinned count back
        assert row["threads"] == row["threads_effective"] == params.validate_.threads, name
        # Ultralytics' default exports are static batch 1: batched throughput is not faked
        assert row["artifact_batch"] == 1 and row["best_batch"] == 1, name
        assert row["throughput_best_fps"] == row["throughput_batch1_fps"] > 0
        assert "fixed batch of 1" in row["batch_note"]
        # memory of the engine alone (no torch in that process): the runtime's baseline, then runtime + engine
        assert row["engine_rss_mb"] > row["runtime_rss_mb"] > 0 and row["engine_mb"] > 0, name
        assert row["memory_input_shape"] == f"1x3x{shapes[name]}", name  # INT8: the camera's shape
        assert row["inference_ms"] == pytest.approx(row["latency_mean_ms"])
        assert row["cpu_model"] and row["gpu_name"] == "none"
        curve = report.pr_curves[name]
        assert len(curve["recall"]) == len(curve["License_Plate"]) == 101
        diffs = report.diffs[name]
        assert [d.score for d in diffs] == sorted((d.score for d in diffs), reverse=True), "worst first"
        assert sum(d.lost for d in diffs) == row["boxes_lost"]
    ref = report.metrics["fp32"]
    assert ref["boxes_gained"] == ref["boxes_lost"] == 0 and ref["conf_shift_mean"] == 0
    assert ref["boxes_reference"] > 0, "the reference finds plates on the agreement frames"


def test_plot_data_for_dvc(validation_report, tmp_path: Path) -> None:
    import pandas as pd

    out = write_plot_data(tmp_path / "plots", validation_report)
    for name in _timed(validation_report.metrics):
        cdf = pd.read_csv(out / "latency_cdf" / f"{name}.csv")
        assert list(cdf.columns) == ["latency_ms", "cdf"] and cdf["cdf"].iloc[-1] == 1
        assert cdf["latency_ms"].is_monotonic_increasing
        pr = pd.read_csv(out / "pr_curve" / f"{name}.csv")
        assert list(pr.columns) == ["class", "recall", "precision"] and len(pr) == 101


def test_agreement_falls_back_to_the_labelled_holdout(built: tuple, tmp_path: Path, caplog) -> None:
    params, _ = built
    labelled = sorted((params.paths.holdout / "images").iterdir())
    (tmp_path / "empty" / "images").mkdir(parents=True)
    for folder in (tmp_path / "missing", tmp_path / "empty"):
        images, source = agreement_images(folder, labelled)
        assert images == labelled and source.startswith("labelled holdout")
    assert "using the labelled holdout's images only" in caplog.text
    (tmp_path / "flat").mkdir()
    shutil.copyfile(labelled[0], tmp_path / "flat" / "frame_0.jpg")
    images, source = agreement_images(tmp_path / "flat", labelled)
    assert images == [tmp_path / "flat" / "frame_0.jpg", *labelled] and source == str(tmp_path / "flat")
    shutil.copyfile(labelled[0], tmp_path / "flat" / labelled[0].name)
    with pytest.raises(ValidationError, match="rename one of the two sets"):
        agreement_images(tmp_path / "flat", labelled)


def test_close_candidates_are_retimed_together_interleaved(built: tuple) -> None:
    from tasks.pipeline.validate import retime_close

    params, candidates = built
    pair = [c for c in candidates if c.name in ("ov-int8", "ov-int8-mixed")]
    frame = next((params.paths.holdout / "images").iterdir())
    cfg = params.validate_.model_copy(update={"warmup": 1, "retime_rounds": 2, "retime_runs": 2, "retime_within": 0.5})
    # each within 50% of the fastest: both re-timed, in one process, two rounds each
    rows = {c.name: {"latency_p50_ms": 10.0} for c in pair}
    rows["ov-int8-mixed"]["latency_p50_ms"] = 14.0
    retime_close(pair, rows, "fp32", frame, cfg)
    for name, row in rows.items():
        assert row["latency_interleaved_p50_ms"] > 0 and row["latency_vs_fastest_noise"] >= 0, name
        assert len(row["latency_rounds_ms"].split()) == 2, name
    fastest = min(rows, key=lambda n: (rows[n]["latency_interleaved_p50_ms"], n))
    assert rows[fastest]["latency_vs_fastest"] == 1.0 and rows[fastest]["latency_vs_fastest_noise"] == 0.0
    # one of them further off: nothing to re-time
    far = {c.name: {"latency_p50_ms": 10.0} for c in pair}
    far["ov-int8-mixed"]["latency_p50_ms"] = 16.0
    retime_close(pair, far, "fp32", frame, cfg)
    assert all(set(row) == {"latency_p50_ms"} for row in far.values())


def test_timed_runs_stop_at_their_budget_but_never_below_min_runs(built: tuple) -> None:
    import dataclasses

    from tasks.runtime.latency import LatencyRequest, measure

    params, candidates = built
    cand = next(c for c in candidates if c.name == "fp32")
    frame = sorted((params.paths.holdout / "images").iterdir())[0]
    v = params.validate_
    req = LatencyRequest(
        str(cand.path), str(frame), v.imgsz, v.agreement_conf, v.iou, 1, 8, v.threads, (1,), budget_s=1e-9, min_runs=3
    )
    spent = measure(req)  # the budget is spent after the first run: it stops at min_runs
    assert spent["metrics"]["latency_runs"] == 3 and len(spent["samples"]["inference_ms"]) == 3
    unbounded = measure(dataclasses.replace(req, budget_s=None))
    assert unbounded["metrics"]["latency_runs"] == 8 and len(unbounded["samples"]["inference_ms"]) == 8
    # fewer runs than min_runs: all of them, whatever the budget
    assert measure(dataclasses.replace(req, runs=2))["metrics"]["latency_runs"] == 2


def test_validation_the_build_gate_and_the_gate_step_score_agreement_alike(validation_report, built: tuple) -> None:
    """The three former ways to score agreement are one: on validation's own agreement frames, the build's INT8 gate
    (`AgreementGate`, raw outputs of letterboxed frames as NNCF hands them) and the host's scoring of gate
    detections (`score_gate_detections`) give the candidate exactly validation's agreement, and the gate step gives
    validation's labelled numbers."""
    from tasks.edge.agreement import above
    from tasks.edge.runners import open_runner
    from tasks.pipeline.gate_remote import GateScoring, score_gate_detections
    from tasks.pipeline.quantize import AgreementGate
    from tasks.pipeline.validate import class_names, detect, holdout_images, holdout_truth

    params, candidates = built
    by_name = {c.name: c for c in candidates}
    ref, cand = by_name["fp32"], by_name["fp32-ov"]  # one input shape: the build's gate runs both models at it
    assert ref.input_shape == cand.input_shape
    cfg, row = params.validate_, validation_report.metrics[cand.name]
    labelled = holdout_images(params.paths.holdout, params.model.names)
    frames, _ = agreement_images(Path(validation_report.agreement_source), labelled)
    assert len(frames) == validation_report.agreement_frames
    gate = AgreementGate(open_runner(ref.path, cfg.threads), frames, ref.input_shape, cfg)
    assert gate.score(open_runner(cand.path, cfg.threads)) == pytest.approx(row["agreement_map50_95"], abs=1e-9)
    reference = [above(d, cfg.agreement_conf) for d in detect(ref, frames, cfg)]
    truth = holdout_truth(params.paths.holdout, labelled, params.model.names)
    scoring = GateScoring(frames, reference, class_names(ref), labelled, truth)
    found = {f.name: d for f, d in zip(frames, detect(cand, frames, cfg), strict=True)}
    scored = score_gate_detections(found, scoring, cfg)
    for key in ("agreement_map50", "agreement_map50_95", "boxes_matched", "boxes_lost", "map50_95", "box_recall"):
        assert scored[key] == row[key], key
