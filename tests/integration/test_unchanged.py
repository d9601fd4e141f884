"""The unchanged-rebuild check against a real sqlite MLflow store and real videos: which changes make a rebuild.

The whole flow (a second unchanged rebuild, then a changed one) is in tests/e2e/test_rebuild.py; here each input
that must make a rebuild is changed one at a time, at the cost of hashing a few files.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tasks.pipeline.unchanged import (
    FINGERPRINT_TAG,
    MATCHED_TAG,
    UNCHANGED_KIND,
    check_inputs,
    log_unchanged,
    record_fingerprint,
)
from tasks.support.config import Params
from tasks.support.tracking import KIND_TAG, client, experiment_id

pytestmark = pytest.mark.integration


def finished_rebuild(params: Params, fingerprint: str | None) -> str:
    """A parent run as a rebuild leaves it: kind `rebuild`, FINISHED, with its fingerprint once it succeeded."""
    mc = client(params.tracking)
    run = mc.create_run(experiment_id(mc, params.tracking), tags={KIND_TAG: "rebuild"})
    mc.set_terminated(run.info.run_id)
    if fingerprint is not None:
        mc.set_tag(run.info.run_id, FINGERPRINT_TAG, fingerprint)
    return run.info.run_id


def test_same_inputs_match_the_last_finished_rebuild_and_any_change_does_not(project: Params, tmp_path: Path) -> None:
    params = project.model_copy(
        update={"tracking": project.tracking.model_copy(update={"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"})}
    )
    first = check_inputs(params)
    assert first.matched_run_id is None  # no rebuild yet
    parent = finished_rebuild(params, None)
    record_fingerprint(params.tracking, parent, first)

    same = check_inputs(params)
    assert same.matched_run_id == parent and same.fingerprint == first.fingerprint
    small = client(params.tracking).get_run(log_unchanged(params.tracking, same))
    assert small.data.tags[KIND_TAG] == UNCHANGED_KIND and small.data.tags[MATCHED_TAG] == parent
    assert check_inputs(params).matched_run_id == parent  # the small run is not a rebuild to compare with
    assert check_inputs(params, force=True).matched_run_id is None

    videos = sorted(params.paths.videos.iterdir())
    new = params.paths.videos / f"new{videos[0].suffix}"
    shutil.copyfile(videos[0], new)  # a new video (same bytes under another name)
    assert check_inputs(params).matched_run_id is None
    new.unlink()
    assert check_inputs(params).matched_run_id == parent

    label = next((params.paths.holdout / "labels").glob("*.txt"))
    text = label.read_text()
    label.write_text(text + "0 0.5 0.5 0.1 0.1\n")  # a reviewed label
    assert check_inputs(params).matched_run_id is None
    label.write_text(text)

    runs = params.validate_.model_copy(update={"runs": params.validate_.runs + 1})
    assert check_inputs(params.model_copy(update={"validate_": runs})).matched_run_id is None  # a parameter
    # the region of interest's settings (what it is learned from, the videos and the base model, are inputs above)
    for roi in ({"roi": "full"}, {"roi": (0.1, 0.2, 0.9, 1.0)}, {"roi_margin": 0.05}, {"roi_min_plates": 5}):
        build = params.build.model_copy(update=roi)
        assert check_inputs(params.model_copy(update={"build": build})).matched_run_id is None, roi

    assert check_inputs(params).matched_run_id == parent
    finished_rebuild(params, None)  # a newer rebuild that finished logging but failed after (no fingerprint)
    assert check_inputs(params).matched_run_id is None
