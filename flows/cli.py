"""`alpr-ops`: one CLI over every step. Parses `params.yaml` once here and passes typed config to the tasks.

Paths default to `params.yaml` and every one can be overridden by a flag, which is how `dvc.yaml` stages call it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from tasks.support.config import ConfigError, Params, load_params

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(stderr=True)
log = logging.getLogger("alpr_ops")

PathOpt = Annotated[Path | None, typer.Option(help="Override the path from params.yaml.")]


class State:
    """The parsed `params.yaml`, loaded on first use so that `--help` works outside a project folder."""

    params_file: Path = Path("params.yaml")
    _params: Params | None = None

    @property
    def params(self) -> Params:
        if self._params is None:
            try:
                self._params = load_params(self.params_file)
            except ConfigError as e:
                console.print(f"[red]error:[/red] {e}")
                raise typer.Exit(2) from e
        return self._params

    @property
    def root(self) -> Path:
        return self.params_file.resolve().parent


state = State()


def _with_paths(params: Params, **paths: Path | None) -> Params:
    """`params` with the given `paths.*` overridden (None keeps the value from params.yaml)."""
    given = {k: v.resolve() for k, v in paths.items() if v is not None}
    return params.model_copy(update={"paths": params.paths.model_copy(update=given)}) if given else params


def _with_gate_dir(params: Params, gate_dir: Path | None) -> Params:
    if gate_dir is None:
        return params
    return params.model_copy(update={"promote": params.promote.model_copy(update={"gate_dir": gate_dir.resolve()})})


def _offline() -> None:
    from tasks.support.offline import configure_offline

    configure_offline(state.params.paths.ultralytics_config)


class _RunName(logging.Filter):
    """Prefix Prefect's run messages with the step's run name ("build-4ea: Finished in state Cached()")."""

    def filter(self, record: logging.LogRecord) -> bool:
        name = getattr(record, "task_run_name", None) or getattr(record, "flow_run_name", None)
        if name and not getattr(record, "alpr_prefixed", False):
            record.msg, record.alpr_prefixed = f"{name}: {record.msg}", True
        return True


@app.callback()
def main(
    params: Annotated[Path, typer.Option("--params", help="The parameters file.")] = Path("params.yaml"),
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """MLOps workflow for the INT8 plate detector of parking-gate cameras."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=True)],
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(_RunName())
    # One readable line per step: silence per-request and per-layer chatter from the libraries underneath.
    for noisy in ("httpx", "httpcore", "alembic", "mlflow.store.db.utils", "dvc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "no CUDA runtime": expected on CPU
    warnings.filterwarnings("ignore", category=FutureWarning)
    from tasks.support.offline import set_offline_env

    set_offline_env()  # before any command touches MLflow, Prefect or DVC, which read these at import
    # Prefect's temporary local server migrates a fresh database first: on a busy 2-core machine that takes longer
    # than its 20 s default. A user's own setting wins.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    state.params_file = params


def _fail(e: Exception) -> typer.Exit:
    console.print(f"[red]error:[/red] {e}")
    return typer.Exit(1)


@app.command("sample-videos")
def sample_videos(
    out: Annotated[Path | None, typer.Argument(help="Folder for the videos.")] = None,
    n: Annotated[int | None, typer.Option(help="Number of videos.")] = None,
    seconds: Annotated[float | None, typer.Option(help="Length of each video.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed; the same seed gives the same videos.")] = None,
    holdout: PathOpt = None,
    holdout_frames: Annotated[int | None, typer.Option(help="Labelled holdout frames.")] = None,
) -> None:
    """Write synthetic parking-gate videos and a labelled holdout set (from other seeds)."""
    from tasks.demo.synth import SynthConfig, write_holdout, write_videos

    s = state.params.sample
    seed = s.seed if seed is None else seed
    n = s.n if n is None else n
    seconds = s.seconds if seconds is None else seconds
    holdout_frames = s.holdout_frames if holdout_frames is None else holdout_frames
    try:
        cfg = SynthConfig(width=s.width, height=s.height, fps=s.fps)
        videos = write_videos(out or state.params.paths.videos, n, seconds, seed, cfg)
        hold = write_holdout(holdout or state.params.paths.holdout, holdout_frames, seed, cfg)
    except ValueError as e:
        raise _fail(e) from e
    log.info("wrote %d videos to %s and a labelled holdout to %s", len(videos), videos[0].parent, hold)


@app.command("fetch-model")
def fetch_model(out: PathOpt = None) -> None:
    """Fetch the pinned plate detector (fastanpr's best.pt) from PyPI and verify its sha256."""
    from tasks.pipeline.fetch import ModelError
    from tasks.pipeline.fetch import fetch_model as fetch

    m = state.params.model
    try:
        path = fetch(out or state.params.paths.model, m.package, m.member, m.sha256)
    except ModelError as e:
        raise _fail(e) from e
    log.info("model ready: %s", path)


@app.command()
def extract(
    videos: PathOpt = None,
    out: PathOpt = None,
    dataset_yaml: PathOpt = None,
    holdout_frames: PathOpt = None,
    cache: PathOpt = None,
) -> None:
    """Sample calibration and holdout frames from the gate videos; write the manifests, report and calibration.yaml."""
    from tasks.pipeline.extract import ExtractError, extract_frames

    p = state.params.paths
    try:
        result = extract_frames(
            videos or p.videos,
            out or p.calibration,
            dataset_yaml or p.calibration_yaml,
            state.params.extract,
            state.params.model.names,
            holdout_dir=holdout_frames or p.holdout_frames,
            cache_dir=cache or p.frame_cache,
        )
    except ExtractError as e:
        raise _fail(e) from e
    _print_extract(result.report)
    for name, reason in result.skipped.items():
        console.print(f"[yellow]skipped[/yellow] {name}: {reason}")
    log.info("%d frames (hash %s) -> %s", result.frames, result.frames_hash[:12], result.out_dir)


def _print_extract(report: dict[str, Any]) -> None:
    """The closing summary of an extraction: per video, where its frames went, how many and why others were not."""
    out = Console(width=None if sys.stdout.isatty() else 150)
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
    out.print(table)
    out.print(
        f"calibration {report.get('calibration_frames', 0)} frames, holdout {report.get('holdout_frames', 0)}; "
        f"decoded {report.get('decoded_videos', 0)} videos, {report.get('cached_videos', 0)} from cache"
    )


@app.command()
def build(
    model: PathOpt = None,
    data: PathOpt = None,
    frames: PathOpt = None,
    out: PathOpt = None,
    gate_frames: PathOpt = None,
) -> None:
    """Build every candidate in params.yaml: build.candidates (our INT8 gate uses frames of the held-out videos)."""
    _offline()
    from tasks.pipeline.build import BackendUnavailable, build_candidates
    from tasks.pipeline.extract import ExtractError, check_dataset_yaml, read_frames_hash
    from tasks.pipeline.fetch import ModelError, verify_model

    p, prm = state.params.paths, state.params
    try:
        weights = verify_model(model or p.model, prm.model.sha256)
        dataset = check_dataset_yaml(data or p.calibration_yaml, frames or p.calibration)
        digest = read_frames_hash(frames or p.calibration)
        build_candidates(
            weights, dataset, out or p.candidates, prm.build, prm.model.sha256, digest,
            gate=prm.validate_, cache_dir=p.build_cache, previous=prm.promote.gate_dir / "current",
            gate_frames=gate_frames or p.holdout_frames,
        )  # fmt: skip
    except (ModelError, ExtractError, BackendUnavailable, FileNotFoundError) as e:
        raise _fail(e) from e


@app.command()
def validate(
    candidates: PathOpt = None,
    holdout: PathOpt = None,
    metrics: PathOpt = None,
    frames: PathOpt = None,
    plots: PathOpt = None,
) -> None:
    """Validate every built candidate; write the metrics JSON and plot data that dvc.yaml declares."""
    _offline()
    from tasks.pipeline.build import load_candidates
    from tasks.pipeline.validate import ValidationError, run_validation, write_metrics, write_plot_data
    from tasks.runtime.latency import LatencyError

    p, prm = state.params.paths, state.params
    try:
        built = load_candidates(candidates or p.candidates, [c.name for c in prm.build.candidates])
        report = run_validation(
            built, holdout or p.holdout, prm.build.reference, prm.validate_, frames or p.holdout_frames
        )
    except (ValidationError, LatencyError, FileNotFoundError) as e:
        raise _fail(e) from e
    rows = report.metrics
    write_metrics(metrics or p.metrics, prm.build.reference, rows)
    write_plot_data(plots or p.plots, report)
    _print_candidates([{"name": k, **v} for k, v in rows.items()], None)


@app.command()
def rebuild(
    videos: PathOpt = None,
    holdout: PathOpt = None,
    gate_dir: PathOpt = None,
    candidates: Annotated[
        list[str] | None, typer.Option("--candidate", "-c", help="Build only these (repeatable); default: all.")
    ] = None,
) -> None:
    """Run the whole workflow as a Prefect flow: extract, build, validate, track, promote."""
    _offline()
    _run_rebuild(videos=videos, holdout=holdout, gate_dir=gate_dir, candidates=candidates)


def _run_rebuild(**overrides: Any) -> dict[str, Any]:
    """The `rebuild` flow (flows/deploy.py, the one deployments run), then the candidates table from MLflow."""
    from flows.deploy import rebuild as rebuild_flow
    from tasks.operations.status import status
    from tasks.support.project import load_project

    given = {k: (str(v.resolve()) if isinstance(v, Path) else v) for k, v in overrides.items() if v}
    state.params  # noqa: B018  (a broken params.yaml stops here, exit 2, before Prefect starts)
    try:
        params = load_project(state.params_file, **{k: v for k, v in overrides.items() if v}).params
    except (ConfigError, ValueError) as e:
        raise _fail(e) from e
    flow_state = rebuild_flow(str(state.params_file.resolve()), **given, return_state=True)
    if not flow_state.is_completed():
        run_id = flow_state.state_details.flow_run_id
        try:
            flow_state.result()
        except Exception as e:
            console.print(f"[red]error:[/red] {e}")
        console.print(
            f"Fix the cause, then resume from the last finished step (finished steps are not redone):\n"
            f"  alpr-ops resume {run_id}",
            soft_wrap=True,
        )
        raise typer.Exit(1)
    out = flow_state.result()
    info = status(params.tracking, params.promote)
    _print_candidates(info["candidates"], info["champion"])
    if out["winner"] is None and out["explain"]:
        console.print("[yellow]No candidate passed the gates; nothing was promoted:[/yellow]")
        console.print(out["explain"])
    return out


@app.command()
def resume(flow_run_id: Annotated[str, typer.Argument(help="The failed rebuild's flow run id.")]) -> None:
    """Resume a failed rebuild from its last finished step: Prefect's `flow-run retry`, run offline like every step.

    Resume the newest failed rebuild only: a later rebuild has replaced the frames and candidates it had made.
    """
    import subprocess

    _offline()  # the env this process set (offline, Prefect's start-up timeout) is the retry's env too
    entry = f"{Path(__file__).with_name('deploy.py')}:rebuild"
    cmd = [sys.executable, "-m", "prefect", "flow-run", "retry", flow_run_id, "--entrypoint", entry]
    raise typer.Exit(subprocess.run(cmd, check=False).returncode)


@app.command()
def promote(holdout: PathOpt = None, gate_dir: PathOpt = None) -> None:
    """Promote the winner of the latest rebuild recorded in MLflow (the `promote` Prefect flow)."""
    _offline()
    from flows.promote import promote as promote_flow
    from tasks.operations.promote import require_latest_rebuild

    prm = _with_gate_dir(_with_paths(state.params, holdout=holdout), gate_dir)
    try:
        record, metrics = require_latest_rebuild(prm.tracking)  # fails fast, before Prefect starts
        result = promote_flow(prm, record, metrics)
    except Exception as e:
        raise _fail(e) from e
    console.print(result.decision.explain())
    if result.version is None:
        console.print("[yellow]Nothing promoted: no candidate passed the gates.[/yellow]")
        raise typer.Exit(1)
    console.print(f"champion: {result.decision.winner} (version {result.version}) -> {result.release}")


@app.command()
def rollback(holdout: PathOpt = None, gate_dir: PathOpt = None) -> None:
    """Move `current` and the `champion` alias back to the previous release, in one step (logged to MLflow)."""
    _offline()
    from tasks.operations.promote import RollbackError
    from tasks.operations.promote import rollback as do_rollback

    prm = _with_gate_dir(_with_paths(state.params, holdout=holdout), gate_dir)
    try:
        result = do_rollback(prm.promote, prm.tracking, prm.paths.holdout, prm.validate_)
    except RollbackError as e:
        raise _fail(e) from e
    console.print(f"rolled back: version {result.from_version} -> {result.to_version} ({result.release})")


@app.command()
def nightly(videos: PathOpt = None, holdout: PathOpt = None, gate_dir: PathOpt = None, cache: PathOpt = None) -> None:
    """Re-validate the champion on the newest videos (the `nightly` Prefect flow); exit 1 when a gate is broken."""
    _offline()
    from flows.nightly import nightly_regression
    from tasks.operations.regression import RegressionFailed, find_champion

    prm = _with_gate_dir(_with_paths(state.params, videos=videos, holdout=holdout, frame_cache=cache), gate_dir)
    try:
        find_champion(prm.promote.gate_dir, prm.tracking)  # fails fast, before Prefect starts
        report = nightly_regression(prm)
    except RegressionFailed as e:
        _print_nightly(e.report)
        raise _fail(e) from e
    except Exception as e:
        raise _fail(e) from e
    _print_nightly(report)
    console.print(report.explain())


def _print_nightly(report: Any) -> None:
    """The nightly gates side by side: measured value, threshold, verdict."""
    out = Console(width=None if sys.stdout.isatty() else 150)
    table = Table(title=f"Nightly regression of champion version {report.champion_version} ({report.frames} frames)")
    for col in ("gate", "value", "threshold", "verdict"):
        table.add_column(col, justify="left" if col == "gate" else "right")
    for c in report.checks:
        table.add_row(c.gate, f"{c.value:.4g}", f"{c.op} {c.threshold:.4g}", "pass" if c.passed else "[red]FAIL[/red]")
    out.print(table)
    out.print(f"MLflow run: {report.mlflow_run_id or '-'}")


gate_app = typer.Typer(no_args_is_help=True, help="The reference gate runtime.")
app.add_typer(gate_app, name="gate")


@gate_app.command("run")
def gate_run(
    source: Annotated[Path, typer.Option(help="A video file or a folder of images.")],
    gate_dir: PathOpt = None,
) -> None:
    """Run `current` frame by frame; hot-swap to a new release when `current` changes (no frame dropped)."""
    _offline()
    from tasks.runtime.gate import GateError, run_gate

    prm = _with_gate_dir(state.params, gate_dir)
    try:
        report = run_gate(prm.promote.gate_dir, source, prm.validate_.agreement_conf, prm.validate_.iou)
    except GateError as e:
        raise _fail(e) from e
    versions = sorted({f.version for f in report.frames})
    console.print(
        f"{len(report.frames)} frames, {report.fps:.1f} FPS, {report.detections} detections, "
        f"releases used: {', '.join('v' + v for v in versions)}, swaps: {len(report.swaps)}, "
        f"failed loads: {len(report.failures)}"
    )


def _require_api(what: str) -> str:
    """Server mode needs a Prefect server: its URL comes from PREFECT_API_URL (a Prefect setting, not a param)."""
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        raise _fail(
            RuntimeError(
                f"`alpr-ops {what}` talks to a Prefect server: start one (`prefect server start --host 127.0.0.1`) "
                "and set PREFECT_API_URL=http://127.0.0.1:4200/api, or use `alpr-ops serve` on one machine."
            )
        )
    return url


def _watcher(trigger_deployment: str):  # -> tasks.operations.watch.Watcher
    from flows.deploy import trigger_rebuild
    from tasks.operations.watch import Watcher
    from tasks.support.dvc import dvc_file

    p = state.params.paths
    return Watcher(
        videos=p.videos,
        cfg=state.params.watch,
        state_file=p.watch_state,
        trigger=lambda burst: trigger_rebuild(trigger_deployment, state.params_file),
        dvc_file=dvc_file(p.videos),
        lock_file=p.rebuild_lock,
    )


@app.command()
def serve(
    watch: Annotated[bool, typer.Option(help="Start a rebuild when new videos land in paths.videos.")] = True,
) -> None:
    """Serve the rebuild, nightly-regression, promote and rollback deployments from this process (one machine).

    Starts a Prefect server on 127.0.0.1:serve.port unless PREFECT_API_URL points at one; Ctrl-C stops everything.
    """
    import threading
    from contextlib import nullcontext

    _offline()
    params = state.params
    own_server = not os.environ.get("PREFECT_API_URL")
    if own_server:
        os.environ["PREFECT_HOME"] = str(params.paths.prefect_home)  # persisted task results live with the project
    from tasks.operations.prefect_server import local_server

    server = local_server(params.paths.prefect_home, params.serve.port) if own_server else nullcontext(None)
    try:
        with server as url:
            if url:
                os.environ["PREFECT_API_URL"] = url  # before Prefect is first imported in this process
            from prefect import serve as prefect_serve

            from flows.deploy import runner_deployments

            stop = threading.Event()
            if watch:
                watcher = _watcher("rebuild/serve")
                threading.Thread(target=watcher.run, args=(stop,), name="video-watcher", daemon=True).start()
            try:
                prefect_serve(*runner_deployments(params, state.params_file), print_starting_message=False)
            finally:
                stop.set()
    except RuntimeError as e:
        raise _fail(e) from e


@app.command()
def deploy() -> None:
    """Server mode: register the deployments on the work pool of this project's gate hardware (PREFECT_API_URL)."""
    _require_api("deploy")
    _offline()
    from flows.deploy import deploy_to_pool, work_pool_for

    try:
        names = deploy_to_pool(state.params, state.params_file, state.root)
        pool = work_pool_for(state.params)
    except ValueError as e:
        raise _fail(e) from e
    console.print(f"deployed: {', '.join(names)}")
    console.print(f"start a worker on the gate hardware: [bold]prefect worker start --pool {pool}[/bold]")


@app.command("watch")
def watch_cmd(
    deployment: Annotated[
        str | None, typer.Option(help="The rebuild deployment to run; default rebuild/<work pool of build.backend>.")
    ] = None,
) -> None:
    """Server mode: watch paths.videos and run the rebuild deployment once per burst of new videos."""
    import threading

    _require_api("watch")
    _offline()
    from flows.deploy import work_pool_for

    try:
        target = deployment or f"rebuild/{work_pool_for(state.params)}"
    except ValueError as e:
        raise _fail(e) from e
    stop = threading.Event()
    try:
        _watcher(target).run(stop)
    except KeyboardInterrupt:
        stop.set()


@app.command("status")
def status_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False, gate_dir: PathOpt = None
) -> None:
    """The champion, the deployed release and the latest rebuild's candidates."""
    from tasks.operations.status import status

    prm = _with_gate_dir(state.params, gate_dir)
    info = status(prm.tracking, prm.promote)
    if as_json:
        sys.stdout.write(json.dumps(info, indent=2, default=str) + "\n")
        return
    _print_candidates(info["candidates"], info["champion"])


