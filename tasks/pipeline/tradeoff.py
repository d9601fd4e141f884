"""The trade-off of one rebuild in one picture: latency p50 (x) against agreement with FP32 (y), one point per
candidate, so a reviewer sees at a glance why the winner won.

- the region the agreement and speed-up gates allow is shaded (`promote.min_agreement` up, and the speed reference's
  p50 (`build.speed_reference`) divided by `promote.min_speedup` left: the speed-up gate is a latency bound);
- Ultralytics' own exports (`method: ultralytics`) are the peers (triangles), ours are circles, the two FP32
  references (accuracy, speed) squares;
- a candidate that failed another gate (mAP drop, p95, champion, labelled holdout, smoke test) is drawn hollow with
  the gates named; the winner is ringed, and why it won among the passing ones (the promotion's `gate.policy`)
  is written under the plot. Latency is the p50 the choice used: the interleaved re-timing's where there is one.
- with a champion deployed, its p50 is a dotted line, placed by the ratio measured when it and the winner were timed
  together (`gate.champion_ratio`), and the title says the decision: deployed, or PENDING a person's approval with
  the champion kept (the reasons under the plot, `gate.decision`; docs/promotion.md).

Gate outcomes are read from what the promotion gate logged on each candidate run (`gate.*` tags,
`tasks/operations/promote.py` `record_verdicts`), never recomputed here. Before the gate has run, the chart says so.
The chart and the data behind it (`tradeoff.json`, `tradeoff.csv`) go to the rebuild's parent run under `tradeoff/`;
`alpr-ops report` puts the same PNG at the head of the report.
"""

from __future__ import annotations

import csv
import json
import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tasks.pipeline.validate import GEOMETRY_ROLE, ROLE_KEY, SPEED_ROLE, interval
from tasks.support.config import PromoteConfig, TrackingConfig
from tasks.support.tracking import GATE_PREFIX, gate_tag

log = logging.getLogger(__name__)

ARTIFACT_DIR = "tradeoff"
CHART = "tradeoff.png"
AREA_GATES = ("agreement", "speedup")  # the gates the shaded region shows; every other failed gate makes a point hollow
META_TAGS = tuple(
    gate_tag(g) for g in ("passed", "reasons", "winner", "policy", "decision", "champion", "champion_ratio")
)  # gate tags that are not one gate's outcome
# the winner compared with the deployed champion: said in the title and the champion's line, never a hollow point
CHAMPION_GATES = ("champion_latency", "champion_map_drop")
PEER_METHOD = "ultralytics"


@dataclass(frozen=True)
class Point:
    """One candidate on the chart."""

    name: str
    latency_p50_ms: float
    agreement: float  # agreement mAP50-95 with the FP32 reference's detections
    role: str  # "reference", "peer" (Ultralytics' own export) or "ours"
    passed: bool | None  # the gate's verdict; None before the gate ran
    failed_gates: tuple[str, ...]  # failed gates other than agreement/speed-up: drawn hollow, named
    winner: bool
    engine_mb: float | None = None  # memory of the engine alone (tasks/runtime/memory.py), when measured

    @property
    def hollow(self) -> bool:
        return bool(self.failed_gates)


@dataclass(frozen=True)
class Drop:
    """One labelled mAP50-95 drop of one model, with its bootstrap interval when measured: `map_drop` (against the
    square FP32: what the user sees), `quant_map_drop` (against FP32 at its own geometry: quantization) or
    `geometry_map_drop` (a geometry reference's: what the geometry itself costs)."""

    name: str
    kind: str
    value: float
    low: float | None = None
    high: float | None = None


DROP_KINDS = ("map_drop", "quant_map_drop", "geometry_map_drop")


@dataclass(frozen=True)
class Tradeoff:
    """The chart's data: the points and the shaded region's bounds."""

    reference: str  # the accuracy reference (agreement's labels)
    reference_p50_ms: float  # the speed reference's p50
    min_agreement: float
    min_speedup: float
    max_p50_ms: float  # the speed-up gate as a latency bound: the speed reference's p50 / min_speedup
    decided: bool  # the promotion gate has run on this rebuild
    winner: str | None
    points: tuple[Point, ...]
    policy: str = ""  # how the winner was chosen among the passing candidates (the promotion's `gate.policy`)
    speed_reference: str = ""  # the candidate speed-ups are measured against ("": the accuracy reference)
    decision: str = ""  # the winner's `gate.decision`: deploy, pending: why, ...
    champion: str = ""  # the deployed champion's version the winner was compared with ("": none)
    champion_p50_ms: float | None = None  # its p50 on the chart's axis: the winner's / the ratio timed together
    drops: tuple[Drop, ...] = ()  # every labelled drop with its interval: the panel under the chart
    max_map_drop: float = 0.0
    max_quant_drop: float = 0.0

    @property
    def pending(self) -> bool:
        return self.decision.startswith("pending")


