"""Operations: serve the deployments on one machine, server mode (deploy, watch), the nightly check, the demo."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from contextlib import nullcontext
from dataclasses import asdict
from typing import Annotated, Any

import typer

from cli.commands.data import fetch_pinned_model, write_sample_data
from cli.commands.pipeline import run_rebuild
from cli.context import fail, go_offline, guarded, locked, state
from cli.exit_codes import ExitCode
from cli.options import path_option
from cli.printers import out, print_nightly
from tasks.support.project import Overrides, Project

log = logging.getLogger("alpr_ops")


def _require_api(what: str) -> str:
    """Server mode needs a Prefect server: its URL comes from PREFECT_API_URL (a Prefect setting, not a param)."""
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        raise fail(
            RuntimeError(
                f"`alpr-ops {what}` talks to a Prefect server: start one (`prefect server start --host 127.0.0.1`) "
                "and set PREFECT_API_URL=http://127.0.0.1:4200/api, or use `alpr-ops serve` on one machine."
            ),
            ExitCode.USAGE,
        )
    return url


def _watcher(project: Project, trigger_deployment: str) -> Any:  # -> tasks.operations.watch.Watcher
    from flows.deployments import trigger_rebuild
    from tasks.operations.watch import Watcher
    from tasks.support.dvc import dvc_file

    p = project.params.paths
    return Watcher(
        videos=p.videos,
        cfg=project.params.watch,
        state_file=p.watch_state,
        trigger=lambda burst: trigger_rebuild(trigger_deployment, state.params_file),
        dvc_file=dvc_file(p.videos),
        lock_file=p.rebuild_lock,
    )


def serve(
    watch: Annotated[bool, typer.Option(help="Start a rebuild when new videos land in paths.videos.")] = True,
) -> None:
    """Serve the rebuild, nightly-regression, promote and rollback deployments from this process (one machine).

    Starts a Prefect server on 127.0.0.1:serve.port unless PREFECT_API_URL points at one; Ctrl-C stops everything.
    """
    project = state.project()
    go_offline(project)
    params = project.params
    own_server = not os.environ.get("PREFECT_API_URL")
    if own_server:
        os.environ["PREFECT_HOME"] = str(params.paths.prefect_home)  # persisted task results live with the project
    from tasks.operations.prefect_server import local_server

    server = local_server(params.paths.prefect_home, params.serve.port) if own_server else nullcontext(None)
    with guarded(), server as url:
        if url:
            os.environ["PREFECT_API_URL"] = url  # before Prefect is first imported in this process
        from prefect import serve as prefect_serve

        from flows.deployments import runner_deployments

        stop = threading.Event()
        if watch:
            watcher = _watcher(project, "rebuild/serve")
            threading.Thread(target=watcher.run, args=(stop,), name="video-watcher", daemon=True).start()
        try:
            prefect_serve(*runner_deployments(params, state.params_file), print_starting_message=False)
        finally:
            stop.set()


def deploy() -> None:
    """Server mode: register the deployments on the work pool of this project's gate hardware (PREFECT_API_URL)."""
    _require_api("deploy")
    project = state.project()
    go_offline(project)
    from flows.deployments import deploy_to_pool, work_pool_for

    with guarded():
        pool = work_pool_for(project.params)
        names = deploy_to_pool(project.params, state.params_file, project.root)
    console = out()
    console.print(f"deployed: {', '.join(names)}", soft_wrap=True)
    console.print(f"start a worker on the gate hardware: [bold]prefect worker start --pool {pool}[/bold]")


def watch(
    deployment: Annotated[
        str | None, typer.Option(help="The rebuild deployment to run; default rebuild/<work pool of build.backend>.")
    ] = None,
) -> None:
    """Server mode: watch paths.videos and run the rebuild deployment once per burst of new videos."""
    _require_api("watch")
    project = state.project()
    go_offline(project)
    from flows.deployments import work_pool_for

    with guarded():
        target = deployment or f"rebuild/{work_pool_for(project.params)}"
    stop = threading.Event()
    try:
        _watcher(project, target).run(stop)
    except KeyboardInterrupt:
        stop.set()


