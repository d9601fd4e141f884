"""Validate each candidate on the runtime that will run it: accuracy on labels, agreement with FP32, latency, size.

A quantised artifact is not portable between runtimes, so every number here comes from loading the artifact itself
with Ultralytics' backend for its format. Agreement uses the FP32 reference's detections as labels: gate videos have
no labels, and agreement is what tells whether INT8 changed what the detector sees.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.edge.agreement import Detections, FrameDiff, agreement_counts, compare
from tasks.edge.tensorrt import ensure_runnable
from tasks.pipeline.labels import check_labels
from tasks.support.candidate import Candidate
from tasks.support.config import ValidateConfig
from tasks.support.errors import AlprError, Remedy
from tasks.support.fsutil import atomic_dir, atomic_write_text
from tasks.support.images import frames_folder, list_images, write_dataset_yaml
from tasks.support.progress import steps
from tasks.support.shape import shape_text

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


def mirror_images(images: list[Path], out: Path) -> Path:
    """`out/images` linking to `images`, and an empty `out/labels`.

    Ultralytics' validator writes `labels.cache` beside the labels it reads; validating on a mirror keeps the
    DVC-tracked holdout byte-for-byte unchanged.
    """
    (out / "images").mkdir(parents=True)
    (out / "labels").mkdir()
    for image in images:
        (out / "images" / image.name).symlink_to(image.resolve())
    return out


def mirror_holdout(holdout_dir: Path, images: list[Path], out: Path, names: dict[int, str]) -> Path:
    """A private copy of the labelled holdout (linked images, copied labels); returns its dataset YAML."""
    mirror_images(images, out)
    for image in images:
        label = holdout_dir / "labels" / f"{image.stem}.txt"
        if label.is_file():
            shutil.copyfile(label, out / "labels" / label.name)
    return write_dataset_yaml(out / "data.yaml", out / "images", names)


def class_names(candidate: Candidate) -> list[str]:
    """The class names the candidate's model was trained with, in class-id order."""
    names = dict(_yolo(candidate).names)
    return [names[i] for i in sorted(names)]


def _yolo(candidate: Candidate):  # -> ultralytics.YOLO, imported lazily (slow import; env set by the CLI first)
    from ultralytics import YOLO

    ensure_runnable(candidate.path)
    return YOLO(str(candidate.path), task="detect")


def dataset_counts(dataset_yaml: Path) -> tuple[int, int]:
    """Images and boxes of a dataset this module wrote (`images/` and `labels/` beside its YAML)."""
    root = dataset_yaml.parent
    images = list_images(root / "images")
    boxes = 0
    for image in images:
        label = root / "labels" / f"{image.stem}.txt"
        if label.is_file():
            boxes += sum(1 for line in label.read_text(encoding="utf-8-sig").splitlines() if line.split())
    return len(images), boxes


def _val(candidate: Candidate, dataset_yaml: Path, cfg: ValidateConfig, work_dir: Path) -> Any:
    """Ultralytics' validator on `dataset_yaml` (same letterbox as the gate); returns its DetMetrics.

    Ultralytics drops an image it finds corrupt (and duplicate boxes) with a log line and scores the rest, so the
    images and boxes it scored are checked against the dataset: a metric over part of the holdout is an error.
    So is the input it ran at: Ultralytics takes a fixed-shape export's input from its metadata (`validate.imgsz`
    does not apply), which must be the candidate's recorded `input_shape`.
    """
    scored: dict[str, int] = {}
    ran_at: list[tuple[int, ...]] = []

    def count(validator: Any) -> None:
        scored.update(images=int(validator.seen), boxes=int(validator.metrics.nt_per_class.sum()))
        ran_at.append(tuple(int(v) for v in validator.args.imgsz))

    model = _yolo(candidate)
    model.add_callback("on_val_end", count)
    metrics = model.val(
        data=str(dataset_yaml),
        imgsz=cfg.imgsz,
        batch=1,
        rect=False,
        conf=cfg.conf,
        iou=cfg.iou,
        device="cpu",
        plots=False,
        verbose=False,
        project=str(work_dir),
        name=f"val-{candidate.name}",
        exist_ok=True,
    )
    if ran_at != [candidate.input_shape]:
        raise ValidationError(
            f"{candidate.path}: Ultralytics validated it at input {ran_at} (height, width), not the {candidate.name} "
            f"candidate's recorded input_shape {list(candidate.input_shape)}; rebuild it",
            remedy=Remedy.BUILD,
        )
    images, boxes = dataset_counts(dataset_yaml)
    if scored != {"images": images, "boxes": boxes}:
        raise ValidationError(
            f"{dataset_yaml.parent}: Ultralytics scored {scored.get('images', 0)} of {images} images and "
            f"{scored.get('boxes', 0)} of {boxes} boxes (its log names what it dropped as corrupt); fix or remove "
            "those images, so that every metric covers the whole holdout",
            remedy=Remedy.HOLDOUT,
        )
    return metrics


