"""Issue 15, defect 5: a rebuild's records name the videos as extraction read them. A video copied in after
extraction is in no record of that rebuild (lineage tags, MLflow datasets, dvc.lock, `data/videos.dvc`, the DVC
cache), and the next rebuild picks it up."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import mlflow.data
import pytest
from conftest import copy_project_code
from conftest import run_dvc as dvc

from tasks.demo.synth import SynthConfig
from tasks.pipeline.extract import extract_frames
from tasks.pipeline.lineage import lineage, snapshot_table
from tasks.pipeline.track import log_rebuild
from tasks.support.config import Params
from tasks.support.dvc import dvc_commit
from tasks.support.tracking import client
from testkit.clips import encode_clip, scene_frames

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SMALL = SynthConfig(width=160, height=120, fps=10)


def test_a_video_copied_in_after_extraction_is_in_no_record_of_that_rebuild(
    tmp_path: Path, make_params, store: Params, built: tuple
) -> None:
    params = make_params(tmp_path, extract={"interval_s": 0.5, "max_frames_per_video": 4, "holdout_fraction": 0.0})
    p = params.paths
    for i in range(2):
        encode_clip(p.videos / f"v{i}.mp4", scene_frames(i, 20, SMALL), SMALL.fps)
    late = tmp_path / "late.mp4"
    encode_clip(late, scene_frames(2, 20, SMALL), SMALL.fps)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    dvc(tmp_path, "init", "-q")
    copy_project_code(tmp_path)
    shutil.copyfile(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    dvc(tmp_path, "add", "-q", "data/videos")
    videos_dvc = (tmp_path / "data" / "videos.dvc").read_text()
    cache_files = {f.name for f in (tmp_path / ".dvc" / "cache").rglob("*") if f.is_file()}

    frames = extract_frames(p.videos, p.calibration, p.calibration_yaml, params.extract, params.model.names,
                            p.holdout_frames, p.frame_cache)  # fmt: skip
    shutil.copyfile(late, p.videos / "v9.mp4")  # lands while the rebuild builds and validates

    assert [i.name for i in frames.inputs] == ["v0.mp4", "v1.mp4"]
    tags = lineage(tmp_path, frames.frames_hash, params.model.sha256, p.videos.with_suffix(".dvc"), p.videos,
                   frames.inputs)  # fmt: skip
    assert tags["videos_count"] == "2" and "v9.mp4" not in tags["videos"]
    # MLflow: the parent run's lineage.json (the nightly check's list of the champion's videos) and its dataset
    fp32 = next(c for c in built[1] if c.name == store.build.reference)
    logged = store.model_copy(update={"paths": store.paths.model_copy(update={"videos": p.videos})})
    record = log_rebuild(logged, [fp32], {fp32.name: {"map50_95": 0.5}}, tags, None, frames.inputs)
    mc = client(logged.tracking)
    doc = json.loads(Path(mc.download_artifacts(record.parent_run_id, "lineage.json", str(tmp_path))).read_text())
    assert [v["video"] for v in doc["videos"]] == ["v0.mp4", "v1.mp4"]
    (dataset,) = [
        d.dataset for d in mc.get_run(record.parent_run_id).inputs.dataset_inputs if d.dataset.name == "gate-videos"
    ]
    assert dataset.digest == mlflow.data.from_pandas(snapshot_table(frames.inputs), source=str(p.videos)).digest
    assert dvc_commit(tmp_path, p.videos, frames.inputs) is None  # the videos are not the snapshot's any more
    assert not (tmp_path / "dvc.lock").exists()
    assert (tmp_path / "data" / "videos.dvc").read_text() == videos_dvc
    assert {f.name for f in (tmp_path / ".dvc" / "cache").rglob("*") if f.is_file()} == cache_files

    again = extract_frames(
        p.videos, p.calibration, p.calibration_yaml, params.extract, params.model.names, p.holdout_frames, p.frame_cache
    )  # fmt: skip  (the next rebuild)
    assert [i.name for i in again.inputs] == ["v0.mp4", "v1.mp4", "v9.mp4"]
    assert again.report["decoded_videos"] == 1 and again.report["videos"]["v9.mp4"]["kept"] > 0
