"""One rebuild, read back from MLflow, as a report: candidates side by side, gate verdicts, lineage, image grids.

Everything comes from the tracking store (never from local metrics files), so the report shows what reviewers see in
the MLflow UI and can be produced on any machine that reaches the store.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.pipeline.roi_image import ROI_DIR, ROI_PNG
from tasks.pipeline.tradeoff import ARTIFACT_DIR as TRADEOFF_DIR
from tasks.pipeline.tradeoff import CHART as TRADEOFF_CHART
from tasks.pipeline.validate import CI_KEYS, ROLE_KEY, interval
from tasks.runtime.releases import gate_id
from tasks.support.config import TrackingConfig
from tasks.support.errors import AlprError, Remedy
from tasks.support.fsutil import atomic_dir
from tasks.support.registry import aliases_for, version_by_alias
from tasks.support.tracking import KIND_TAG, client, experiment_url, gate_tag, require_store

log = logging.getLogger(__name__)

# (metric key, label, format): the rows of the side-by-side table, in reading order
ROWS: tuple[tuple[str, str, str], ...] = (
    ("map50", "mAP50 (labels)", ".3f"),
    ("map50_95", "mAP50-95 (labels)", ".3f"),
    ("map_drop", "mAP50-95 drop vs square FP32", "+.4f"),
    ("map_drop_ci", "  its bootstrap interval", "+.4f"),
    ("quant_map_drop", "mAP50-95 drop vs FP32 at its geometry (quantization)", "+.4f"),
    ("quant_map_drop_ci", "  its bootstrap interval", "+.4f"),
    ("geometry_map_drop", "the geometry's own mAP50-95 cost (geometry reference)", "+.4f"),
    ("geometry_map_drop_ci", "  its bootstrap interval", "+.4f"),
    ("box_precision", "precision", ".3f"),
    ("box_recall", "recall", ".3f"),
    ("agreement_map50", "agreement mAP50", ".3f"),
    ("agreement_map50_95", "agreement mAP50-95 (vs FP32 at its geometry)", ".3f"),
    ("agreement_square_map50_95", "agreement mAP50-95 vs square FP32", ".3f"),
    ("boxes_gained", "boxes gained", ".0f"),
    ("boxes_lost", "boxes lost", ".0f"),
    ("conf_shift_mean", "mean confidence shift", "+.3f"),
    ("latency_p50_ms", "latency p50 (ms)", ".2f"),
    ("latency_p95_ms", "latency p95 (ms)", ".2f"),
    ("latency_p99_ms", "latency p99 (ms)", ".2f"),
    ("e2e_p50_ms", "end-to-end p50 (ms)", ".2f"),
    ("pre_ms", "pre-process (ms)", ".2f"),
    ("inference_ms", "inference (ms)", ".2f"),
    ("post_ms", "post-process (ms)", ".2f"),
    ("throughput_batch1_fps", "throughput batch 1 (fps)", ".1f"),
    ("throughput_best_fps", "throughput best batch (fps)", ".1f"),
    ("best_batch", "best batch", ".0f"),
    ("engine_mb", "engine memory (MB, engine alone)", ".1f"),
    ("engine_rss_mb", "engine process peak RSS (MB)", ".1f"),
    ("runtime_rss_mb", "runtime alone RSS (MB)", ".1f"),
    ("size_mb", "size (MB)", ".2f"),
    ("speedup", "speed-up vs the speed reference", ".2f"),
)
LINEAGE_TAGS = (
    "git_commit",
    "dvc_rev",
    "frames_hash",
    "videos_count",
    "videos_sha256",
    "videos_dvc_md5",
    "base_model_sha256",
    "agreement_frames",
    "cpu_model",
    "gpu_name",
    "videos",
)
PLOTS = ("agreement_grid.png", "latency.png", "pr_curve.png")


class ReportError(AlprError):
    """The run to report on does not exist or is not a rebuild; the message says what to do."""


@dataclass(frozen=True)
class CandidateView:
    name: str
    run_id: str
    version: str
    backend: str
    precision: str
    passed: str  # "true"/"false" once the promotion gate ran, "" before
    reasons: str
    metrics: dict[str, float]
    notes: dict[str, str] = field(default_factory=dict)
    role: str = ""  # accuracy reference, speed reference, or candidate (validation's `role`; "" on older runs)


@dataclass(frozen=True)
class RebuildView:
    """What the report shows: the parent run's lineage and params, and each candidate run."""

    run_id: str
    experiment_id: str
    run_name: str
    started: str
    status: str
    lineage: dict[str, str]
    params: dict[str, str]
    candidates: list[CandidateView]
    champion: str = ""
    url: str = ""  # the experiment in the MLflow UI, on its runs table (`experiment_url`)
    roi: dict[str, str] = field(default_factory=dict)  # the build's region of interest and its evidence; {}: none

    def cell(self, cand: CandidateView, key: str, spec: str) -> str:
        if key in CI_KEYS:  # an interval: [low, high] from its two metrics
            found = interval(cand.metrics, key)
            return "-" if found is None else f"[{format(found[0], spec)}, {format(found[1], spec)}]"
        value = cand.metrics.get(key)
        return "-" if value is None else format(value, spec)

    def differing_rows(self) -> list[tuple[str, str, str]]:
        """Rows whose values differ between candidates (what a reviewer should look at first)."""
        return [r for r in ROWS if len({self.cell(c, r[0], r[2]) for c in self.candidates}) > 1]