def _summary(box: Any) -> dict[str, float]:
    return {
        "map50": float(box.map50),
        "map50_95": float(box.map),
        "box_precision": float(box.mp),
        "box_recall": float(box.mr),
    }


def per_class(box: Any, names: dict[int, str]) -> dict[str, float]:
    """Precision, recall, mAP50, mAP50-95 of each class that has labels, as `class.<name>.<metric>` keys."""
    out: dict[str, float] = {}
    for i, c in enumerate(box.ap_class_index):
        p, r, ap50, ap = box.class_result(i)
        name = names.get(int(c), str(c))
        out |= {
            f"class.{name}.precision": float(p),
            f"class.{name}.recall": float(r),
            f"class.{name}.map50": float(ap50),
            f"class.{name}.map50_95": float(ap),
        }
    return out


def pr_curve(box: Any, names: dict[int, str], points: int = 101) -> dict[str, list[float]]:
    """The precision-recall curve at IoU 0.5 per class (Ultralytics' own, resampled to `points` recalls)."""
    import numpy as np

    px = np.asarray(box.px)
    idx = np.linspace(0, len(px) - 1, points).round().astype(int)
    curve: dict[str, list[float]] = {"recall": [round(float(x), 4) for x in px[idx]]}
    for row, c in zip(np.asarray(box.prec_values), box.ap_class_index, strict=False):
        curve[names.get(int(c), str(c))] = [round(float(x), 4) for x in row[idx]]
    return curve


def accuracy(candidate: Candidate, dataset_yaml: Path, cfg: ValidateConfig, work_dir: Path) -> dict[str, float]:
    """mAP50, mAP50-95, precision, recall of `candidate` against the labels of `dataset_yaml` (same letterbox)."""
    return _summary(_val(candidate, dataset_yaml, cfg, work_dir).box)


def predict(candidate: Candidate, images: list[Path], cfg: ValidateConfig) -> list[Detections]:
    """The candidate's detections (confidence >= `agreement_conf`) on each image, on its own runtime."""
    model = _yolo(candidate)
    found = []
    for image in images:
        boxes = model.predict(
            str(image), imgsz=cfg.imgsz, conf=cfg.agreement_conf, iou=cfg.iou, device="cpu", verbose=False
        )[0].boxes
        found.append(
            Detections(
                tuple(tuple(round(float(v), 2) for v in b) for b in boxes.xyxy.cpu().numpy()),
                tuple(round(float(c), 4) for c in boxes.conf.cpu().numpy()),
                tuple(int(c) for c in boxes.cls.cpu().numpy()),
            )
        )
    return found


