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
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from tasks.build import Candidate
from tasks.config import ValidateConfig
from tasks.fsutil import atomic_write_text
from tasks.progress import steps

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp"})


class ValidationError(RuntimeError):
    """Validation inputs are missing or wrong; the message says what to do."""


def holdout_images(holdout_dir: Path) -> list[Path]:
    """The labelled holdout's images; fails fast when there are none or labels are missing."""
    images = sorted(p for p in (holdout_dir / "images").glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise ValidationError(
            f"{holdout_dir / 'images'}: no holdout images. Create a labelled holdout "
            "(`alpr-ops sample-videos` writes one) or pass --holdout DIR."
        )
    if not (holdout_dir / "labels").is_dir():
        raise ValidationError(f"{holdout_dir / 'labels'}: no labels folder (YOLO .txt files named like the images).")
    return images


def write_dataset_yaml(path: Path, root: Path, names: dict[int, str]) -> Path:
    """A dataset YAML for Ultralytics' validator over `root/images` (labels in `root/labels`)."""
    path.write_text(yaml.safe_dump({"path": str(root), "train": "images", "val": "images", "names": names}))
    return path


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
    return write_dataset_yaml(out / "data.yaml", out, names)


def _yolo(candidate: Candidate):  # -> ultralytics.YOLO, imported lazily (slow import; env set by the CLI first)
    from ultralytics import YOLO

    return YOLO(str(candidate.path), task="detect")


def accuracy(candidate: Candidate, dataset_yaml: Path, cfg: ValidateConfig, work_dir: Path) -> dict[str, float]:
    """mAP50, mAP50-95, precision, recall of `candidate` against the labels of `dataset_yaml` (same letterbox)."""
    metrics = _yolo(candidate).val(
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
    box = metrics.box
    return {
        "map50": float(box.map50),
        "map50_95": float(box.map),
        "box_precision": float(box.mp),
        "box_recall": float(box.mr),
    }


def write_pseudo_labels(reference: Candidate, images: list[Path], out: Path, cfg: ValidateConfig) -> Path:
    """A dataset whose labels are the reference's detections on `images`; returns its dataset YAML."""
    model = _yolo(reference)
    mirror_images(images, out)
    boxes = 0
    for image in images:
        result = model.predict(
            str(image), imgsz=cfg.imgsz, conf=cfg.agreement_conf, iou=cfg.iou, device="cpu", verbose=False
        )[0]
        xywhn = result.boxes.xywhn.cpu().numpy()
        cls = result.boxes.cls.cpu().numpy().astype(int)
        lines = [f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}" for c, (x, y, w, h) in zip(cls, xywhn, strict=True)]
        boxes += len(lines)
        (out / "labels" / f"{image.stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    log.info("reference %s gave %d boxes on %d holdout frames (agreement labels)", reference.name, boxes, len(images))
    return write_dataset_yaml(out / "data.yaml", out, dict(model.names))


def latency(candidate: Candidate, frame: np.ndarray, cfg: ValidateConfig) -> dict[str, float]:
    """Batch-1 latency on the candidate's own runtime: inference-only and end-to-end percentiles, in ms."""
    model = _yolo(candidate)
    kwargs = {"imgsz": cfg.imgsz, "conf": cfg.agreement_conf, "iou": cfg.iou, "device": "cpu", "verbose": False}
    for _ in range(cfg.warmup):
        model.predict(frame, **kwargs)
    inference, total = [], []
    for _ in range(cfg.runs):
        started = time.perf_counter()
        result = model.predict(frame, **kwargs)[0]
        total.append((time.perf_counter() - started) * 1000)
        inference.append(result.speed["inference"])
    return {
        "latency_p50_ms": round(float(np.percentile(inference, 50)), 3),
        "latency_p95_ms": round(float(np.percentile(inference, 95)), 3),
        "latency_mean_ms": round(statistics.fmean(inference), 3),
        "e2e_p50_ms": round(float(np.percentile(total, 50)), 3),
        "e2e_p95_ms": round(float(np.percentile(total, 95)), 3),
    }


def validate_candidates(
    candidates: list[Candidate], holdout_dir: Path, reference: str, cfg: ValidateConfig
) -> dict[str, dict[str, float | str]]:
    """Metrics per candidate (accuracy, agreement with `reference`, latency, size); a pure function of its inputs."""
    import cv2

    by_name = {c.name: c for c in candidates}
    if reference not in by_name:
        raise ValidationError(f"reference candidate '{reference}' was not built; build it first (build.reference).")
    images = holdout_images(holdout_dir)
    frame = cv2.imread(str(images[0]))
    if frame is None:
        raise ValidationError(f"{images[0]}: cannot be read as an image; regenerate the holdout.")
    results: dict[str, dict[str, float | str]] = {}
    with tempfile.TemporaryDirectory(prefix="alpr-validate-") as tmp:
        work = Path(tmp)
        names = dict(_yolo(by_name[reference]).names)
        labelled = mirror_holdout(holdout_dir, images, work / "holdout", names)
        agreement = write_pseudo_labels(by_name[reference], images, work / "agreement", cfg)
        for cand in steps(candidates, "validate: measuring candidates"):
            row: dict[str, float | str] = {"backend": cand.backend, "precision": cand.precision}
            row.update(accuracy(cand, labelled, cfg, work / "runs"))
            agree = accuracy(cand, agreement, cfg, work / "runs")
            row["agreement_map50"] = agree["map50"]
            row["agreement_map50_95"] = agree["map50_95"]
            row.update(latency(cand, frame, cfg))
            row["size_mb"] = cand.size_mb
            results[cand.name] = row
    ref = results[reference]
    for row in results.values():
        row["map_drop"] = round(float(ref["map50_95"]) - float(row["map50_95"]), 5)
        row["speedup"] = round(float(ref["latency_p50_ms"]) / float(row["latency_p50_ms"]), 3)
    log.info("validated %d candidates on %d holdout frames (%s CPU cores)", len(results), len(images), os.cpu_count())
    return results


def write_metrics(path: Path, reference: str, metrics: dict[str, dict[str, float | str]]) -> Path:
    """The metrics JSON that `dvc.yaml` declares (`dvc metrics show/diff` read it)."""
    doc = {"reference": reference, "candidates": metrics}
    return atomic_write_text(path, json.dumps(doc, indent=2, sort_keys=True) + "\n")


def read_metrics(path: Path) -> dict[str, dict[str, float | str]]:
    if not path.is_file():
        raise ValidationError(f"{path}: metrics not found. Run `alpr-ops validate` first.")
    return json.loads(path.read_text())["candidates"]
