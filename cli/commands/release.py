"""Releases: promote the winner, roll back, show what is deployed, report a rebuild, run the reference gate."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.context import go_offline, guarded, state
from cli.exit_codes import ExitCode
from cli.options import path_option
from cli.printers import ERR, out, print_candidates, print_last_verdict, print_report
from tasks.support.project import Overrides

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON (schema: above).")]

YesOpt = Annotated[
    bool,
    typer.Option(
        "--yes",
        "-y",
        help="Deploy the winner even when it needs a person (slower than the champion, an FP32 model replacing an "
        "INT8 champion, a champion failing a gate now): you agree beforehand. Without it you are asked (on a "
        "terminal) or it is left as a pending decision.",
    ),
]


def promote(
    holdout: path_option("holdout") = None,
    gate_dir: path_option("gate_dir") = None,
    approve: Annotated[
        str | None,
        typer.Option(
            "--approve",
            metavar="VERSION",
            help="Deploy the pending decision VERSION (`status` names it) after you looked.",
        ),
    ] = None,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Promote the winner of the latest rebuild recorded in MLflow (the `promote` Prefect flow), or with --approve
    deploy the pending decision a rebuild left for a person. Exit 1 when no candidate passed the gates.

    `--json` prints one object: `outcome` (`promoted`, `approved`, `unchanged`, `pending` or `no-candidate-passed`),
    `winner`, `version`, `release` (the gate folder deployed, or null), `pending` and `approve` (the version waiting
    for a person and the command that deploys it, or null), `unchanged` (why nothing was deployed, or an empty string),
    `repairs`, `candidates` (each `name`, `passed`, `reasons`), `choice` (how the winner was chosen) and `review`
    (the winner against the champion, or null). With `--json` a pending decision is never asked about."""
    project = state.project(Overrides.of(gate_dir=gate_dir, holdout=holdout))
    go_offline(project)
    from flows.promote import promote as promote_flow
    from tasks.operations.promote import require_latest_rebuild

    prm = project.params
    with guarded():
        if approve is None:
            require_latest_rebuild(prm.tracking)  # fails fast, before Prefect starts
        # the flow reads the latest rebuild again under the project lock: one that ran while this waited is newer
        result = promote_flow(params=prm, attended=yes, approve=approve)
    for repair in result.repairs:
        ERR.print(f"[yellow]repaired first:[/yellow] {repair}")
    outcome = _outcome(result, approve)
    if as_json:
        sys.stdout.write(json.dumps(_promotion_doc(result, outcome), indent=2, default=str) + "\n")
    console = out()
    if outcome == "approved" and not as_json:
        console.print(f"champion: {result.decision.winner} (version {result.version}) -> {result.release}")
        console.print(result.decision.policy, soft_wrap=True, highlight=False, markup=False)
    elif not as_json:
        console.print(result.decision.explain(), soft_wrap=True, highlight=False, markup=False)
    if outcome == "pending" and not as_json:
        settle_pending(prm, result.decision.winner, result.pending or "")
    elif outcome == "no-candidate-passed":
        if not as_json:
            console.print("[yellow]Nothing promoted: no candidate passed the gates.[/yellow]")
        raise typer.Exit(ExitCode.VERDICT)
    elif outcome == "unchanged" and not as_json:
        console.print(
            f"Promotion of {result.decision.winner} (version {result.version}) is a no-op: {result.unchanged}",
            soft_wrap=True,
        )
    elif outcome == "promoted" and not as_json:
        console.print(f"champion: {result.decision.winner} (version {result.version}) -> {result.release}")


def _outcome(result: Any, approve: str | None) -> str:
    """What a promotion did, in one word (the `outcome` of `promote --json`)."""
    if approve is not None:
        return "approved"
    if result.pending is not None:
        return "pending"
    if result.version is None:
        return "no-candidate-passed"
    return "unchanged" if result.unchanged else "promoted"


def _promotion_doc(result: Any, outcome: str) -> dict[str, Any]:
    """`promote --json`: the schema its help documents."""
    decision = result.decision
    return {
        "outcome": outcome,
        "winner": decision.winner,
        "version": result.version,
        "release": str(result.release) if result.release and outcome in ("promoted", "approved") else None,
        "pending": result.pending,
        "approve": f"alpr-ops promote --approve {result.pending}" if result.pending else None,
        "unchanged": result.unchanged,
        "repairs": list(result.repairs),
        "candidates": [
            {"name": v.name, "passed": v.passed, "reasons": list(v.reasons)} for v in decision.verdicts.values()
        ],
        "choice": decision.policy,
        "review": decision.review.explain() if decision.review and decision.review.champion_version else None,
    }


def settle_pending(prm: Any, winner: str | None, version: str) -> None:
    """A promotion run by hand kept the champion for a person: on a terminal, ask that person now (yes deploys it
    through `--approve`'s path); otherwise say how to approve it later. Never decided here without a person."""
    from flows.promote import promote as promote_flow

    console = out()
    console.print(
        f"[yellow]The champion stays deployed: {winner} (version {version}) is a pending decision (why: above)"
        "[/yellow]",
        soft_wrap=True,
    )
    if sys.stdin.isatty() and typer.confirm(f"Deploy version {version} now?", default=False, err=True):
        with guarded():
            result = promote_flow(params=prm, approve=version)
        console.print(f"champion: {result.decision.winner} (version {result.version}) -> {result.release}")
        return
    console.print(
        f"To deploy it after looking at the rebuild's trade-off chart: alpr-ops promote --approve {version} "
        "(or run the `promote` deployment with `approve` from the Prefect UI)",
        soft_wrap=True,
    )


