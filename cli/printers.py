"""Tables and summaries the commands print (stdout); logs and errors go to stderr (`ERR`)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

ERR = Console(stderr=True)


def out(width: int = 150) -> Console:
    """The stdout console: the terminal's width, or `width` when piped (so logs and CI keep whole rows)."""
    return Console(width=None if sys.stdout.isatty() else width)


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None or value == "" else format(float(value), spec)


def print_extract(report: dict[str, Any]) -> None:
    """The closing summary of an extraction: per video, where its frames went, how many and why others were not."""
    table = Table(title="Extracted frames (dropped: duplicate / cap / unreadable)")
    for col in ("video", "split", "decoded", "mode", "kept", "duplicate", "cap", "unreadable", "note"):
        table.add_column(col, justify="right" if col in {"kept", "duplicate", "cap", "unreadable"} else "left")
    for name, v in report.get("videos", {}).items():
        dropped = v.get("dropped") or {}
        table.add_row(
            name,
            str(v.get("split") or "-"),
            "yes" if v.get("decoded") else "cached",
            str(v.get("mode") or "-"),
            str(v.get("kept", 0)),
            *(str(dropped.get(k, 0)) for k in ("duplicate", "cap", "unreadable")),
            str(v.get("reason") or "; ".join(v.get("notes") or [])),
        )
    console = out()
    console.print(table)
    console.print(
        f"calibration {report.get('calibration_frames', 0)} frames, holdout {report.get('holdout_frames', 0)}; "
        f"decoded {report.get('decoded_videos', 0)} videos, {report.get('cached_videos', 0)} from cache"
    )


def print_candidates(rows: list[dict[str, Any]], champion: dict[str, Any] | None) -> None:
    """The summary table: one row per candidate, the numbers a reviewer compares."""
    table = Table(title="Candidates (latency: batch 1, inference only, this machine)")
    for col in ("candidate", "precision", "backend"):
        table.add_column(col)
    columns = ("input", "mAP50", "mAP50-95", "drop vs FP32", "quant. drop", "agreement", "p50 ms", "p95 ms",
               "speed-up", "size MB", "passed")  # fmt: skip
    for col in columns:
        table.add_column(col, justify="right")
    for r in rows:
        role = str(r.get("role", ""))
        geometry_cost = r.get("geometry_map_drop") is not None
        table.add_row(
            r["name"] + (f" ({role})" if role and role != "candidate" else ""),
            str(r.get("precision", "")),
            str(r.get("backend", "")),
            str(r.get("geometry") or r.get("input_shape") or "-"),
            _fmt(r.get("map50"), ".3f"),
            _fmt(r.get("map50_95"), ".3f"),
            _drop(r, "geometry_map_drop" if geometry_cost else "map_drop"),
            _drop(r, "quant_map_drop"),
            _fmt(r.get("agreement_map50_95"), ".3f"),
            _fmt(r.get("latency_p50_ms"), ".1f"),
            _fmt(r.get("latency_p95_ms"), ".1f"),
            _fmt(r.get("speedup"), ".2f"),
            _fmt(r.get("size_mb"), ".1f"),
            {True: "yes", False: "no"}.get(r.get("passed"), "-"),
        )
    console = out()
    console.print(table)
    console.print(
        "drop vs FP32: mAP50-95 lost against the square FP32 (what the user sees; a geometry reference's row: what "
        "its geometry costs); quant. drop: against FP32 at the candidate's own geometry, as agreement (what "
        "quantization cost); [low, high]: the paired bootstrap's interval (validate.bootstrap_level)",
        highlight=False,
        markup=False,  # "[low, high]" is text, not a Rich tag
    )
    unlabelled = [r["name"] for r in rows if r.get("holdout")]
    if unlabelled:
        console.print(
            f"[yellow]{rows[0]['holdout']}[/yellow]: {', '.join(unlabelled)} judged on agreement with FP32 alone "
            "(no mAP; promotion needs promote.allow_unlabelled)"
        )
    if champion:
        console.print(f"champion: [bold]{champion['candidate']}[/bold] (registry version {champion['version']})")