def speed_reference_of(rows: dict[str, dict[str, Any]], reference: str) -> str:
    """The candidate this rebuild's speed-ups were measured against: the one validation tagged `role: speed
    reference`; a rebuild from before the speed reference existed timed them against the accuracy `reference`."""
    tagged = [name for name, row in rows.items() if SPEED_ROLE in str(row.get(ROLE_KEY, ""))]
    return tagged[0] if tagged else reference


def tradeoff_data(rows: dict[str, dict[str, Any]], reference: str, cfg: PromoteConfig) -> Tradeoff:
    """The chart's data from each candidate's metrics and tags (`method`, `role`, `gate.*`) and the gate bounds of
    `cfg`; the speed-up bound from the p50 of the speed reference the rebuild's speed-ups were measured against."""
    if reference not in rows:
        raise ValueError(f"the reference '{reference}' is not among the candidates {sorted(rows)}")
    speed_ref = speed_reference_of(rows, reference)
    points = []
    for name, row in rows.items():
        if "latency_p50_ms" not in row or "agreement_map50_95" not in row:  # a gate build that failed: not measured
            continue
        verdict = str(row.get(gate_tag("passed"), ""))
        failed = tuple(
            key.removeprefix(GATE_PREFIX)
            for key, value in sorted(row.items())
            if key.startswith(GATE_PREFIX)
            and key not in META_TAGS
            and key.removeprefix(GATE_PREFIX) not in (*AREA_GATES, *CHAMPION_GATES)
            and str(value).startswith("fail")
        )
        role = "reference" if name in (reference, speed_ref) else "peer" if row.get("method") == PEER_METHOD else "ours"
        engine = row.get("engine_mb")
        points.append(
            Point(
                name=name,
                # the p50 the choice used: the interleaved re-timing's where validation re-timed the candidate
                latency_p50_ms=float(row.get("latency_interleaved_p50_ms") or row["latency_p50_ms"]),
                agreement=float(row["agreement_map50_95"]),
                role=role,
                passed={"true": True, "false": False}.get(verdict),
                failed_gates=failed,
                winner=str(row.get(gate_tag("winner"), "")) == "true",
                engine_mb=float(engine) if isinstance(engine, int | float) else None,
            )
        )
    ref_p50 = float(rows[speed_ref]["latency_p50_ms"])
    winners = [p.name for p in points if p.winner]
    policy = next((str(row[gate_tag("policy")]) for row in rows.values() if row.get(gate_tag("policy"))), "")
    won = next((rows[w] for w in winners), {})
    champ_p50 = None
    winner_p50 = next((p.latency_p50_ms for p in points if p.winner), None)
    if won.get(gate_tag("champion_ratio")) and winner_p50 is not None:
        champ_p50 = round(winner_p50 / float(won[gate_tag("champion_ratio")]), 3)
    drops = []
    for name, row in rows.items():
        kinds = ("geometry_map_drop",) if row.get(ROLE_KEY) == GEOMETRY_ROLE else ("map_drop", "quant_map_drop")
        if name == reference:
            continue  # 0 by definition
        for kind in kinds:
            value = row.get(kind)
            if isinstance(value, int | float):
                ci = interval(row, f"{kind}_ci")
                drops.append(Drop(name, kind, float(value), *(ci if ci is not None else (None, None))))
    return Tradeoff(
        reference=reference,
        reference_p50_ms=ref_p50,
        min_agreement=cfg.min_agreement,
        min_speedup=cfg.min_speedup,
        max_p50_ms=round(ref_p50 / cfg.min_speedup, 6),
        decided=any(p.passed is not None for p in points),
        winner=winners[0] if winners else None,
        points=tuple(points),
        policy=policy,
        speed_reference=speed_ref,
        decision=str(won.get(gate_tag("decision"), "")),
        champion=str(won.get(gate_tag("champion"), "")),
        champion_p50_ms=champ_p50,
        drops=tuple(drops),
        max_map_drop=cfg.max_map_drop,
        max_quant_drop=cfg.max_quant_drop,
    )


MARKERS = {"reference": "s", "peer": "^", "ours": "o"}
COLOURS = {"reference": "tab:gray", "peer": "tab:blue", "ours": "tab:orange"}
ROLE_NOTE = {"peer": " (peer)", "reference": " (reference)"}


