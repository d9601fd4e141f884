"""Your own labelled holdout: propose frames, review them in Label Studio (push, pull) or another tool (import)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.context import go_offline, guarded, locked, state
from cli.printers import ERR, out
from tasks.support.project import Project


def _track(project: Project) -> None:
    """The holdout is data: DVC versions it, when the project is a DVC repository."""
    from tasks.support.dvc import DvcError, dvc_track

    try:
        dvc_track(project.root, [project.params.paths.holdout], ["paths.holdout"])
    except DvcError as e:
        ERR.print(f"[yellow]not versioned:[/yellow] {e}")


def propose() -> None:
    """Frames of the videos reserved for labelling, pre-labelled by the base detector, ready for review."""
    project = state.project()
    go_offline(project)
    from tasks.operations.holdout import LABEL_STUDIO_DIR, propose_holdout

    with guarded(), locked(project, "label propose"):
        done = propose_holdout(project.params)
    out().print(
        f"proposal: {done.frames} frames of {len(done.videos)} videos ({done.with_plate} with a pre-labelled plate, "
        f"{done.without_plate} without) in {done.out_dir}, {done.seconds:.0f} s.\n"
        f"Review them: `alpr-ops label push` (Label Studio; then `alpr-ops label pull`), or any tool that reads "
        f"YOLO (images/ + labels/; then `alpr-ops label import DIR`). {done.out_dir / LABEL_STUDIO_DIR} holds a "
        "Label Studio import file, its labelling config and the instructions.",
        soft_wrap=True,
    )


def push() -> None:
    """Create or update the Label Studio project (LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY) with the proposal."""
    from tasks.operations import label_studio as ls

    params = state.project().params
    with guarded(), ls.LabelStudio.from_env() as client:
        done = ls.push(
            client, params.paths.label_proposal, params.label.project, ls.label_config(params.model.names),
            ls.instructions(),
        )  # fmt: skip
    out().print(
        f"{'created' if done.created else 'updated'} {params.label.project!r}: {len(done.uploaded)} frames uploaded "
        f"with {done.predictions} pre-labels, {len(done.already_there)} already there.\nReview them at {done.url}",
        soft_wrap=True,
    )


def pull() -> None:
    """Write the reviewed frames of the Label Studio project to the labelled holdout (checked, DVC-tracked)."""
    project = state.project()
    from tasks.operations import label_studio as ls
    from tasks.operations.holdout import pull_holdout

    with guarded(), locked(project, "label pull"), ls.LabelStudio.from_env() as client:
        done = pull_holdout(client, project.params)
        _track(project)
    r = done.review
    out().print(
        f"holdout {project.params.paths.holdout}: {done.reviewed} reviewed frames, {done.holdout.boxes} plates. "
        f"Against the pre-labels: {r['kept']} kept, {r['moved']} moved, {r['added']} added, {r['removed']} removed.\n"
        f"{len(done.unreviewed)} frames are not reviewed yet and {len(done.skipped)} were skipped: not imported"
        + (f" (review them at {done.project_url}, then pull again)." if done.unreviewed else "."),
        soft_wrap=True,
    )


def import_(
    source: Annotated[Path, typer.Argument(help="A YOLO export: images/ and labels/ (an empty file: no plate).")],
    video_names: Annotated[
        list[str] | None,
        typer.Option("--video", help="A video of paths.videos the frames come from, by file name (repeatable)."),
    ] = None,
) -> None:
    """Take a YOLO export from another annotation tool as the labelled holdout (checked, DVC-tracked)."""
    project = state.project()
    from tasks.operations.holdout import import_holdout

    with guarded(), locked(project, "label import"):
        done = import_holdout(source, project.params, tuple(video_names or ()))
        _track(project)
    out().print(f"holdout {project.params.paths.holdout}: {len(done.images)} frames, {done.boxes} plates.")