@app.command()
def report(
    run_id: Annotated[str | None, typer.Argument(help="A rebuild's MLflow run id (default: latest rebuild).")] = None,
    out: Annotated[Path | None, typer.Option(help="Report folder (default: params.yaml paths.reports).")] = None,
) -> None:
    """Print one rebuild side by side and write its HTML and Markdown report (with the image grids)."""
    from tasks.operations.report import ReportError, load_rebuild, summary_rows, write_report

    prm = state.params
    try:
        view = load_rebuild(prm.tracking, run_id)
        folder = write_report(prm.tracking, view, out or prm.paths.reports)
    except ReportError as e:
        raise _fail(e) from e
    table = Table(title=f"Rebuild {view.run_name} ({view.run_id}), {view.started}")
    table.add_column("metric")
    for c in view.candidates:
        table.add_column(c.name, justify="right")
    verdicts = {"true": "PASS", "false": "FAIL"}
    table.add_row("gate verdict", *(verdicts.get(c.passed, "not decided") for c in view.candidates))
    differing = {label for _, label, _ in view.differing_rows()}
    for row in summary_rows(view):
        style = "bold" if row["metric"] in differing else None
        table.add_row(row["metric"], *(row[c.name] for c in view.candidates), style=style)
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    console.print(f"report: {folder / 'report.html'} and {folder / 'report.md'}")