def draw_tradeoff(data: Tradeoff, out: Path) -> Path:
    """The chart as a PNG (matplotlib's object API on Agg, as every plot here)."""
    from matplotlib.lines import Line2D

    from tasks.pipeline.plots import _figure

    fig = _figure(10.5, 8.0 if data.drops else 5.5)
    if data.drops:
        ax, drops_ax = fig.subplots(2, 1, height_ratios=[3, 1.6])
        draw_drops(drops_ax, data)
    else:
        ax = fig.subplots()
    xs = [p.latency_p50_ms for p in data.points] + ([data.champion_p50_ms] if data.champion_p50_ms else [])
    ys = [p.agreement for p in data.points]
    x_hi = max([*xs, data.max_p50_ms]) * 1.15
    y_lo = max(0.0, min([*ys, data.min_agreement]) - 0.05)
    ax.fill_between([0, data.max_p50_ms], data.min_agreement, 1.02, color="tab:green", alpha=0.12, linewidth=0)
    ax.axhline(data.min_agreement, color="tab:green", linestyle="--", linewidth=0.8)
    ax.axvline(data.max_p50_ms, color="tab:green", linestyle="--", linewidth=0.8)
    for p in data.points:
        colour = COLOURS[p.role]
        ax.scatter(
            [p.latency_p50_ms],
            [p.agreement],
            s=90,
            marker=MARKERS[p.role],
            facecolors="none" if p.hollow else colour,
            edgecolors=colour,
            linewidths=2,
            zorder=3,
        )
        if p.winner:
            ax.scatter([p.latency_p50_ms], [p.agreement], s=420, facecolors="none", edgecolors="gold", linewidths=2.5)
        note = ROLE_NOTE.get(p.role, "")
        if p.role == "reference":
            note = " (accuracy reference)" if p.name == data.reference else " (speed reference)"
        label = p.name + note + (" WINNER" if p.winner else "")
        if p.failed_gates:
            label += "\nfailed: " + ", ".join(p.failed_gates)
        if p.engine_mb is not None:
            label += f"\nengine {p.engine_mb:.0f} MB"
        ax.annotate(label, (p.latency_p50_ms, p.agreement), xytext=(7, -4), textcoords="offset points", fontsize=8)
    if data.champion_p50_ms is not None:
        ax.axvline(data.champion_p50_ms, color="tab:red", linestyle=":", linewidth=1.2)
        ax.annotate(
            f"champion v{data.champion}\n(timed with the winner)",
            (data.champion_p50_ms, y_lo),
            xytext=(3, 4),
            textcoords="offset points",
            fontsize=7,
            color="tab:red",
        )
    ax.set_xlim(0, x_hi)
    ax.set_ylim(y_lo, 1.02)
    ax.set_xlabel("inference latency p50 (ms, batch 1, own runtime)")
    ax.set_ylabel("agreement mAP50-95 with FP32 at its geometry")
    ax.grid(alpha=0.3)
    handles = [
        Line2D([], [], marker="s", color="tab:gray", linestyle="", label=f"{data.reference} (accuracy reference)"),
        Line2D([], [], marker="^", color="tab:blue", linestyle="", label="peer: Ultralytics' own export"),
        Line2D([], [], marker="o", color="tab:orange", linestyle="", label="ours"),
        Line2D([], [], marker="o", color="black", markerfacecolor="none", linestyle="", label="failed another gate"),
        Line2D([], [], marker="o", color="gold", markerfacecolor="none", markersize=14, linestyle="", label="winner"),
    ]
    shaded = f"gates allow:\nagreement >= {data.min_agreement:g},\np50 <= {data.max_p50_ms:.3g} ms\n"
    shaded += f"(speed-up >= {data.min_speedup:g}\nvs {data.speed_reference or data.reference})"
    handles.append(Line2D([], [], color="tab:green", alpha=0.4, linewidth=8, label=shaded))
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if not data.decided:
        title = "Trade-off (promotion gate not run yet)"
    else:
        title = f"Trade-off: winner {data.winner}" if data.winner else "Trade-off: no candidate passed every gate"
        if data.pending:
            title += f": PENDING a person's approval, champion v{data.champion} stays deployed"
    ax.set_title(title)
    under = [data.policy] if data.policy else []
    if data.decision and data.decision != "deploy":
        under.append(f"decision: {data.decision}")
    if under:  # why the winner won and what was done, under the plot (a figure label: the layout makes room for it)
        import textwrap

        fig.supxlabel("\n".join(textwrap.fill(t, 150) for t in under), fontsize=7, ha="left", x=0.01)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


