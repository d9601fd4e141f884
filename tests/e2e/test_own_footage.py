"""Day one on your own footage, as the README's "Your own footage" section says, in a fresh clone: init, propose,
push to a real Label Studio, review through its REST API, pull, rebuild, a champion promoted; the labelled
holdout's videos are in no calibration or agreement frame."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from conftest import copy_project_code, small_params
from conftest import run_dvc as dvc
from labelstudio import Server

from tasks.demo.synth import SynthConfig, write_videos
from tasks.operations.label_studio import LabelStudio
from tasks.pipeline.labels import check_labels, read_holdout_info

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
FRAMES = 8  # label.frames: frames proposed for review


def fresh_clone(root: Path) -> None:
    """What `git clone` of the project gives: code, params.yaml, dvc.yaml, git and DVC, and no data."""
    root.mkdir(parents=True)
    copy_project_code(root)
    shutil.copyfile(ROOT / "dvc.yaml", root / "dvc.yaml")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    dvc(root, "init", "-q")


def review(url: str, api_key: str, title: str) -> dict[str, str]:
    """A reviewer in Label Studio, through the REST calls its UI makes: accept most pre-labels, delete one false box,
    move one, add one missed plate, and leave two tasks unreviewed. Returns file name -> what was done."""
    done: dict[str, str] = {}
    with LabelStudio(url, api_key) as ls:
        project = ls.find_project(title)
        assert project is not None
        tasks = sorted(ls.tasks(project["id"]), key=lambda t: t["id"])
        assert len(tasks) == FRAMES
        unreviewed = {tasks[-1]["id"], tasks[-2]["id"]}
        reviewed = [t for t in tasks if t["id"] not in unreviewed]
        with_boxes = [t for t in reviewed if ls.get("/api/predictions", task=t["id"])[0]["result"]]
        assert len(with_boxes) >= 2, "the detector pre-labelled too few frames to play the reviewer"
        deleted, moved = with_boxes[0]["id"], with_boxes[1]["id"]
        added = next(t["id"] for t in reviewed if t["id"] not in (deleted, moved))
        with_boxes_region = ls.get("/api/predictions", task=deleted)[0]["result"][0]  # a region to copy the form of
        for task in tasks:
            if task["id"] in unreviewed:
                continue
            (pred,) = ls.get("/api/predictions", task=task["id"])
            result = copy.deepcopy(pred["result"])
            action = "accepted"
            if task["id"] == deleted:
                result, action = result[1:], "deleted"  # the first box was a false one
            elif task["id"] == moved:
                result[0]["value"]["x"] += 2.0
                action = "moved"
            elif task["id"] == added:
                extra = copy.deepcopy(with_boxes_region)
                extra["id"] = "missed01"
                extra["value"].update(x=5.0, y=5.0, width=8.0, height=4.0)
                result.append(extra)
                action = "added"
            ls.post(f"/api/tasks/{task['id']}/annotations/", {"result": result, "parent_prediction": pred["id"]})
            done[task["data"]["image"].rsplit("/", 1)[-1].split("-", 1)[-1]] = action
    return done


@pytest.mark.timeout(900)
def test_day_one_from_your_own_videos_to_a_champion(
    label_studio: Server, tmp_path: Path, cli, plate_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    footage = tmp_path / "camera"  # the user's recordings, somewhere outside the project
    write_videos(footage, 5, 4, 11, SynthConfig(width=640, height=360, fps=10))
    root = tmp_path / "clone"
    fresh_clone(root)
    params = small_params(
        root,
        label={"frames": FRAMES, "project": "gate-07 holdout", "fraction": 0.4},  # 2 of 5 videos reserved
        extract={"interval_s": 0.25, "dedup_threshold": 0.01},  # enough distinct frames in 4 s clips
        build={"speed_reference": None, "candidates": [{"name": "fp32", "precision": "fp32", "backend": "onnxruntime"},
                              {"name": "ov-int8", "precision": "int8", "backend": "openvino"}]},
        promote={"min_agreement": 0.3, "max_map_drop": 1.0, "max_quant_drop": 1.0, "max_p95_ms": 10_000.0,
                 "min_speedup": 0.01},
    )  # fmt: skip
    p = params.paths
    p.model.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(plate_model, p.model)  # fetched once per session (tests/integration/test_fetch_remote.py)

    # 1. init: the videos copied and under DVC, the detector verified, no synthetic data written; a video that is a
    # dead symlink (an archive not mounted) is named, and nothing is written
    (footage / "gate_99.mp4").symlink_to(tmp_path / "archive" / "gate_99.mp4")
    refused = cli(root, "init", "--from", str(footage), check=False)
    assert refused.returncode == 3 and "gate_99.mp4: a broken symlink" in refused.stderr, refused.stderr[-3000:]
    assert not p.videos.exists()
    (footage / "gate_99.mp4").unlink()
    cli(root, "init", "--from", str(footage))
    assert sorted(f.name for f in p.videos.iterdir()) == sorted(f.name for f in footage.iterdir())
    assert (root / "data" / "videos.dvc").is_file() and (root / "models" / "best.pt.dvc").is_file()
    assert not p.holdout.exists()
    again = cli(root, "init", "--from", str(footage), check=False)
    assert again.returncode == 3 and "already has data" in again.stderr and "init --force" in again.stderr

    # 2. propose: frames of the reserved video(s), pre-labelled, with a Label Studio import file
    cli(root, "label", "propose")
    proposal = json.loads((p.label_proposal / "proposal.json").read_text())
    reserved = {v["name"] for v in proposal["videos"]}
    assert len(reserved) == 2
    assert len(list((p.label_proposal / "images").iterdir())) == FRAMES
    tasks = json.loads((p.label_proposal / "label_studio" / "tasks.json").read_text())
    assert len(tasks) == FRAMES and all("predictions" in t for t in tasks)

    # 3. push, review in Label Studio, pull
    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.api_key)
    pushed = cli(root, "label", "push")
    assert f"{FRAMES} frames uploaded" in pushed.stdout
    actions = review(label_studio.url, label_studio.api_key, "gate-07 holdout")
    pulled = cli(root, "label", "pull")
    assert "2 frames are not reviewed yet" in pulled.stdout

    holdout = check_labels(p.holdout, params.model.names)
    assert sorted(i.image.name for i in holdout.images) == sorted(actions)
    info = read_holdout_info(p.holdout)
    assert info["source"] == "label-studio" and info["reviewed"] == FRAMES - 2 and len(info["unreviewed"]) == 2
    assert {v["name"] for v in info["videos"]} == reserved
    review_stats = info["review"]
    assert review_stats["removed"] >= 1 and review_stats["added"] >= 1 and review_stats["moved"] >= 1
    assert (root / "data" / "holdout.dvc").is_file()
    # a --video name that is no video of paths.videos (a typo) is refused, and the holdout is kept byte for byte
    before = {f: f.read_bytes() for f in sorted(p.holdout.rglob("*")) if f.is_file()}
    typo = sorted(reserved)[0].replace("0", "O")
    assert typo not in reserved
    refused = cli(root, "label", "import", str(p.label_proposal), "--video", typo, check=False)
    assert refused.returncode == 2 and f"{typo}: no such video in paths.videos" in refused.stderr, refused.stderr
    assert {f: f.read_bytes() for f in sorted(p.holdout.rglob("*")) if f.is_file()} == before

    # 4. rebuild: a champion promoted; the labelled holdout's videos are in no calibration or agreement frame
    cli(root, "rebuild")
    status = json.loads(cli(root, "status", "--json").stdout)
    assert status["champion"] is not None and status["deployed"]["version"] == status["champion"]["version"]
    for folder in (p.calibration, p.holdout_frames):
        used = set(pd.read_csv(folder / "manifest.csv")["video"])
        assert used and not used & reserved, (folder, used, reserved)
    report = json.loads((p.calibration / "report.json").read_text())
    assert sorted(report["reserved_for_labels"]) == sorted(reserved)
