"""Issue item 2: `paths.holdout` set to a folder outside the project ended `alpr-ops demo` (and `label pull`) in an
uncaught DVC StageExternalOutputsError traceback. A folder outside the project cannot be a DVC output: refused
before DVC starts, as a `DvcError` (which those commands report) naming the folder and its setting."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import run_dvc as dvc

from tasks.support.dvc import DvcError, dvc_track

pytestmark = pytest.mark.integration


def test_a_folder_outside_the_project_is_refused_by_name_before_dvc_starts(tmp_path: Path) -> None:
    root = tmp_path / "project"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    dvc(root, "init", "-q")
    outside = tmp_path / "elsewhere" / "holdout"
    (outside / "images").mkdir(parents=True)
    (outside / "images" / "a.jpg").write_bytes(b"jpeg")
    (outside / "important.txt").write_text("keep me")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if ".dvc" not in p.parts)

    with pytest.raises(DvcError, match=rf"{outside}: outside the project {root}"):
        dvc_track(root, [outside])
    with pytest.raises(DvcError, match=rf"{outside} \(paths\.holdout\): outside the project") as e:
        dvc_track(root, [root / "data" / "videos", outside], ["paths.videos", "paths.holdout"])
    assert e.value.facts["paths"] == [str(outside)]
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if ".dvc" not in p.parts)
    assert after == before, "something was tracked or written"

    inside = root / "data" / "holdout"  # inside the project: tracked as before
    (inside / "images").mkdir(parents=True)
    (inside / "images" / "a.jpg").write_bytes(b"jpeg")
    assert dvc_track(root, [inside], ["paths.holdout"]) == [root / "data" / "holdout.dvc"]
    assert (root / "data" / "holdout.dvc").is_file()