def _drop(row: dict[str, Any], key: str) -> str:
    """A labelled drop with its bootstrap interval when measured: `+0.012 [-0.004, +0.028]`."""
    shown = _fmt(row.get(key), "+.3f")
    ci = row.get(f"{key}_ci")
    if shown != "-" and isinstance(ci, list | tuple) and len(ci) == 2:
        shown += f" [{float(ci[0]):+.3f}, {float(ci[1]):+.3f}]"
    return shown


def print_nightly(report: Any, as_json: bool = False) -> None:
    """The nightly gates side by side: measured value, threshold, verdict (or the whole report as JSON)."""
    if as_json:
        doc = {**asdict(report), "verdict": "pass" if report.passed else "fail"}
        sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
        return
    table = Table(title=f"Nightly regression of champion version {report.champion_version} ({report.frames} frames)")
    for col in ("gate", "value", "threshold", "verdict"):
        table.add_column(col, justify="left" if col == "gate" else "right")
    for c in report.checks:
        table.add_row(c.gate, f"{c.value:.4g}", f"{c.op} {c.threshold:.4g}", "pass" if c.passed else "[red]FAIL[/red]")
    console = out()
    console.print(table)
    if "roi_frames_outside" in report.metrics:
        console.print(_roi_line(report.roi_crop, report.roi_frame_shape, report.outside_roi), highlight=False)
    console.print(f"MLflow run: {report.mlflow_run_id or '-'}")


def _roi_line(crop: Any, frame_shape: Any, frames: Any) -> str:
    """The champion's region of interest and the newest frames with an FP32 plate outside it."""
    from tasks.runtime.gate import crop_text

    line = f"region of interest: {crop_text(crop, frame_shape)}; FP32 plates outside it on {len(frames)} frames"
    more = f" and {len(frames) - 10} more" if len(frames) > 10 else ""
    return line + (f": {', '.join(frames[:10])}{more}" if frames else "")


def print_last_verdict(verdict: dict[str, Any] | None) -> None:
    """The last nightly check: its verdict, when it ran, and why when it failed or could not check."""
    console = out()
    if verdict is None:
        console.print("nightly: never run in this project", highlight=False)
        return
    style = {"pass": "green", "fail": "red"}.get(verdict["verdict"], "yellow")
    line = f"nightly: [{style}]{verdict['verdict']}[/{style}] at {verdict.get('checked_at', '?')}"
    if verdict.get("champion_version"):
        line += f" (champion version {verdict['champion_version']})"
    if verdict.get("reason"):
        line += f": {escape(str(verdict['reason']))}"
    console.print(line, soft_wrap=True, highlight=False)
    roi = verdict.get("roi")
    if isinstance(roi, dict):
        roi_line = _roi_line(roi.get("crop") or (), roi.get("frame_shape") or (), roi.get("frames") or [])
        console.print(f"  {escape(roi_line)}", soft_wrap=True, highlight=False)


def print_report(view: Any, rows: list[dict[str, Any]]) -> None:
    """One rebuild side by side, metrics as rows; rows where candidates differ in bold."""
    table = Table(title=f"Rebuild {view.run_name} ({view.run_id}), {view.started}")
    table.add_column("metric")
    for c in view.candidates:
        table.add_column(c.name, justify="right")
    verdicts = {"true": "PASS", "false": "FAIL"}
    table.add_row("gate verdict", *(verdicts.get(c.passed, "not decided") for c in view.candidates))
    differing = {label for _, label, _ in view.differing_rows()}
    for row in rows:
        style = "bold" if row["metric"] in differing else None
        table.add_row(row["metric"], *(row[c.name] for c in view.candidates), style=style)
    out(160).print(table)
