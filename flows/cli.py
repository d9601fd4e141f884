"""`alpr-ops`: one CLI over every step. Parses `params.yaml` once here and passes typed config to the tasks.

Paths default to `params.yaml` and every one can be overridden by a flag, which is how `dvc.yaml` stages call it.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from tasks.config import ConfigError, Params, load_params

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
    from tasks.offline import configure_offline

    configure_offline(state.params.paths.ultralytics_config)


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
    # One readable line per step: silence per-request and per-layer chatter from the libraries underneath.
    for noisy in ("httpx", "httpcore", "alembic", "mlflow.store.db.utils", "dvc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "no CUDA runtime": expected on CPU
    warnings.filterwarnings("ignore", category=FutureWarning)
    from tasks.offline import set_offline_env

    set_offline_env()  # before any command touches MLflow, Prefect or DVC, which read these at import
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
    from tasks.synth import SynthConfig, write_holdout, write_videos

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
    from tasks.fetch import ModelError
    from tasks.fetch import fetch_model as fetch

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
    from tasks.extract import ExtractError, extract_frames

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
    from tasks.build import BackendUnavailable, build_candidates
    from tasks.extract import ExtractError, check_dataset_yaml, read_frames_hash
    from tasks.fetch import ModelError, verify_model

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
    from tasks.build import load_candidates
    from tasks.latency import LatencyError
    from tasks.validate import ValidationError, run_validation, write_metrics, write_plot_data

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
def rebuild(videos: PathOpt = None, holdout: PathOpt = None, gate_dir: PathOpt = None) -> None:
    """Run the whole workflow as a Prefect flow: extract, build, validate, track, promote."""
    _offline()
    _run_rebuild(_with_gate_dir(_with_paths(state.params, videos=videos, holdout=holdout), gate_dir))


def _run_rebuild(params: Params) -> dict[str, Any]:
    from flows.rebuild import rebuild as rebuild_flow
    from tasks.status import status

    # dvc.lock records the outputs only when the paths are the ones dvc.yaml describes (no overrides)
    in_dvc = params == state.params and (state.root / ".dvc").is_dir() and (state.root / "dvc.yaml").is_file()
    try:
        out = rebuild_flow(params, state.root, state.root if in_dvc else None)
    except Exception as e:
        raise _fail(e) from e
    promotion = out["promotion"]
    info = status(params.tracking, params.promote)
    _print_candidates(info["candidates"], info["champion"])
    if promotion is not None and promotion.decision.winner is None:
        console.print("[yellow]No candidate passed the gates; nothing was promoted:[/yellow]")
        console.print(promotion.decision.explain())
    return out


@app.command()
def promote(holdout: PathOpt = None, gate_dir: PathOpt = None) -> None:
    """Promote the winner of the latest rebuild recorded in MLflow (the `promote` Prefect flow)."""
    _offline()
    from flows.promote import promote as promote_flow
    from tasks.promote import require_latest_rebuild

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
    from tasks.promote import RollbackError
    from tasks.promote import rollback as do_rollback

    prm = _with_gate_dir(_with_paths(state.params, holdout=holdout), gate_dir)
    try:
        result = do_rollback(prm.promote, prm.tracking, prm.paths.holdout, prm.validate_)
    except RollbackError as e:
        raise _fail(e) from e
    console.print(f"rolled back: version {result.from_version} -> {result.to_version} ({result.release})")


gate_app = typer.Typer(no_args_is_help=True, help="The reference gate runtime.")
app.add_typer(gate_app, name="gate")


@gate_app.command("run")
def gate_run(
    source: Annotated[Path, typer.Option(help="A video file or a folder of images.")],
    gate_dir: PathOpt = None,
) -> None:
    """Run `current` frame by frame; hot-swap to a new release when `current` changes (no frame dropped)."""
    _offline()
    from tasks.gate import GateError, run_gate

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


@app.command("status")
def status_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False, gate_dir: PathOpt = None
) -> None:
    """The champion, the deployed release and the latest rebuild's candidates."""
    from tasks.status import status

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
    from tasks.report import ReportError, load_rebuild, summary_rows, write_report

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
    from tasks.extract import VIDEO_SUFFIXES
    from tasks.version import DvcError, dvc_track

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
    _run_rebuild(state.params)
    uri = state.params.tracking.uri
    console.print(
        f"\nOpen the MLflow UI: [bold].venv/bin/mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000[/bold]"
        "\nthen browse http://127.0.0.1:5000",
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
