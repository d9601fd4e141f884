"""Validate each candidate on the runtime that will run it: accuracy on labels, agreement with FP32, latency, size.

A quantised artifact is not portable between runtimes, so every number here comes from running the artifact itself
through the gate's own inference path (`tasks.edge.detect.Detector`: its runtime, Ultralytics-equivalent letterbox
and NMS, no PyTorch), once per frame, and scoring the detections with the one metric (`tasks/pipeline/scoring.py`).
Agreement uses the FP32 reference's detections as truth: gate videos have no labels, and agreement is what tells
whether INT8 changed what the detector sees.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.edge.agreement import Detections, FrameDiff
from tasks.pipeline.labels import check_labels
from tasks.pipeline.scoring import (
    Matched,
    accuracy,
    agreement,
    agreement_truth,
    bootstrap_maps,
    drop_interval,
    match,
    resamples,
    score,
    summary,
)
from tasks.support.candidate import Candidate, openvino_xml
from tasks.support.config import ValidateConfig
from tasks.support.errors import AlprError, Remedy
from tasks.support.fsutil import atomic_dir, atomic_write_text
from tasks.support.images import frames_folder, list_images
from tasks.support.progress import steps
from tasks.support.shape import geometry_of, geometry_reference_name, shape_text

log = logging.getLogger(__name__)


class ValidationError(AlprError):
    """Validation inputs are missing or wrong; the message says what to do."""


NO_HOLDOUT = "no labelled holdout"  # the `holdout` value of every record of a rebuild validated without one
# a candidate whose engine the gate builds (build.tensorrt_on: gate): the host does not run its ONNX; its row says
# `gate: pending` until the gate's numbers are merged (tasks/pipeline/gate_remote.py: `measured`, or `failed: why`),
# and it cannot pass before
GATE_KEY, GATE_PENDING, GATE_MEASURED = "gate", "pending", "measured"


def holdout_images(holdout_dir: Path, names: Sequence[str], labels: str = "required") -> list[Path]:
    """The labelled holdout's images, after the one label checker (`tasks.pipeline.labels.check_labels`) passed.

    `labels` is `validate.labels`. required: no holdout, or one without a single box (every mAP would be 0 and
    the mAP gates would compare 0 with 0), is an error. optional: both mean "no labelled holdout" ([]), and the
    caller judges on agreement with FP32 alone. A holdout that is there but broken is an error in both modes.
    """
    folder = holdout_dir / "images"
    if not folder.is_dir() or not list_images(folder):
        if labels == "optional":
            log.warning("no labelled holdout in %s: judging on agreement with FP32 alone", holdout_dir)
            return []
        raise ValidationError(f"{folder}: no holdout images", remedy=Remedy.HOLDOUT)
    found = check_labels(holdout_dir, names)
    if found.boxes == 0:
        if labels == "optional":
            log.warning("the labelled holdout %s has no box at all: judging on agreement with FP32 alone", holdout_dir)
            return []
        raise ValidationError(
            f"{holdout_dir}: {len(found.images)} labelled images and not a single box, so every mAP would be 0 and "
            "the accuracy gates would compare 0 with 0",
            remedy=Remedy.HOLDOUT,
        )
    return [item.image for item in found.images]


def holdout_truth(holdout_dir: Path, images: list[Path], names: Sequence[str]) -> list[Detections]:
    """The labelled holdout's boxes in frame pixels, read by the project's label checker (`check_labels`: one label
    file per image, malformed lines, duplicates and classes outside `names` are errors)."""
    import cv2

    by_image = check_labels(holdout_dir, names).boxes_by_image
    found = []
    for image in images:
        img = cv2.imread(str(image))
        if img is None:
            raise ValidationError(f"{image}: cannot be read as an image; replace or remove it", remedy=Remedy.HOLDOUT)
        h, w = img.shape[:2]
        boxes = by_image[image.name]
        corners = tuple((x1 * w, y1 * h, x2 * w, y2 * h) for x1, y1, x2, y2 in (b.xyxy for b in boxes))
        found.append(Detections(corners, tuple(1.0 for _ in boxes), tuple(b.cls for b in boxes)))
    return found


def class_names(candidate: Candidate) -> dict[int, str]:
    """The class names the candidate's model was trained with, by class id, from the Ultralytics export metadata its
    artifact carries (ONNX metadata_props, the OpenVINO IR's `metadata.yaml`, the engine header)."""
    import ast

    import yaml

    from tasks.edge.tensorrt import onnx_metadata, read_engine

    path = candidate.path
    try:
        if path.suffix == ".onnx":
            meta: dict[str, Any] = onnx_metadata(path)
        elif path.suffix == ".engine":
            meta = read_engine(path)[0]
        else:
            meta = yaml.safe_load((openvino_xml(path).parent / "metadata.yaml").read_text()) or {}
        names = meta.get("names")
        names = ast.literal_eval(names) if isinstance(names, str) else names
        names = dict(enumerate(names)) if isinstance(names, list) else names
        found = {int(k): str(v) for k, v in names.items()}
    except (OSError, ValueError, SyntaxError, AttributeError, TypeError, yaml.YAMLError) as e:
        raise ValidationError(
            f"{path}: no class names in its Ultralytics export metadata ({type(e).__name__}: {e}); rebuild it",
            remedy=Remedy.BUILD,
        ) from e
    return dict(sorted(found.items()))


def detect(candidate: Candidate, images: Sequence[Path], cfg: ValidateConfig) -> list[Detections]:
    """The candidate's detections on each image, through the gate's own path (`Detector` on the artifact's runtime,
    `validate.threads`), run once per frame at the lowest confidence any metric needs (`validate.conf`, or
    `agreement_conf` if lower): the higher-threshold sets are derived with `above`.

    Refused: a runner whose input is not the candidate's recorded `input_shape` (a fixed-shape export runs at its
    own input, which must be what was built and recorded), and an image that cannot be decoded (named)."""
    import cv2

    from tasks.edge.detect import Detector

    conf = min(cfg.conf, cfg.agreement_conf)
    detector = Detector.open(candidate.path, cfg.threads)  # an engine is checked against this GPU first
    try:
        if tuple(detector.input_hw) != tuple(candidate.input_shape):
            raise ValidationError(
                f"{candidate.path}: its runtime takes input [{tuple(detector.input_hw)}] (height, width), not the "
                f"{candidate.name} candidate's recorded input_shape {list(candidate.input_shape)}; rebuild it",
                remedy=Remedy.BUILD,
            )
        found = []
        for image in images:
            frame = cv2.imread(str(image))
            if frame is None:
                raise ValidationError(
                    f"{image}: cannot be read as an image; replace or remove it, so that every metric covers all "
                    "the frames",
                    remedy=Remedy.HOLDOUT,
                )
            found.append(detector(frame, conf, cfg.iou))
    finally:
        detector.close()
    return found


def holdout_map50_95(candidate: Candidate, holdout_dir: Path, cfg: ValidateConfig) -> float:
    """mAP50-95 of `candidate` on the labelled holdout, as validation measures it (the smoke test's number)."""
    names = class_names(candidate)
    images = holdout_images(holdout_dir, list(names.values()))
    truth = holdout_truth(holdout_dir, images, list(names.values()))
    return summary(score(truth, detect(candidate, images, cfg), names, [str(i) for i in images]))["map50_95"]


def agreement_map50_95(candidate: Candidate, reference: Candidate, frames: list[Path], cfg: ValidateConfig) -> float:
    """Agreement mAP50-95 of `candidate` with `reference`'s detections on `frames`, as validation measures it."""
    truth = agreement_truth(detect(reference, frames, cfg), cfg.agreement_conf)
    box = score(truth, detect(candidate, frames, cfg), class_names(reference), [str(f) for f in frames])
    return float(box.map)


def agreement_images(frames_dir: Path | None, labelled: list[Path]) -> tuple[list[Path], str]:
    """Frames for agreement: the unlabelled frames of the holdout videos (`frames_dir/images`, or `frames_dir`
    itself) plus the labelled holdout's images. Returns the images and the unlabelled folder used (or a note that
    only the labelled holdout was).

    Both, not one or the other: frames of the newest videos show what the gates see now, but most of them show an
    empty lane, and a gate decided on a handful of boxes flips on one lost box; the labelled holdout keeps the
    count of reference boxes high enough to decide on.
    """
    if frames_dir is not None:
        folder = frames_folder(frames_dir)
        images = list_images(folder) if folder is not None else []
        if folder is not None and images:
            clash = {p.name for p in images} & {p.name for p in labelled}
            if clash:
                raise ValidationError(
                    f"{folder}: frames named like labelled holdout images ({sorted(clash)[:3]}); "
                    "rename one of the two sets."
                )
            log.info(
                "agreement frames: %d unlabelled frames from %s and %d labelled holdout images",
                len(images),
                folder,
                len(labelled),
            )
            return images + labelled, str(folder)
        log.warning("agreement frames: %s missing or empty; using the labelled holdout's images only", frames_dir)
    return labelled, (f"labelled holdout ({labelled[0].parent})" if labelled else "none")


def latency(candidate: Candidate, frame_path: Path, cfg: ValidateConfig) -> dict[str, Any]:
    """Latency on the candidate's own runtime, measured in a fresh process (tasks/runtime/latency.py says why)."""
    from tasks.runtime.latency import LatencyRequest, measure_in_subprocess

    req = LatencyRequest(
        str(candidate.path), str(frame_path), cfg.imgsz, cfg.agreement_conf, cfg.iou, cfg.warmup, cfg.runs,
        cfg.threads, tuple(cfg.batch_sizes), cfg.runs_budget_s, cfg.min_runs,
    )  # fmt: skip
    return measure_in_subprocess(req)


def retime_close(
    candidates: list[Candidate],
    rows: dict[str, dict[str, float | str]],
    reference: str,
    frame: Path,
    cfg: ValidateConfig,
) -> None:
    """Re-time together, interleaved, every candidate (the reference aside) whose p50 came out within
    `validate.retime_within` of another one's (validation does not know yet which will pass the gates, so any close
    pair may be the one the choice hinges on), and add to their rows the interleaved p50, the ratio to the fastest of
    them, its noise and the round medians (`tasks/runtime/latency.py` says why). Nothing when no two are close."""
    from tasks.runtime.latency import InterleavedRequest, interleaved_stats, measure_interleaved_in_subprocess

    contenders = [c for c in candidates if c.name != reference and not c.gate_built]
    if cfg.retime_rounds == 0 or len(contenders) < 2:
        return
    p50 = {c.name: float(rows[c.name]["latency_p50_ms"]) for c in contenders}

    def close_to_another(c: Candidate) -> bool:
        lo, hi = p50[c.name] / (1 + cfg.retime_within), p50[c.name] * (1 + cfg.retime_within)
        return any(lo <= p50[o.name] <= hi for o in contenders if o.name != c.name)

    close = [c for c in contenders if close_to_another(c)]
    if len(close) < 2:
        return
    req = InterleavedRequest(
        tuple(str(c.path) for c in close), str(frame), cfg.imgsz, cfg.agreement_conf, cfg.iou, cfg.warmup,
        cfg.threads, cfg.retime_rounds, cfg.retime_runs,
    )  # fmt: skip
    rounds = measure_interleaved_in_subprocess(req)
    stats = interleaved_stats({c.name: rounds[str(c.path)] for c in close})
    for name, values in stats.items():
        rows[name].update(values)
    log.info("re-timed %d close candidates interleaved: %s", len(close), stats)


def engine_memory(candidate: Candidate, cfg: ValidateConfig) -> dict[str, Any]:
    """Resident memory of running the engine alone (runtime + engine, no PyTorch), in its own short process
    (tasks/runtime/memory.py says what the numbers mean)."""
    from tasks.runtime.memory import engine_memory as probe

    return probe(candidate.backend, candidate.path, candidate.imgsz, cfg.memory_frames, cfg.threads)


ROLE_KEY = "role"  # each row says which FP32 reference it is, if any: every table shows it
ACCURACY_ROLE, SPEED_ROLE = "accuracy reference", "speed reference"
GEOMETRY_ROLE = "geometry reference"  # FP32 at an INT8 candidate's geometry (build_plan): compared, never a candidate
GEOMETRY_KEY = "geometry_reference"  # each row: the FP32 model at its own geometry it is compared with
CI_KEYS = ("map_drop_ci", "quant_map_drop_ci", "geometry_map_drop_ci")  # [low, high] beside each labelled drop


def role_of(name: str, reference: str, speed_reference: str, geometry_references: Sequence[str] = ()) -> str:
    """What a candidate is to the comparison: the accuracy reference (mAP drop, agreement), the speed reference
    (speed-ups), both, a geometry reference (FP32 at an INT8 candidate's geometry), or a candidate."""
    if name in geometry_references:
        return GEOMETRY_ROLE
    roles = [r for r, n in ((ACCURACY_ROLE, reference), (SPEED_ROLE, speed_reference)) if n == name]
    return " and ".join(roles) or "candidate"


def interval(row: dict[str, Any], key: str) -> tuple[float, float] | None:
    """The [low, high] interval `key` (`map_drop_ci`, ...) of a row: a list in validation's rows and the metrics
    JSON, `<key>_low`/`<key>_high` metrics once read back from MLflow; None when not measured."""
    value = row.get(key)
    if isinstance(value, list | tuple) and len(value) == 2:
        return float(value[0]), float(value[1])
    low, high = row.get(f"{key}_low"), row.get(f"{key}_high")
    if isinstance(low, int | float) and isinstance(high, int | float):
        return float(low), float(high)
    return None


def geometry_references(candidates: Sequence[Candidate], reference: str) -> dict[str, str]:
    """Each candidate's FP32 model at its own geometry (input shape and crop): the accuracy `reference` for a
    candidate of its geometry, else the one the build derived (`geometry_reference_name`). Refused when that was
    not built: quantization's cost cannot be told apart from the geometry's then."""
    by_name = {c.name: c for c in candidates}
    square = geometry_of(by_name[reference])
    found, missing = {}, []
    for cand in candidates:
        geometry = geometry_of(cand)
        name = reference if geometry == square else geometry_reference_name(reference, geometry)
        if name not in by_name:
            missing.append(f"{cand.name} ({geometry.text}: {name})")
        found[cand.name] = name
    if missing:
        raise ValidationError(
            f"no FP32 model at the geometry of {', '.join(missing)}: build derives one per geometry its INT8 "
            "candidates use; build again (alpr-ops build), then validate",
            remedy=Remedy.BUILD,
        )
    return found


@dataclass(frozen=True)
class ValidationReport:
    """Everything validation measured: the metrics rows, and the data behind the plots and the image grid."""

    reference: str
    metrics: dict[str, dict[str, float | str]]
    latency_samples: dict[str, dict[str, list[float]]]  # candidate -> {"inference_ms": [...], "e2e_ms": [...]}
    pr_curves: dict[str, dict[str, list[float]]]  # candidate -> {"recall": [...], "<class>": precision [...]}
    diffs: dict[str, list[FrameDiff]]  # candidate -> agreement frames, worst disagreement first
    agreement_source: str  # which frames agreement used
    holdout_images: int = 0
    agreement_frames: int = 0
    extra: dict[str, str] = field(default_factory=dict)
    speed_reference: str = ""  # the candidate every `speedup` is measured against ("": the accuracy reference)

    @property
    def speed_basis(self) -> str:
        """The name of the candidate every `speedup` row divides (the speed reference)."""
        return self.speed_reference or self.reference


def run_validation(
    candidates: list[Candidate],
    holdout_dir: Path,
    reference: str,
    cfg: ValidateConfig,
    frames_dir: Path | None = None,
    speed_reference: str | None = None,
) -> ValidationReport:
    """Validate every candidate: labelled accuracy (overall, per class, PR curve), agreement with FP32 on unlabelled
    frames (mAP, boxes gained/lost, confidence shift), latency on its runtime, size. Speed-ups are against
    `speed_reference` (build.speed_reference; None: `reference`).

    Two costs, measured apart (docs/int8-builds.md: Validation): against FP32 at the candidate's own geometry (its
    `geometry_reference`, `geometry_references`) the quantization's (`quant_map_drop`, `agreement_map50_95`, what
    the gates use), against the square `reference` what the user sees (`map_drop`, `agreement_square_map50_95`);
    each geometry reference's row holds the geometry's own cost (`geometry_map_drop`, `geometry_agreement_map50_95`)
    and is not timed (it is never deployed). Every labelled drop gets its paired-bootstrap interval (`*_ci`)."""
    by_name = {c.name: c for c in candidates}
    if reference not in by_name:
        raise ValidationError(f"reference candidate '{reference}' was not built; build it first (build.reference).")
    speed_ref = speed_reference or reference
    if speed_ref not in by_name:
        raise ValidationError(
            f"speed reference candidate '{speed_ref}' was not built; build it first (build.speed_reference)."
        )
    geo_ref = geometry_references(candidates, reference)
    derived = sorted({g for g in geo_ref.values() if g != reference})
    names = class_names(by_name[reference])
    images = holdout_images(holdout_dir, list(names.values()), cfg.labels)
    agree_images, source = agreement_images(frames_dir, images)
    if not agree_images:
        raise ValidationError(
            f"no labelled holdout in {holdout_dir} and no agreement frames in {frames_dir}: nothing to validate on",
            remedy=Remedy.HOLDOUT,
        )
    results: dict[str, dict[str, float | str]] = {}
    samples, curves, diffs = {}, {}, {}
    truth = holdout_truth(holdout_dir, images, list(names.values())) if images else None
    labelled = [agree_images.index(i) for i in images]  # the labelled images are agreement frames too
    found: dict[str, list[Detections]] = {reference: detect(by_name[reference], agree_images, cfg)}
    boxes = sum(len(d.conf) for d in agreement_truth(found[reference], cfg.agreement_conf))
    if not boxes:
        raise ValidationError(
            f"{source}: the reference '{reference}' finds no plate (conf >= {cfg.agreement_conf}) on any of "
            f"{len(agree_images)} agreement frames, so agreement cannot be measured. Use frames that show "
            "vehicles (paths.holdout_frames) or lower validate.agreement_conf."
        )
    log.info("reference %s gave %d boxes on %d frames (agreement truth)", reference, boxes, len(agree_images))

    def detections(name: str) -> list[Detections]:
        if name not in found:
            found[name] = detect(by_name[name], agree_images, cfg)
        return found[name]

    matched: dict[str, Matched] = {}
    for cand in steps(candidates, "validate: measuring candidates"):
        row: dict[str, float | str] = {"backend": cand.backend, "precision": cand.precision,
                                       "input_shape": shape_text(cand.input_shape)}  # fmt: skip
        if cand.crop:
            row["geometry"] = geometry_of(cand).text
        if cand.name not in derived:
            row[GEOMETRY_KEY] = geo_ref[cand.name]
        if cand.gate_built:  # measured where its engine runs, after tracking (gate_remote.gate_engines)
            results[cand.name] = {**row, GATE_KEY: GATE_PENDING, "size_mb": cand.size_mb}
            continue
        dets = detections(cand.name)
        if truth is not None:
            preds = [dets[i] for i in labelled]
            scores, curves[cand.name] = accuracy(truth, preds, names, images)
            row.update(scores)
            matched[cand.name] = match(truth, preds)
        else:
            row["holdout"] = NO_HOLDOUT
        # a geometry reference is compared with the square reference (the geometry's own cost); a candidate with the
        # FP32 model at its own geometry (the gates' agreement), and with the square one for the record
        against = reference if cand.name in derived else geo_ref[cand.name]
        agree, frame_diffs = agreement(detections(against), dets, agree_images, names, cfg.agreement_conf)
        row.update(agree)
        if against == reference:
            row["agreement_square_map50_95"] = agree["agreement_map50_95"]
        else:
            square, _ = agreement(found[reference], dets, agree_images, names, cfg.agreement_conf)
            row["agreement_square_map50_95"] = square["agreement_map50_95"]
        if cand.name in derived:
            row["geometry_agreement_map50_95"] = agree["agreement_map50_95"]
        diffs[cand.name] = sorted(frame_diffs, key=lambda d: d.score, reverse=True)
        if cand.name not in derived:  # a geometry reference is never deployed: its latency decides nothing
            measured = latency(cand, agree_images[0], cfg)
            row.update(measured["metrics"])
            row.update(engine_memory(cand, cfg))
            samples[cand.name] = measured["samples"]
        row["size_mb"] = cand.size_mb
        results[cand.name] = row
    retime_close([c for c in candidates if c.name not in derived], results, reference, agree_images[0], cfg)
    ref, speed = results[reference], results[speed_ref]
    if GATE_KEY in speed:
        raise ValidationError(f"speed reference '{speed_ref}' is built on the gate: the host cannot time it")
    plates = sum(len(t.conf) for t in truth) if truth is not None else 0
    for name, row in results.items():
        row[ROLE_KEY] = role_of(name, reference, speed_ref, derived)
        if GATE_KEY in row:
            continue
        if truth is not None:
            row["map_drop"] = round(float(ref["map50_95"]) - float(row["map50_95"]), 5)
            row["holdout_plates"] = float(plates)
            if name in derived:
                row["geometry_map_drop"] = row["map_drop"]
            elif row["precision"] != "fp32":  # a quantized model: what quantization cost, at its own geometry
                geo_row = results[geo_ref[name]]
                row["quant_map_drop"] = round(float(geo_row["map50_95"]) - float(row["map50_95"]), 5)
        if name not in derived:
            row["speedup"] = round(float(speed["latency_p50_ms"]) / float(row["latency_p50_ms"]), 3)
    if truth is not None and cfg.bootstrap_resamples:
        add_intervals(results, matched, reference, geo_ref, derived, cfg)
    log.info(
        "validated %d candidates on %d holdout frames, agreement on %d frames (%s), %d threads (%s CPU cores)",
        len(results), len(images), len(agree_images), source, cfg.threads, os.cpu_count(),
    )  # fmt: skip
    return ValidationReport(
        reference, results, samples, curves, diffs, source, len(images), len(agree_images),
        speed_reference=speed_ref,
    )  # fmt: skip


def add_intervals(
    results: dict[str, dict[str, Any]],
    matched: dict[str, Matched],
    reference: str,
    geo_ref: dict[str, str],
    derived: Sequence[str],
    cfg: ValidateConfig,
) -> None:
    """The paired bootstrap of every labelled drop: every model scored on the same `validate.bootstrap_resamples`
    resamples of the holdout's images (fixed seed), each drop's central `validate.bootstrap_level` interval added
    to its row (`map_drop_ci`, `quant_map_drop_ci`, a geometry reference's `geometry_map_drop_ci`)."""
    import time

    started = time.perf_counter()
    draws = resamples(next(iter(matched.values())).frames, cfg.bootstrap_resamples)
    maps = {name: bootstrap_maps(m, draws) for name, m in matched.items()}
    for name in matched:
        row = results[name]
        row["map_drop_ci"] = list(drop_interval(maps[reference], maps[name], cfg.bootstrap_level))
        if name in derived:
            row["geometry_map_drop_ci"] = row["map_drop_ci"]
        elif "quant_map_drop" in row:
            row["quant_map_drop_ci"] = list(drop_interval(maps[geo_ref[name]], maps[name], cfg.bootstrap_level))
    log.info("bootstrap: %d resamples of %d images, %d models, %.1f s", len(draws), draws.shape[1], len(maps),
             time.perf_counter() - started)  # fmt: skip


def latency_cdf(samples: list[float]) -> list[tuple[float, float]]:
    """(latency, fraction of runs at or below it) for each run, sorted: the empirical CDF."""
    ordered = sorted(samples)
    n = len(ordered)
    return [(round(v, 3), round((i + 1) / n, 5)) for i, v in enumerate(ordered)]


def write_plot_data(plots_dir: Path, report: ValidationReport) -> Path:
    """CSV plot data that `dvc.yaml` declares: `latency_cdf/<candidate>.csv`, `pr_curve/<candidate>.csv`.

    The folder is replaced as a whole, so a candidate dropped from params does not leave a stale curve behind.
    """
    import pandas as pd

    with atomic_dir(plots_dir) as tmp:
        (tmp / "latency_cdf").mkdir()
        (tmp / "pr_curve").mkdir()
        for name, s in report.latency_samples.items():
            cdf = pd.DataFrame(latency_cdf(s["inference_ms"]), columns=["latency_ms", "cdf"])
            cdf.to_csv(tmp / "latency_cdf" / f"{name}.csv", index=False)
        for name, curve in report.pr_curves.items():
            rows = [
                {"class": cls, "recall": r, "precision": p}
                for cls, values in curve.items()
                if cls != "recall"
                for r, p in zip(curve["recall"], values, strict=True)
            ]
            pd.DataFrame(rows, columns=["class", "recall", "precision"]).to_csv(
                tmp / "pr_curve" / f"{name}.csv", index=False
            )
    return plots_dir


def write_metrics(
    path: Path, reference: str, metrics: dict[str, dict[str, float | str]], speed_reference: str | None = None
) -> Path:
    """The metrics JSON that `dvc.yaml` declares (`dvc metrics show/diff` read it); it names the accuracy reference
    and the speed reference every `speedup` is measured against."""
    doc = {"reference": reference, "speed_reference": speed_reference or reference, "candidates": metrics}
    return atomic_write_text(path, json.dumps(doc, indent=2, sort_keys=True) + "\n")
