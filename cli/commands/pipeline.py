"""The pipeline: build and validate (the `dvc.yaml` stages), the whole `rebuild` flow, and resuming it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.commands.release import YesOpt, settle_pending
from cli.context import fail, go_offline, guarded, locked, state
from cli.exit_codes import ExitCode
from cli.options import path_option
from cli.printers import ERR, out, print_candidates
from tasks.support.project import Overrides

REBUILD_ENTRYPOINT = "flows/rebuild.py:rebuild"


def build(
    model: path_option("model") = None,
    calibration_yaml: path_option("calibration_yaml", "--data") = None,
    calibration: path_option("calibration", "--frames") = None,
    candidates: path_option("candidates", "--out") = None,
    holdout_frames: path_option("holdout_frames", "--gate-frames") = None,
) -> None:
    """Build every candidate in params.yaml: build.candidates (our INT8 gate uses frames of the held-out videos)."""
    overrides = Overrides.of(
        model=model,
        calibration_yaml=calibration_yaml,
        calibration=calibration,
        candidates=candidates,
        holdout_frames=holdout_frames,
    )
    project = state.project(overrides)
    go_offline(project)
    from tasks.pipeline.build import build_candidates
    from tasks.pipeline.extract import check_dataset_yaml, read_frames_hash
    from tasks.pipeline.fetch import verify_model
    from tasks.runtime.releases import gate_paths

    prm = project.params
    p = prm.paths
    with guarded(), locked(project, "build"):
        weights = verify_model(p.model, prm.model.sha256)
        dataset = check_dataset_yaml(p.calibration_yaml, p.calibration)
        built = build_candidates(
            weights, dataset, p.candidates, prm.build, prm.model.sha256, read_frames_hash(p.calibration),
            gate=prm.validate_, cache_dir=p.build_cache, previous=gate_paths(prm.promote.gate_dir).current,
            gate_frames=p.holdout_frames,
        )  # fmt: skip
    console = out()
    for c in built:  # the result: what was built, where
        console.print(f"built {c.name} ({c.precision}, {c.backend}, {c.size_mb:.1f} MB): {c.folder}", highlight=False)


def validate(
    candidates: path_option("candidates") = None,
    holdout: path_option("holdout") = None,
    metrics: path_option("metrics") = None,
    holdout_frames: path_option("holdout_frames", "--frames") = None,
    plots: path_option("plots") = None,
) -> None:
    """Validate every built candidate; write the metrics JSON and plot data that dvc.yaml declares."""
    overrides = Overrides.of(
        candidates=candidates, holdout=holdout, metrics=metrics, holdout_frames=holdout_frames, plots=plots
    )
    project = state.project(overrides)
    go_offline(project)
    from tasks.pipeline.build import with_geometry_references
    from tasks.pipeline.validate import run_validation, write_metrics, write_plot_data
    from tasks.support.candidate import load_candidates

    prm = project.params
    p = prm.paths
    with guarded(), locked(project, "validate"):
        declared = load_candidates(p.candidates, [c.name for c in prm.build.candidates])
        built = with_geometry_references(p.candidates, declared, prm.build.reference)
        report = run_validation(
            built, p.holdout, prm.build.reference, prm.validate_, p.holdout_frames, prm.build.speed_reference_name
        )
        write_metrics(p.metrics, prm.build.reference, report.metrics, report.speed_basis)
        write_plot_data(p.plots, report)
    print_candidates([{"name": k, **v} for k, v in report.metrics.items()], None)


def rebuild(
    videos: path_option("videos") = None,
    holdout: path_option("holdout") = None,
    gate_dir: path_option("gate_dir") = None,
    only: Annotated[
        list[str] | None, typer.Option("--candidate", "-c", help="Build only these (repeatable); default: all.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Rebuild even when the inputs equal the last finished rebuild's.")
    ] = False,
    yes: YesOpt = False,
) -> None:
    """Run the whole workflow as a Prefect flow: extract, build, validate, track, promote.

    When the inputs (videos, holdout, params, code, toolchain, hardware) equal the last finished rebuild's, nothing
    is rebuilt: one small MLflow run names that rebuild (checked before any Prefect server starts). `--force`
    rebuilds anyway. A winner that needs a person (slower than the champion, an FP32 model replacing an INT8
    champion, a champion failing a gate now) is asked about on a terminal, or left pending; `--yes` deploys it."""
    project = state.project(Overrides.of(gate_dir=gate_dir, only=only, videos=videos, holdout=holdout))
    from tasks.operations.doctor import require_disk

    with guarded():
        require_disk(project.params, project.root)  # stops here when the disk is short (`alpr-ops doctor`: the formula)
    if not force and skip_unchanged(project):
        return
    run_rebuild(project, force=force, attended=yes)


def skip_unchanged(project: Any) -> bool:
    """Under the project lock, before Prefect starts: when the inputs equal the last finished rebuild's, log the
    small run that names it, say so, and return True. The flow checks again (a rebuild may finish in between)."""
    go_offline(project)
    from cli.advice import ADVICE
    from tasks.pipeline.unchanged import UNCHANGED_REMEDY, check_inputs, log_unchanged

    prm = project.params
    with guarded(), locked(project, "rebuild"):
        check = check_inputs(prm)
        if check.matched_run_id is None:
            return False
        run_id = log_unchanged(prm.tracking, check)
    out().print(
        f"Inputs unchanged since rebuild {check.matched_run_id} (videos, holdout, params, code, toolchain, hardware): "
        f"nothing rebuilt, registered or promoted; logged run {run_id}. {ADVICE[UNCHANGED_REMEDY]}",
        soft_wrap=True,
    )
    return True


def run_rebuild(project: Any, force: bool = False, attended: bool = False) -> dict[str, Any]:
    """The `rebuild` flow on the parsed project, then the candidates table from MLflow; a failure says how to
    resume. Run by hand: a pending decision is asked about here (`settle_pending`) unless `attended` (`--yes`)."""
    from flows.rebuild import rebuild as rebuild_flow
    from tasks.operations.status import status

    flow_state = rebuild_flow(project=project, force=force, attended=attended, return_state=True)
    if not flow_state.is_completed():
        code = ExitCode.UNAVAILABLE
        try:
            flow_state.result()
        except Exception as e:  # the step's own error: its message and advice
            code = fail(e).exit_code
        ERR.print(
            "Fix the cause, then resume from the last finished step (finished steps are not redone):\n"
            f"  alpr-ops resume {flow_state.state_details.flow_run_id}",
            soft_wrap=True,
        )
        raise typer.Exit(code)
    done = flow_state.result()
    params = done["params"]
    console = out()
    if done["unchanged"]:
        console.print(
            f"Inputs unchanged since rebuild {done['unchanged']}: nothing rebuilt; run {done['mlflow_run_id']}."
        )
        return done
    with guarded():
        info = status(params.tracking, params.promote)
    print_candidates(info["candidates"], info["champion"])
    if info["rebuild"]:
        console.print(f"MLflow runs: {info['rebuild']['mlflow_url']}", soft_wrap=True, highlight=False)
    if done["promotion"] is not None and done["promotion"].unchanged:
        console.print(
            f"Promotion of {done['winner']} (version {done['version']}) is a no-op: {done['promotion'].unchanged}"
        )
    if done["winner"] is None and done["explain"]:
        console.print("[yellow]No candidate passed the gates; nothing was promoted:[/yellow]")
        console.print(done["explain"], soft_wrap=True, highlight=False, markup=False)
        raise typer.Exit(ExitCode.VERDICT)  # as `promote` does: no candidate passed is a verdict (exit 1)
    if done["pending"] is not None:
        console.print(done["explain"], soft_wrap=True, highlight=False, markup=False)
        settle_pending(params, done["winner"], done["pending"])
    return done


def repro(
    args: Annotated[list[str] | None, typer.Argument(help="Arguments for `dvc repro` (e.g. a stage name).")] = None,
) -> None:
    """`dvc repro` under the project lock: no rebuild, promotion or other writer runs between its stages (each
    stage's `alpr-ops` command re-enters the lock this process holds)."""
    project = state.project()
    exe = Path(sys.executable).with_name("dvc")
    with locked(project, "dvc repro"):
        code = subprocess.run([str(exe), "repro", *(args or [])], cwd=project.root, check=False).returncode
    raise typer.Exit(code)


def resume(flow_run_id: Annotated[str, typer.Argument(help="The failed rebuild's flow run id.")]) -> None:
    """Resume a failed rebuild from its last finished step: Prefect's `flow-run retry`, run offline like every step.

    Resume the newest failed rebuild only: a later rebuild has replaced the frames and candidates it had made.
    """
    project = state.project()
    go_offline(project)  # the env this process set (offline, Prefect's start-up timeout) is the retry's too
    entry = f"{Path(__file__).resolve().parents[2] / REBUILD_ENTRYPOINT.split(':')[0]}:rebuild"
    cmd = [sys.executable, "-m", "prefect", "flow-run", "retry", flow_run_id, "--entrypoint", entry]
    env = dict(os.environ)
    tracking = project.params.tracking
    if tracking.shown_uri != tracking.uri:  # Prefect kept the run's tracking.uri redacted: its secrets come from here
        env["MLFLOW_TRACKING_URI"] = tracking.uri
    raise typer.Exit(subprocess.run(cmd, check=False, env=env).returncode)
