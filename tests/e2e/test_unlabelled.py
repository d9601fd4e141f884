"""Until the labelled holdout exists (validate.labels: optional): a rebuild judged on agreement with FP32 alone,
saying so everywhere; promotion only with promote.allow_unlabelled, smoke-tested on agreement."""

from __future__ import annotations

import json
import shutil

import pytest

from tasks.demo.synth import SynthConfig, write_videos
from tasks.pipeline.validate import NO_HOLDOUT
from tasks.runtime.releases import MANIFEST, current_release
from tasks.support.config import Params
from tasks.support.tracking import client

pytestmark = pytest.mark.e2e

CANDIDATES = [
    {"name": "fp32", "precision": "fp32", "backend": "onnxruntime"},
    {"name": "ov-int8", "precision": "int8", "backend": "openvino"},
]
LENIENT = {"min_agreement": 0.3, "max_map_drop": 1.0, "max_p95_ms": 10_000.0, "min_speedup": 0.01}


@pytest.mark.timeout(600)
def test_without_a_labelled_holdout(project: Params, make_params, cli) -> None:
    root = project.paths.videos.parents[1]
    shutil.rmtree(project.paths.holdout)
    shutil.rmtree(project.paths.videos)  # longer clips: the agreement frames must show plates (they are all there is)
    write_videos(project.paths.videos, 4, 6, 11, SynthConfig(width=640, height=360, fps=10))
    # the agreement frames are all there is: enough of them, at a size where FP32 finds the plates
    sizes = {
        "build": {"candidates": CANDIDATES, "speed_reference": None},
        "validate": {"labels": "optional"},
        "extract": {"interval_s": 0.25, "max_frames_per_video": 12},
    }
    params = make_params(root, promote=LENIENT, **sizes)

    # judged on agreement alone: no mAP, every record says so, and promotion is refused without allow_unlabelled
    done = cli(root, "rebuild", check=False)
    assert done.returncode == 1, done.stderr[-3000:]  # no candidate passed: a verdict, as `promote` says it
    assert NO_HOLDOUT in done.stdout and "No candidate passed the gates" in done.stdout
    assert "labelled_holdout" in done.stderr
    info = json.loads(cli(root, "status", "--json").stdout)
    assert info["champion"] is None and current_release(params.promote.gate_dir) is None
    for cand in info["candidates"]:
        assert cand["holdout"] == NO_HOLDOUT and cand["map50_95"] is None and cand["passed"] is False
    mc = client(params.tracking)
    parent = mc.get_run(info["rebuild"]["mlflow_run_id"])
    assert parent.data.tags["labelled_holdout"] == NO_HOLDOUT
    metrics = json.loads(params.paths.metrics.read_text())["candidates"]
    assert all("map50_95" not in row and row["agreement_map50_95"] > 0 for row in metrics.values())

    # the same rebuild, promoted once the operator allows it: smoke-tested on agreement with its FP32 reference
    params = make_params(root, promote={**LENIENT, "allow_unlabelled": True}, **sizes)
    done = cli(root, "promote")
    release = current_release(params.promote.gate_dir)
    assert release is not None, done.stderr
    smoke = json.loads((release / MANIFEST).read_text())["smoke_test"]
    winner = json.loads((release / MANIFEST).read_text())["candidate"]
    assert smoke["agreement_map50_95"] == pytest.approx(metrics[winner]["agreement_map50_95"], abs=0.01)
    assert "map50_95" not in smoke

    # required (the default): no labelled holdout stops validation with what to do
    make_params(root, promote=LENIENT, build=sizes["build"], extract=sizes["extract"])
    failed = cli(root, "validate", check=False)
    assert failed.returncode == 3 and "no holdout images" in failed.stderr and "labelled holdout" in failed.stderr