DROP_COLOURS = {"map_drop": "tab:purple", "quant_map_drop": "tab:orange", "geometry_map_drop": "tab:gray"}
DROP_LABELS = {
    "map_drop": "vs square FP32 (what the user sees)",
    "quant_map_drop": "vs FP32 at its geometry (quantization)",
    "geometry_map_drop": "the geometry's own cost",
}


def draw_drops(ax: Any, data: Tradeoff) -> None:
    """The labelled mAP50-95 drops, two per candidate and one per geometry reference, each with its bootstrap
    interval as an error bar, and the two gates (`promote.max_map_drop`, `promote.max_quant_drop`) as lines."""
    names = list(dict.fromkeys(d.name for d in data.drops))
    offset = {"map_drop": -0.15, "quant_map_drop": 0.15, "geometry_map_drop": 0.0}
    for kind in DROP_KINDS:
        shown = [d for d in data.drops if d.kind == kind]
        if not shown:
            continue
        xs = [names.index(d.name) + offset[kind] for d in shown]
        ys = [d.value * 100 for d in shown]
        err = [
            [max(0.0, (d.value - d.low) * 100) if d.low is not None else 0.0 for d in shown],
            [max(0.0, (d.high - d.value) * 100) if d.high is not None else 0.0 for d in shown],
        ]
        ax.errorbar(xs, ys, yerr=err, fmt="o", capsize=4, color=DROP_COLOURS[kind], label=DROP_LABELS[kind])
    ax.axhline(data.max_map_drop * 100, color="tab:purple", linestyle="--", linewidth=0.8)
    ax.axhline(data.max_quant_drop * 100, color="tab:orange", linestyle="--", linewidth=0.8)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_ylabel("mAP50-95 drop (pt)")
    ax.set_title("labelled drops with their bootstrap intervals; dashed: the gates", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def write_tradeoff(data: Tradeoff, out_dir: Path) -> list[Path]:
    """The chart and the data behind it: `tradeoff.png`, `tradeoff.json` (bounds and points), `tradeoff.csv`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    chart = draw_tradeoff(data, out_dir / CHART)
    doc = out_dir / "tradeoff.json"
    doc.write_text(json.dumps(asdict(data), indent=2))
    table = out_dir / "tradeoff.csv"
    with table.open("w", newline="") as f:
        fields = [*(k for k in asdict(data.points[0]) if k != "failed_gates"), "failed_gates", "hollow"]
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for p in data.points:
            writer.writerow({**asdict(p), "failed_gates": ";".join(p.failed_gates), "hollow": p.hollow})
    return [chart, doc, table]


def rebuild_rows(mc: Any, parent_run_id: str) -> dict[str, dict[str, Any]]:
    """Each candidate run of a rebuild as one row: its metrics and its tags (the gate's verdict among them)."""
    parent = mc.get_run(parent_run_id)
    children = mc.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'"
    )
    rows = {}
    for run in sorted(children, key=lambda r: r.info.start_time):
        name = run.data.tags.get("candidate", run.info.run_name)
        rows[name] = {**run.data.tags, **run.data.metrics}
    return rows


def log_tradeoff(tracking: TrackingConfig, cfg: PromoteConfig, reference: str, parent_run_id: str) -> Tradeoff:
    """Draw the rebuild's trade-off chart from what MLflow holds and log it (and its data) to the parent run."""
    from tasks.support.tracking import client

    mc = client(tracking)
    data = tradeoff_data(rebuild_rows(mc, parent_run_id), reference, cfg)
    with tempfile.TemporaryDirectory(prefix="alpr-tradeoff-") as tmp:
        write_tradeoff(data, Path(tmp) / ARTIFACT_DIR)
        mc.log_artifacts(parent_run_id, str(Path(tmp) / ARTIFACT_DIR), ARTIFACT_DIR)
    log.info("logged the trade-off chart of rebuild %s (winner: %s)", parent_run_id, data.winner)
    return data


def chart_after_refusal(
    tracking: TrackingConfig, cfg: PromoteConfig, reference: str, parent_run_id: str, refusal: BaseException
) -> Tradeoff | None:
    """The chart of a rebuild whose promotion was refused (the smoke test or verification names the gate), drawn
    once and never in place of that refusal: not at all when the refusal was the store's own (it would fail there
    too), and a chart that cannot be drawn is only logged. The caller re-raises the refusal."""
    from tasks.support.registry import RegistryError

    if isinstance(refusal, RegistryError | OSError) or type(refusal).__name__ == "MlflowException":
        return None
    try:
        return log_tradeoff(tracking, cfg, reference, parent_run_id)
    except Exception as e:
        log.warning("trade-off chart of rebuild %s not drawn (%s: %s)", parent_run_id, type(e).__name__, e)
        return None