def rollback(holdout: path_option("holdout") = None, gate_dir: path_option("gate_dir") = None) -> None:
    """Move `current` and the `champion` alias back to the previous release, in one step (the `rollback` flow)."""
    project = state.project(Overrides.of(gate_dir=gate_dir, holdout=holdout))
    go_offline(project)
    from flows.rollback import rollback as rollback_flow

    with guarded():
        result = rollback_flow(params=project.params)
    for repair in result.repairs:
        ERR.print(f"[yellow]repaired first:[/yellow] {repair}")
    out().print(
        f"rolled back: version {result.from_version} -> {result.to_version} ({result.release})", highlight=False
    )


def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    gate_dir: path_option("gate_dir") = None,
) -> None:
    """The champion, the deployed release and the latest rebuild's candidates."""
    from tasks.operations.regression import last_verdict
    from tasks.operations.status import status as read_status

    prm = state.project(Overrides.of(gate_dir=gate_dir)).params
    with guarded():
        info = read_status(prm.tracking, prm.promote)
    info["nightly"] = last_verdict(prm.paths.nightly_verdict)  # the last nightly check, also when the store was down
    if as_json:
        sys.stdout.write(json.dumps(info, indent=2, default=str) + "\n")
        return
    print_candidates(info["candidates"], info["champion"])
    console = out()
    deployed = info["deployed"]
    console.print(
        f"deployed: version {deployed['version']} ({deployed['release']})" if deployed else "deployed: none",
        soft_wrap=True,
    )
    if info["mismatch"]:
        console.print(f"[red]mismatch:[/red] {info['mismatch']}")
    if info.get("pending"):
        pend = info["pending"]
        console.print(
            f"[yellow]pending decision:[/yellow] version {pend['version']} ({pend['candidate']}, rebuild "
            f"{pend['rebuild_run_id']}) kept out of the gate against champion {pend['champion_version']}: "
            f"{pend['why']}. Approve: {pend['approve']}",
            soft_wrap=True,
        )
    if info["rebuild"]:
        if info["rebuild"].get("decision"):
            console.print(f"latest rebuild's promotion: {info['rebuild']['decision']}", soft_wrap=True)
        console.print(f"MLflow runs: {info['rebuild']['mlflow_url']}", soft_wrap=True)
    print_last_verdict(info["nightly"])


def report(
    run_id: Annotated[str | None, typer.Argument(help="A rebuild's MLflow run id (default: latest rebuild).")] = None,
    reports: path_option("reports", "--out") = None,
    as_json: JsonOpt = False,
) -> None:
    """Print one rebuild side by side and write its HTML and Markdown report (with the image grids).

    `--json` prints one object: the rebuild's `run_id`, `run_name`, `started`, `status`, `url` (the MLflow UI),
    `champion`, `lineage` and `params`; `candidates` (each `name`, `role`, `version`, `backend`, `precision`,
    `passed` (true, false, or null before the promotion gate ran), `reasons`, `metrics`, `notes`, `run_id`); and
    `report` (the paths of `html` and `md`)."""
    from tasks.operations.report import load_rebuild, summary_rows, write_report
    from tasks.support.config import redact_text

    prm = state.project(Overrides.of(reports=reports)).params
    with guarded():
        view = load_rebuild(prm.tracking, run_id, prm.promote.gate_dir)
        folder = write_report(prm.tracking, view, prm.paths.reports)
    if as_json:
        doc = asdict(view)
        for c in doc["candidates"]:
            c["passed"] = {"true": True, "false": False}.get(c["passed"])
        doc["report"] = {"html": str(folder / "report.html"), "md": str(folder / "report.md")}
        sys.stdout.write(redact_text(json.dumps(doc, indent=2, default=str)) + "\n")
        return
    print_report(view, summary_rows(view))
    console = out()
    console.print(f"report: {folder / 'report.html'} and {folder / 'report.md'}", soft_wrap=True, highlight=False)
    console.print(f"MLflow runs: {view.url}", soft_wrap=True, highlight=False)


def gate_run(
    source: Annotated[Path, typer.Option(help="A video file or a folder of images.")],
    gate_dir: path_option("gate_dir") = None,
) -> None:
    """Run `current` frame by frame; hot-swap to a new release when `current` changes (no frame dropped)."""
    project = state.project(Overrides.of(gate_dir=gate_dir))
    go_offline(project)
    from tasks.operations.aliases import adopt_at_gate_start
    from tasks.runtime.gate import run_gate

    prm = project.params
    with guarded():
        for line in adopt_at_gate_start(prm.tracking, prm.promote.gate_dir):  # releases deployed before the upgrade
            ERR.print(f"[yellow]{line}[/yellow]")
        result = run_gate(prm.promote.gate_dir, source, prm.validate_.agreement_conf, prm.validate_.iou)
    versions = sorted({f.version for f in result.frames})
    out().print(
        f"{len(result.frames)} frames, {result.fps:.1f} FPS, {result.detections} detections, "
        f"releases used: {', '.join('v' + v for v in versions)}, swaps: {len(result.swaps)}, "
        f"failed loads: {len(result.failures)}"
    )
    for version, region in result.regions.items():  # what each release looks at: its crop, or the full frame
        out().print(f"release v{version}: {region}", highlight=False)