@app.command()
def demo() -> None:
    """The whole workflow on embedded defaults: sample videos, fetch the model, version data, rebuild, promote."""
    _offline()
    from tasks.pipeline.extract import VIDEO_SUFFIXES
    from tasks.support.dvc import DvcError, dvc_track

    p = state.params.paths
    has_videos = p.videos.is_dir() and any(f.suffix.lower() in VIDEO_SUFFIXES for f in p.videos.iterdir())
    if has_videos and not (p.holdout / "images").is_dir():
        raise _fail(RuntimeError(f"{p.videos} has videos but {p.holdout} has no labelled holdout; add one"))
    if not has_videos:  # never mix synthetic footage into a folder of real videos
        sample_videos(None, None, None, None, None, None)
    fetch_model(None)
    try:
        dvc_track(state.root, [p.videos, p.holdout, p.model])
    except DvcError as e:
        log.warning("%s (continuing without DVC versioning)", e)
    _run_rebuild()
    uri = state.params.tracking.uri
    console.print(
        f"\nOpen the MLflow UI: [bold].venv/bin/mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000[/bold]"
        "\nthen browse http://127.0.0.1:5000"
        "\nTo rebuild whenever new videos land in data/videos (and run the nightly check): [bold]alpr-ops serve[/bold]",
        soft_wrap=True,
    )


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None or value == "" else format(float(value), spec)