def write_pseudo_labels(
    reference: Candidate, images: list[Path], out: Path, cfg: ValidateConfig, detections: list[Detections] | None = None
) -> Path:
    """A dataset whose labels are the reference's detections on `images`; returns its dataset YAML."""
    import cv2

    detections = detections if detections is not None else predict(reference, images, cfg)
    mirror_images(images, out)
    for image, det in zip(images, detections, strict=True):
        img = cv2.imread(str(image))
        if img is None:
            raise ValidationError(f"{image}: cannot be read as an image; regenerate the frames.")
        h, w = img.shape[:2]
        # one label per distinct box: boxes equal to 6 decimals (an untrained head's priors) are one label, as
        # Ultralytics' loader would make them, so the scored-boxes check counts what it scores
        lines = list(
            dict.fromkeys(
                f"{c} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
                for c, (x1, y1, x2, y2) in zip(det.cls, det.xyxy, strict=True)
            )
        )
        (out / "labels" / f"{image.stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    boxes = sum(len(d.cls) for d in detections)
    log.info("reference %s gave %d boxes on %d frames (agreement labels)", reference.name, boxes, len(images))
    return write_dataset_yaml(out / "data.yaml", out / "images", dict(_yolo(reference).names))


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


def role_of(name: str, reference: str, speed_reference: str) -> str:
    """What a candidate is to the comparison: the accuracy reference (mAP drop, agreement), the speed reference
    (speed-ups), both, or a candidate."""
    roles = [r for r, n in ((ACCURACY_ROLE, reference), (SPEED_ROLE, speed_reference)) if n == name]
    return " and ".join(roles) or "candidate"


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
    """Validate every candidate: labelled accuracy (overall, per class, PR curve), agreement with `reference` on
    unlabelled frames (mAP, boxes gained/lost, confidence shift), latency on its runtime, size. Speed-ups are
    against `speed_reference` (build.speed_reference; None: `reference`)."""
    by_name = {c.name: c for c in candidates}
    if reference not in by_name:
        raise ValidationError(f"reference candidate '{reference}' was not built; build it first (build.reference).")
    speed_ref = speed_reference or reference
    if speed_ref not in by_name:
        raise ValidationError(
            f"speed reference candidate '{speed_ref}' was not built; build it first (build.speed_reference)."
        )
    names = dict(_yolo(by_name[reference]).names)
    images = holdout_images(holdout_dir, list(names.values()), cfg.labels)
    agree_images, source = agreement_images(frames_dir, images)
    if not agree_images:
        raise ValidationError(
            f"no labelled holdout in {holdout_dir} and no agreement frames in {frames_dir}: nothing to validate on",
            remedy=Remedy.HOLDOUT,
        )
    results: dict[str, dict[str, float | str]] = {}
    samples, curves, diffs = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="alpr-validate-") as tmp:
        work = Path(tmp)
        labelled = mirror_holdout(holdout_dir, images, work / "holdout", names) if images else None
        ref_dets = predict(by_name[reference], agree_images, cfg)
        if not any(d.conf for d in ref_dets):
            raise ValidationError(
                f"{source}: the reference '{reference}' finds no plate (conf >= {cfg.agreement_conf}) on any of "
                f"{len(agree_images)} agreement frames, so agreement cannot be measured. Use frames that show "
                "vehicles (paths.holdout_frames) or lower validate.agreement_conf."
            )
        agreement = write_pseudo_labels(by_name[reference], agree_images, work / "agreement", cfg, ref_dets)
        for cand in steps(candidates, "validate: measuring candidates"):
            row: dict[str, float | str] = {"backend": cand.backend, "precision": cand.precision,
                                           "input_shape": shape_text(cand.input_shape)}  # fmt: skip
            if cand.gate_built:  # measured where its engine runs, after tracking (gate_remote.gate_engines)
                results[cand.name] = {**row, GATE_KEY: GATE_PENDING, "size_mb": cand.size_mb}
                continue
            if labelled is not None:
                box = _val(cand, labelled, cfg, work / "runs").box
                row.update(_summary(box))
                row.update(per_class(box, names))
                curves[cand.name] = pr_curve(box, names)
            else:
                row["holdout"] = NO_HOLDOUT
            agree = _summary(_val(cand, agreement, cfg, work / "runs").box)
            row["agreement_map50"] = agree["map50"]
            row["agreement_map50_95"] = agree["map50_95"]
            cand_dets = ref_dets if cand.name == reference else predict(cand, agree_images, cfg)
            frame_diffs = [compare(str(img), r, c) for img, r, c in zip(agree_images, ref_dets, cand_dets, strict=True)]
            row.update(agreement_counts(frame_diffs))
            diffs[cand.name] = sorted(frame_diffs, key=lambda d: d.score, reverse=True)
            measured = latency(cand, agree_images[0], cfg)
            row.update(measured["metrics"])
            row.update(engine_memory(cand, cfg))
            samples[cand.name] = measured["samples"]
            row["size_mb"] = cand.size_mb
            results[cand.name] = row
        retime_close(candidates, results, reference, agree_images[0], cfg)
    ref, speed = results[reference], results[speed_ref]
    if GATE_KEY in speed:
        raise ValidationError(f"speed reference '{speed_ref}' is built on the gate: the host cannot time it")
    for name, row in results.items():
        row[ROLE_KEY] = role_of(name, reference, speed_ref)
        if GATE_KEY in row:
            continue
        if labelled is not None:
            row["map_drop"] = round(float(ref["map50_95"]) - float(row["map50_95"]), 5)
        row["speedup"] = round(float(speed["latency_p50_ms"]) / float(row["latency_p50_ms"]), 3)
    log.info(
        "validated %d candidates on %d holdout frames, agreement on %d frames (%s), %d threads (%s CPU cores)",
        len(results), len(images), len(agree_images), source, cfg.threads, os.cpu_count(),
    )  # fmt: skip
    return ValidationReport(
        reference, results, samples, curves, diffs, source, len(images), len(agree_images),
        speed_reference=speed_ref,
    )  # fmt: skip


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
