"""Pictures a reviewer looks at rather than reads: latency histogram/CDF, PR curve, FP32-vs-candidate image grid.

Figures are drawn with matplotlib's object API (`Figure` + Agg canvas), never `pyplot`, so nothing global (backend,
current figure) is touched; boxes are drawn with OpenCV. Everything is local: no fonts or assets are fetched.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from tasks.pipeline.validate import Detections, FrameDiff, ValidationReport, latency_cdf

log = logging.getLogger(__name__)

REFERENCE_COLOUR = (0, 200, 0)  # BGR: reference boxes green
CANDIDATE_COLOUR = (0, 140, 255)  # BGR: candidate boxes orange
LOST_COLOUR = (0, 0, 255)  # BGR: red banner when boxes were lost or gained


def _figure(width: float, height: float):  # -> matplotlib.figure.Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def latency_plot(samples: dict[str, list[float]], title: str, out: Path) -> Path:
    """Histogram (left) and empirical CDF with p50/p95/p99 marked (right) of one candidate's per-run latencies."""
    fig = _figure(10, 4)
    hist, cdf_ax = fig.subplots(1, 2)
    for key, colour in (("inference_ms", "tab:blue"), ("e2e_ms", "tab:orange")):
        values = samples.get(key) or []
        if not values:
            continue
        label = "inference" if key == "inference_ms" else "end-to-end (pre+inference+post)"
        hist.hist(values, bins=min(40, max(5, len(values) // 5)), alpha=0.6, color=colour, label=label)
        points = latency_cdf(values)
        cdf_ax.plot([p[0] for p in points], [p[1] for p in points], color=colour, label=label)
        for q in (50, 95, 99):
            cdf_ax.axvline(float(np.percentile(values, q)), color=colour, linestyle=":", linewidth=0.8)
    hist.set_xlabel("latency (ms)")
    hist.set_ylabel("runs")
    hist.legend(fontsize=8)
    cdf_ax.set_xlabel("latency (ms)  (dotted: p50, p95, p99)")
    cdf_ax.set_ylabel("fraction of runs")
    cdf_ax.set_ylim(0, 1.01)
    cdf_ax.grid(alpha=0.3)
    fig.suptitle(title)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def latency_cdf_all(report: ValidationReport, out: Path) -> Path:
    """Every candidate's inference-latency CDF on one chart, for the parent run."""
    fig = _figure(7, 4)
    ax = fig.subplots()
    for name, samples in report.latency_samples.items():
        points = latency_cdf(samples["inference_ms"])
        ax.plot([p[0] for p in points], [p[1] for p in points], label=name)
    ax.set_xlabel("inference latency (ms)")
    ax.set_ylabel("fraction of runs")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Latency CDF per candidate (batch 1, own runtime)")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def pr_curve_plot(curve: dict[str, list[float]], title: str, out: Path) -> Path:
    """Ultralytics' precision-recall curve (IoU 0.5) per class."""
    fig = _figure(5, 5)
    ax = fig.subplots()
    recall = curve["recall"]
    for cls, precision in curve.items():
        if cls != "recall":
            ax.plot(recall, precision, label=cls)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def _draw(image: np.ndarray, det: Detections, colour: tuple[int, int, int], header: str, bad: bool) -> np.ndarray:
    import cv2

    img = image.copy()
    for (x1, y1, x2, y2), conf in zip(det.xyxy, det.conf, strict=True):
        p1, p2 = (int(x1), int(y1)), (int(x2), int(y2))
        cv2.rectangle(img, p1, p2, colour, 2)
        cv2.putText(img, f"{conf:.2f}", (p1[0], max(12, p1[1] - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1)
    banner = np.zeros((28, img.shape[1], 3), dtype=np.uint8)
    banner[:] = LOST_COLOUR if bad else (40, 40, 40)
    cv2.putText(banner, header, (6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
    return np.vstack([banner, img])


def disagreement_grid(diffs: list[FrameDiff], reference: str, candidate: str, out: Path, n: int) -> Path:
    """`n` frames, worst disagreement first: reference detections left, the candidate's right, one row per frame."""
    import cv2

    rows = []
    for rank, diff in enumerate(diffs[:n], start=1):
        image = cv2.imread(diff.image)
        if image is None:
            raise FileNotFoundError(f"{diff.image}: frame for the image grid cannot be read")
        scale = 480 / image.shape[1]
        image = cv2.resize(image, (480, int(image.shape[0] * scale)))
        ref = _scaled(diff.reference, scale)
        cand = _scaled(diff.candidate, scale)
        name = Path(diff.image).name
        bad = bool(diff.gained or diff.lost)
        left = _draw(image, ref, REFERENCE_COLOUR, f"#{rank} {name}  {reference}: {len(ref.conf)} boxes", False)
        shift = f"conf {diff.conf_shift / diff.matched:+.2f}" if diff.matched else ""
        text = f"{candidate}: {len(cand.conf)} boxes  +{diff.gained} -{diff.lost} {shift}"
        right = _draw(image, cand, CANDIDATE_COLOUR, text, bad)
        rows.append(np.hstack([left, np.full((left.shape[0], 6, 3), 255, np.uint8), right]))
    if not rows:
        raise ValueError(f"no agreement frames to draw for {candidate}")
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 6), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), np.vstack(rows)):
        raise OSError(f"{out}: could not write the image grid")
    return out


def _scaled(det: Detections, scale: float) -> Detections:
    return Detections(tuple(tuple(v * scale for v in b) for b in det.xyxy), det.conf, det.cls)


def candidate_plots(report: ValidationReport, name: str, out_dir: Path, grid_frames: int) -> list[Path]:
    """The PNGs of one candidate's run: latency histogram/CDF, PR curve, and (not for the reference) the grid."""
    made = [latency_plot(report.latency_samples[name], f"{name}: latency on its own runtime", out_dir / "latency.png")]
    if name in report.pr_curves:  # none without a labelled holdout
        title = f"{name}: precision-recall (labelled holdout)"
        made.append(pr_curve_plot(report.pr_curves[name], title, out_dir / "pr_curve.png"))
    if name != report.reference:
        grid = out_dir / "agreement_grid.png"
        made.append(disagreement_grid(report.diffs[name], report.reference, name, grid, grid_frames))
    return made