def _print_candidates(rows: list[dict[str, Any]], champion: dict[str, Any] | None) -> None:
    """The summary table: one row per candidate, the numbers a reviewer compares."""
    out = Console(width=None if sys.stdout.isatty() else 150)
    table = Table(title="Candidates (latency: batch 1, inference only, this machine)")
    for col in ("candidate", "precision", "backend"):
        table.add_column(col)
    for col in ("mAP50", "mAP50-95", "drop vs FP32", "agreement", "p50 ms", "p95 ms", "size MB", "passed"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["name"],
            str(r.get("precision", "")),
            str(r.get("backend", "")),
            _fmt(r.get("map50"), ".3f"),
            _fmt(r.get("map50_95"), ".3f"),
            _fmt(r.get("map_drop"), "+.3f"),
            _fmt(r.get("agreement_map50_95"), ".3f"),
            _fmt(r.get("latency_p50_ms"), ".1f"),
            _fmt(r.get("latency_p95_ms"), ".1f"),
            _fmt(r.get("size_mb"), ".1f"),
            {True: "yes", False: "no"}.get(r.get("passed"), "-"),
        )
    out.print(table)
    if champion:
        out.print(f"champion: [bold]{champion['candidate']}[/bold] (registry version {champion['version']})")


if __name__ == "__main__":
    app()