def load_rebuild(tracking: TrackingConfig, run_id: str | None = None, gate_dir: Path | None = None) -> RebuildView:
    """The rebuild `run_id` (default: the newest rebuild in the experiment) with its candidate runs, and the
    champion of `gate_dir` (its own alias; none when not given or never promoted into)."""
    from mlflow.exceptions import MlflowException

    require_store(tracking)  # a typo in a sqlite path: refused, not created empty
    mc = client(tracking)
    if run_id is None:
        exp = mc.get_experiment_by_name(tracking.experiment)
        runs = (
            []
            if exp is None
            else mc.search_runs(
                [exp.experiment_id],
                filter_string=f"tags.`{KIND_TAG}` = 'rebuild'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
        )
        if not runs:
            raise ReportError(
                f"no rebuild recorded in {tracking.shown_uri} ({tracking.experiment})", remedy=Remedy.REBUILD
            )
        parent = runs[0]
    else:
        try:
            parent = mc.get_run(run_id)
        except MlflowException as e:
            raise ReportError(f"run {run_id} not found in {tracking.shown_uri}: {e.message}") from e
        if parent.data.tags.get(KIND_TAG) != "rebuild":
            raise ReportError(f"run {run_id} is not a rebuild (tag {KIND_TAG}={parent.data.tags.get(KIND_TAG)!r}).")
    pid, eid = parent.info.run_id, parent.info.experiment_id
    children = mc.search_runs([eid], filter_string=f"tags.`mlflow.parentRunId` = '{pid}'")
    versions = {
        mv.run_id: str(mv.version)
        for mv in mc.search_model_versions(f"name = '{tracking.registered_model}'")
        if mv.run_id
    }
    champion = ""
    gid = gate_id(gate_dir) if gate_dir is not None else None
    champ = None if gid is None else version_by_alias(mc, tracking.registered_model, aliases_for(gid).champion)
    if champ is not None:  # a registry error raises: it is not "no champion"
        champion = f"{champ.tags.get('candidate', '')} (version {champ.version})"
    cands = []
    for run in sorted(children, key=lambda r: r.info.start_time):
        t = run.data.tags
        cands.append(
            CandidateView(
                name=t.get("candidate", run.info.run_name),
                run_id=run.info.run_id,
                version=versions.get(run.info.run_id, ""),
                backend=t.get("backend", ""),
                precision=t.get("precision", ""),
                passed=t.get(gate_tag("passed"), ""),
                reasons=t.get(gate_tag("reasons"), ""),
                metrics=dict(run.data.metrics),
                notes={k: t[k] for k in ("batch_note",) if k in t},
                role=t.get(ROLE_KEY, ""),
            )
        )
    started = datetime.fromtimestamp(parent.info.start_time / 1000, UTC).isoformat(timespec="seconds")
    roi = _roi_evidence(mc, pid)
    lineage = {k: parent.data.tags[k] for k in LINEAGE_TAGS if k in parent.data.tags}
    return RebuildView(
        pid, eid, parent.info.run_name, started, parent.info.status, lineage, dict(parent.data.params), cands, champion,
        experiment_url(tracking.uri, eid), roi,
    )  # fmt: skip


def _roi_evidence(mc: Any, run_id: str) -> dict[str, str]:
    """The region of interest the rebuild logged (`roi/roi.json`, tasks/pipeline/track.py `log_roi`) as the
    report lists it; {} when it logged none."""
    import tempfile

    from tasks.pipeline.roi_image import evidence
    from tasks.support.roi import ROI_JSON, read_roi

    if f"{ROI_DIR}/{ROI_JSON}" not in {f.path for f in mc.list_artifacts(run_id, ROI_DIR)}:
        return {}
    with tempfile.TemporaryDirectory(prefix="alpr-report-roi-") as tmp:
        return evidence(read_roi(Path(mc.download_artifacts(run_id, f"{ROI_DIR}/{ROI_JSON}", tmp))))


def _verdict(c: CandidateView) -> str:
    return {"true": "PASS", "false": "FAIL"}.get(c.passed, "not decided")


TRADEOFF = "_tradeoff"  # the parent run's chart among the report's images (no candidate name starts with _)
ROI = "_roi"  # the parent run's drawing of the region of interest


def _download_images(tracking: TrackingConfig, view: RebuildView, out: Path) -> dict[str, dict[str, str]]:
    """Each candidate run's plots, and the parent run's trade-off chart (under the key `TRADEOFF`), copied next to
    the report; returns candidate -> plot -> relative path."""
    mc = client(tracking)
    found: dict[str, dict[str, str]] = {}
    if TRADEOFF_CHART in {Path(f.path).name for f in mc.list_artifacts(view.run_id, TRADEOFF_DIR)}:
        (out / "images").mkdir(parents=True, exist_ok=True)
        mc.download_artifacts(view.run_id, f"{TRADEOFF_DIR}/{TRADEOFF_CHART}", str(out / "images"))
        found[TRADEOFF] = {TRADEOFF_CHART: f"images/{TRADEOFF_CHART}"}
    if view.roi and ROI_PNG in {Path(f.path).name for f in mc.list_artifacts(view.run_id, ROI_DIR)}:
        (out / "images").mkdir(parents=True, exist_ok=True)
        mc.download_artifacts(view.run_id, f"{ROI_DIR}/{ROI_PNG}", str(out / "images"))
        found[ROI] = {ROI_PNG: f"images/{ROI_PNG}"}
    for c in view.candidates:
        names = {Path(f.path).name for f in mc.list_artifacts(c.run_id, "plots")}
        for plot in PLOTS:
            if plot in names:
                target = out / "images" / c.name
                target.mkdir(parents=True, exist_ok=True)
                mc.download_artifacts(c.run_id, f"plots/{plot}", str(target))
                found.setdefault(c.name, {})[plot] = f"images/{c.name}/{plot}"
    return found


def render_markdown(view: RebuildView, images: dict[str, dict[str, str]]) -> str:
    """The report as Markdown (tables via pandas/tabulate)."""
    import pandas as pd

    names = [c.name for c in view.candidates]
    table = pd.DataFrame(
        [[label, *(view.cell(c, key, spec) for c in view.candidates)] for key, label, spec in ROWS],
        columns=["metric", *names],
    )
    head = pd.DataFrame(
        [
            ["role", *(c.role or "-" for c in view.candidates)],
            ["precision / backend", *(f"{c.precision} / {c.backend}" for c in view.candidates)],
            ["gate verdict", *(_verdict(c) for c in view.candidates)],
            ["registry version", *(c.version or "-" for c in view.candidates)],
        ],
        columns=["", *names],
    )
    differing = ", ".join(label for _, label, _ in view.differing_rows()) or "none"
    chart = images.get(TRADEOFF, {}).get(TRADEOFF_CHART)
    lines = [
        f"# Rebuild {view.run_name}",
        "",
        f"MLflow run `{view.run_id}` (experiment {view.experiment_id}), started {view.started}, {view.status}."
        + (f" Champion: {view.champion}." if view.champion else ""),
        f"Runs in the MLflow UI: <{view.url}>",
        "",
        f"![trade-off: latency p50 vs agreement with FP32]({chart})\n\n{TRADEOFF_CAPTION}" if chart else NO_TRADEOFF,
        "",
        head.to_markdown(index=False, disable_numparse=True),
        "",
        "## Candidates side by side",
        "",
        table.to_markdown(index=False, disable_numparse=True),
        "",
        f"Rows that differ between candidates: {differing}.",
        "",
        "## Gate verdicts",
        "",
        *(f"- **{c.name}**: {_verdict(c)}{f' ({c.reasons})' if c.reasons else ''}" for c in view.candidates),
        "",
        "## Region of interest",
        "",
        *_roi_markdown(view, images),
        "",
        "## Lineage",
        "",
        *(f"- {k}: `{v}`" for k, v in view.lineage.items()),
        "",
    ]
    notes = {n for c in view.candidates for n in c.notes.values()}
    if notes:
        lines += ["Latency notes: " + "; ".join(sorted(notes)), ""]
    for c in view.candidates:
        for plot, rel in images.get(c.name, {}).items():
            title = plot.removesuffix(".png").replace("_", " ")
            lines += [f"### {c.name}: {title}", "", f"![{c.name} {plot}]({rel})", ""]
    return "\n".join(lines)


def _roi_markdown(view: RebuildView, images: dict[str, dict[str, str]]) -> list[str]:
    if not view.roi:
        return [NO_ROI]
    drawing = images.get(ROI, {}).get(ROI_PNG)
    lines = [f"![region of interest on a frame]({drawing})", "", ROI_CAPTION, ""] if drawing else []
    return lines + [f"- {k}: {v}" for k, v in view.roi.items()]


TRADEOFF_CAPTION = (
    "Each candidate's latency p50 (x) against its agreement with FP32 (y). Shaded: what the agreement and speed-up "
    "gates allow (speed-up: against the FP32 speed reference). Triangles: Ultralytics' own exports (the peers); "
    "circles: ours; squares: the FP32 references (accuracy, speed). Hollow: failed "
    "another gate (named). Ringed: the winner: among the candidates that passed every gate, the most faithful to FP32 "
    "within the latency of the fastest (ties: within promote.latency_tie or the interleaved re-timing's noise); "
    "the line under the plot says how it was chosen."
)
NO_TRADEOFF = "No trade-off chart was logged for this rebuild (the rebuild and promote flows draw it)."
ROI_CAPTION = (
    "Green: the region of interest the build chose; blue: the engine's crop (the region widened to its input's "
    "aspect); outside it is dimmed: the engines never look there. Yellow, on a labelled frame: its plates."
)
NO_ROI = "No region of interest was recorded for this rebuild: its engines look at the full frame."

HTML_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Rebuild {{ v.run_name }}</title>
<style>
body { font-family: sans-serif; margin: 2em; } table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; } tr.differs td { background: #fff6d6; }
.PASS { color: #070; font-weight: bold; } .FAIL { color: #b00; font-weight: bold; }
img { max-width: 100%; border: 1px solid #ddd; } code { font-size: 90%; }
</style></head><body>
<h1>Rebuild {{ v.run_name }}</h1>
<p>MLflow run <code>{{ v.run_id }}</code> (experiment {{ v.experiment_id }}), started {{ v.started }}, {{ v.status }}.
{% if v.champion %}Champion: <b>{{ v.champion }}</b>.{% endif %}
Runs in the MLflow UI: <a id="mlflow-link" href="{{ v.url }}">{{ v.url }}</a></p>
{% if chart %}<figure id="tradeoff"><img src="{{ chart }}" alt="trade-off: latency p50 vs agreement with FP32">
<figcaption>{{ caption }}</figcaption></figure>{% else %}<p>{{ no_chart }}</p>{% endif %}
<h2>Candidates side by side</h2>
<p>Highlighted rows differ between candidates.</p>
<table id="candidates"><thead><tr><th>metric</th>{% for c in v.candidates %}<th>{{ c.name }}</th>{% endfor %}</tr>
<tr><td>role</td>{% for c in v.candidates %}<td>{{ c.role or "-" }}</td>{% endfor %}</tr>
<tr><td>precision / backend</td>{% for c in v.candidates %}<td>{{ c.precision }} / {{ c.backend }}</td>{% endfor %}</tr>
<tr><td>gate verdict</td>{% for c in v.candidates %}<td class="{{ verdict(c) }}">{{ verdict(c) }}</td>{% endfor %}</tr>
<tr><td>registry version</td>{% for c in v.candidates %}<td>{{ c.version or "-" }}</td>{% endfor %}</tr></thead>
<tbody>{% for key, label, spec in rows %}
<tr{% if (key, label, spec) in differing %} class="differs"{% endif %}><td>{{ label }}</td>
{% for c in v.candidates %}<td>{{ v.cell(c, key, spec) }}</td>{% endfor %}</tr>{% endfor %}</tbody></table>
{% if notes %}<p>Latency notes: {{ notes | join("; ") }}</p>{% endif %}
<h2>Gate verdicts</h2><ul>{% for c in v.candidates %}
<li><b>{{ c.name }}</b>: <span class="{{ verdict(c) }}">{{ verdict(c) }}</span>
{% if c.reasons %} ({{ c.reasons }}){% endif %}</li>
{% endfor %}</ul>
<h2>Region of interest</h2>
{% if v.roi %}{% if roi_image %}<figure id="roi"><img src="{{ roi_image }}" alt="region of interest on a frame">
<figcaption>{{ roi_caption }}</figcaption></figure>{% endif %}
<table id="roi-evidence">{% for k, val in v.roi.items() %}<tr><td>{{ k }}</td>
<td style="text-align: left">{{ val }}</td></tr>{% endfor %}</table>{% else %}<p>{{ no_roi }}</p>{% endif %}
<h2>Lineage</h2><table>{% for k, val in v.lineage.items() %}<tr><td>{{ k }}</td><td style="text-align: left">
<code>{{ val }}</code></td></tr>
{% endfor %}</table>
{% for c in v.candidates %}{% for plot, rel in images.get(c.name, {}).items() %}
<h3>{{ c.name }}: {{ plot[:-4].replace("_", " ") }}</h3><img src="{{ rel }}" alt="{{ c.name }} {{ plot }}">
{% endfor %}{% endfor %}
</body></html>
"""


def render_html(view: RebuildView, images: dict[str, dict[str, str]]) -> str:
    """The report as one HTML page (Jinja2, autoescaped) with the image grids and plots beside it."""
    from jinja2 import Environment

    env = Environment(autoescape=True)
    return env.from_string(HTML_TEMPLATE).render(
        v=view,
        rows=ROWS,
        differing=view.differing_rows(),
        images=images,
        chart=images.get(TRADEOFF, {}).get(TRADEOFF_CHART),
        caption=TRADEOFF_CAPTION,
        no_chart=NO_TRADEOFF,
        roi_image=images.get(ROI, {}).get(ROI_PNG),
        roi_caption=ROI_CAPTION,
        no_roi=NO_ROI,
        verdict=_verdict,
        notes=sorted({n for c in view.candidates for n in c.notes.values()}),
    )


def write_report(tracking: TrackingConfig, view: RebuildView, out_dir: Path) -> Path:
    """`out_dir/<run_id>/` with `report.html`, `report.md` and `images/`, replaced as a whole; returns the folder."""
    target = out_dir / view.run_id
    with atomic_dir(target) as tmp:
        images = _download_images(tracking, view, tmp)
        (tmp / "report.md").write_text(render_markdown(view, images))
        (tmp / "report.html").write_text(render_html(view, images))
    log.info("wrote the report of rebuild %s to %s", view.run_id, target)
    return target


def summary_rows(view: RebuildView) -> list[dict[str, Any]]:
    """Rows for the CLI's rich table: metric label then one value per candidate."""
    return [
        {"metric": label, **{c.name: view.cell(c, key, spec) for c in view.candidates}} for key, label, spec in ROWS
    ]