def nightly(
    videos: path_option("videos") = None,
    holdout: path_option("holdout") = None,
    gate_dir: path_option("gate_dir") = None,
    frame_cache: path_option("frame_cache", "--cache") = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
) -> None:
    """Re-validate the champion on the newest videos (the `nightly` Prefect flow). Exit 0 pass, 1 a gate is broken
    (a regression), 3 could not check (the store did not answer, no champion, a champion this machine cannot run).
    The verdict is also written to paths.nightly_verdict, which `alpr-ops status` shows."""
    project = state.project(Overrides.of(gate_dir=gate_dir, videos=videos, holdout=holdout, frame_cache=frame_cache))
    go_offline(project)
    from flows.nightly import nightly_regression
    from tasks.operations.regression import RegressionFailed, find_champion, record_verdict
    from tasks.support.tracking import client, require_store

    prm = project.params
    with guarded():
        try:  # fail fast, before Prefect starts; "could not check" is a verdict the operator reads too
            require_store(prm.tracking)  # a missing sqlite file: refused, not created empty
            client(prm.tracking).search_experiments(max_results=1)  # the store answers (a bounded wait)
            find_champion(prm.promote.gate_dir, prm.tracking)
        except Exception as e:
            record_verdict(prm.paths.nightly_verdict, error=e)
            raise
        try:
            report = nightly_regression(params=prm)
        except RegressionFailed as e:
            print_nightly(e.report, as_json)
            raise
    print_nightly(report, as_json)
    if not as_json:
        out().print(report.explain(), soft_wrap=True, highlight=False, markup=False)


def gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would be pruned; delete nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan (or what was pruned) as JSON.")] = False,
) -> None:
    """Prune the frame cache, the build cache and old MLflow model artifacts; never what the champion, `previous`,
    the latest rebuild or the next one use (tasks/operations/gc.py). Prints the size of each area (stdout:
    `alpr-ops gc --dry-run > plan.txt` keeps the plan)."""
    project = state.project()
    go_offline(project)
    from tasks.operations.gc import collect_garbage
    from tasks.support.tracking import require_store

    with guarded(), locked(project, "gc"):
        require_store(project.params.tracking)  # a missing sqlite file: refused, not created empty
        report = collect_garbage(project.params, dry_run)
    if as_json:
        doc = {**asdict(report), "pruned_bytes": report.pruned_bytes}
        sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
        return
    verb = "would prune" if report.dry_run else "pruned"
    console = out()
    for a in report.areas:
        console.print(
            f"{a.name} ({a.where}): {a.total_bytes / 1e6:.1f} MB, {verb} {a.pruned_bytes / 1e6:.1f} MB "
            f"in {len(a.pruned)} entries, {a.kept} kept",
            soft_wrap=True,
            highlight=False,
        )
        for item in a.pruned:
            console.print(f"  {verb}: {item}", soft_wrap=True, highlight=False, markup=False)
    console.print(f"total {verb}: {report.pruned_bytes / 1e6:.1f} MB", highlight=False)


def demo() -> None:
    """The whole workflow on embedded defaults: sample videos, fetch the model, version data, rebuild, promote."""
    from tasks.support.dvc import DvcError, dvc_track
    from tasks.support.tracking import client, experiment_id, experiment_url
    from tasks.support.videos import VIDEO_SUFFIXES

    project = state.project()
    go_offline(project)
    params, p = project.params, project.params.paths
    has_videos = p.videos.is_dir() and any(f.suffix.lower() in VIDEO_SUFFIXES for f in p.videos.iterdir())
    if has_videos and not (p.holdout / "images").is_dir():
        raise fail(
            RuntimeError(f"{p.videos} has videos but {p.holdout} has no labelled holdout; add one"),
            ExitCode.UNAVAILABLE,
        )
    if not has_videos:  # never mix synthetic footage into a folder of real videos
        write_sample_data(params)
    fetch_pinned_model(params)
    try:
        dvc_track(project.root, [p.videos, p.holdout, p.model], ["paths.videos", "paths.holdout", "paths.model"])
    except DvcError as e:
        log.warning("%s (continuing without DVC versioning)", e)
    run_rebuild(project)
    uri = params.tracking.shown_uri
    out().print(
        f"\nOpen the MLflow UI: [bold].venv/bin/mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000[/bold]"
        f"\nthen browse {experiment_url(uri, experiment_id(client(params.tracking), params.tracking))}"
        "\nTo rebuild whenever new videos land in data/videos (and run the nightly check): [bold]alpr-ops serve[/bold]",
        soft_wrap=True,
    )
