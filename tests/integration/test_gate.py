"""The reference gate runtime on a generated video: hot swap mid-video, a broken release kept out, the CLI."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import cv2
import pytest

from tasks.demo.synth import SynthConfig, write_videos
from tasks.runtime.gate import GateRuntime, run_gate
from tasks.runtime.releases import MANIFEST, VERIFIED_KEY, switch_current
from tasks.support.candidate import Candidate

pytestmark = pytest.mark.integration


def make_release(gate_dir: Path, version: str, cand: Candidate) -> Path:
    """A release folder as `deploy` writes it (artifact, candidate.json, manifest.json), without MLflow."""
    release = gate_dir / "releases" / f"v{version}"
    shutil.copytree(cand.folder, release)
    manifest = {"version": version, "sha256": cand.sha256, "candidate": cand.name, "artifact": cand.artifact}
    (release / MANIFEST).write_text(json.dumps({**manifest, VERIFIED_KEY: "test (run r, version v)"}))
    return release


def swap_artifact(release: Path, other: Candidate) -> None:
    """Replace a release's artifact with another valid model and rewrite its candidate.json to match (the manifest
    promotion wrote keeps the verified hash)."""
    meta = json.loads((release / "candidate.json").read_text())
    shutil.copyfile(other.path, release / meta["artifact"])
    meta["sha256"] = other.sha256
    (release / "candidate.json").write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A short generated gate video and its frame count (counted by decoding it)."""
    out = tmp_path_factory.mktemp("gate-video")
    path = write_videos(out, 1, 1.6, 7, SynthConfig(width=320, height=240, fps=10))[0]
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n >= 12
    return path, n


@pytest.fixture
def gate(tmp_path: Path, built: tuple) -> tuple[Path, dict[str, Candidate]]:
    _, candidates = built
    by_name = {c.name: c for c in candidates}
    gate_dir = tmp_path / "gate"
    switch_current(gate_dir, make_release(gate_dir, "1", by_name["fp32"]))
    return gate_dir, by_name


def test_current_switched_mid_video_is_swapped_in_without_dropping_a_frame(gate, video) -> None:
    gate_dir, cands = gate
    path, n = video
    new = make_release(gate_dir, "2", cands["ov-int8"])  # another runtime: OpenVINO

    def on_frame(index: int, runtime: GateRuntime) -> None:
        if index == 3:
            switch_current(gate_dir, new)
        if index == 4:
            runtime.wait_for_load(timeout=300)  # make the swap point deterministic: the load is done by frame 5

    report = run_gate(gate_dir, path, conf=0.25, iou=0.7, on_frame=on_frame)
    assert [f.index for f in report.frames] == list(range(n)), "a frame was dropped or processed twice"
    assert [f.version for f in report.frames] == ["1"] * 5 + ["2"] * (n - 5)
    assert report.swaps == [(5, "1", "2")] and report.failures == []
    assert report.fps > 0 and report.detections == sum(f.detections for f in report.frames)


def test_the_gate_reports_the_region_each_release_looks_at(gate, video) -> None:
    """A release built for a region of interest (its crop written into its candidate.json, as the build records
    it) is reported with its crop and frame size; the full-frame release it replaced as "full frame"."""
    gate_dir, cands = gate
    path, _ = video
    from tasks.edge.metadata import embed_metadata, read_embedded_metadata
    from tasks.support.hashing import sha256_file

    cropped = make_release(gate_dir, "2", cands["fp32"])
    region = {"crop": [32, 96, 288, 240], "frame_shape": [240, 320]}
    meta = json.loads((cropped / "candidate.json").read_text())
    artifact = cropped / meta["artifact"]
    embed_metadata(artifact, {**read_embedded_metadata(artifact), **region})  # the engine's own contract, as built
    sha = sha256_file(artifact)
    (cropped / "candidate.json").write_text(json.dumps({**meta, **region, "sha256": sha}))
    manifest = json.loads((cropped / MANIFEST).read_text())
    (cropped / MANIFEST).write_text(json.dumps({**manifest, "sha256": sha}))

    report = run_switching_to(gate_dir, path, cropped, at_frame=1)
    assert report.failures == [] and [s[1:] for s in report.swaps] == [("1", "2")]
    assert report.regions == {"1": "full frame", "2": "crop x 32-288, y 96-240 (256x144 px) of 320x240 frames"}


def run_switching_to(gate_dir: Path, video: Path, release: Path, at_frame: int):
    """Run the gate on `video`, switch `current` to `release` at frame `at_frame`, and wait at the next frame until
    the background load of it ended (loaded or refused)."""

    def on_frame(index: int, runtime: GateRuntime) -> None:
        if index == at_frame:
            switch_current(gate_dir, release)
        if index == at_frame + 1:
            runtime.wait_for_load(timeout=300)

    return run_gate(gate_dir, video, conf=0.25, iou=0.7, on_frame=on_frame)


def test_a_release_that_fails_to_load_is_not_swapped_in(gate, video, caplog: pytest.LogCaptureFixture) -> None:
    gate_dir, cands = gate
    path, n = video
    broken = make_release(gate_dir, "3", cands["fp32"])
    (broken / cands["fp32"].artifact).write_bytes(b"not an onnx model")

    with caplog.at_level(logging.WARNING, logger="tasks.runtime.gate"):
        report = run_switching_to(gate_dir, path, broken, at_frame=2)
    assert [f.index for f in report.frames] == list(range(n))
    assert {f.version for f in report.frames} == {"1"} and report.swaps == []
    assert [Path(p).name for p, _ in report.failures] == ["v3"], "the failed load was retried or not reported"
    assert "failed to load; keeping v1" in caplog.text


def test_gate_cli_runs_current_on_a_video(gate, video, tmp_path: Path, make_params, cli) -> None:
    gate_dir, _ = gate
    path, n = video
    make_params(tmp_path / "project")
    done = cli(tmp_path / "project", "gate", "run", "--source", str(path), "--gate-dir", str(gate_dir))
    assert f"{n} frames" in done.stdout and "releases used: v1" in done.stdout
    assert "release v1: full frame" in done.stdout  # what the release looks at (its candidate.json has no crop)
    missing = cli(
        tmp_path / "project", "gate", "run", "--source", str(path), "--gate-dir", str(tmp_path / "x"), check=False
    )
    assert missing.returncode == 3 and "no release deployed" in missing.stderr


def test_a_swapped_release_is_refused_at_start_and_at_hot_reload(gate, video, caplog) -> None:
    from tasks.support.errors import AlprError

    gate_dir, cands = gate
    path, _ = video
    swapped = make_release(gate_dir, "4", cands["fp32"])
    swap_artifact(swapped, cands["ort-int8"])  # a valid ONNX model, not the one promotion verified

    with caplog.at_level(logging.WARNING, logger="tasks.runtime.gate"):
        report = run_switching_to(gate_dir, path, swapped, at_frame=1)
    assert {f.version for f in report.frames} == {"1"} and report.swaps == []
    assert [Path(p).name for p, _ in report.failures] == ["v4"] and "keeping v1" in caplog.text
    assert "sha256" in report.failures[0][1], report.failures
    # a gate (re)started on it refuses to run it at all
    with pytest.raises(AlprError, match="sha256"):
        GateRuntime(gate_dir, 0.25, 0.7)


def test_a_current_leading_outside_releases_is_refused_at_start_and_at_hot_reload(gate, video, tmp_path, caplog):
    """Issue item 6: `current` as an absolute symlink to a complete, verifiable release outside `releases/` is not
    run: the gate refuses to start on it, and a running gate keeps its release when `current` is repointed there."""
    from tasks.runtime.releases import GateFolderError

    gate_dir, cands = gate
    path, n = video
    outside = make_release(tmp_path / "elsewhere", "5", cands["fp32"])  # another folder's release, verifiable

    def repoint(index: int, runtime: GateRuntime) -> None:
        if index == 1:
            (gate_dir / "current").unlink()
            (gate_dir / "current").symlink_to(outside)  # absolute, as a hand-made link would be

    with caplog.at_level(logging.WARNING, logger="tasks.runtime.gate"):
        report = run_gate(gate_dir, path, conf=0.25, iou=0.7, on_frame=repoint)
    assert [f.index for f in report.frames] == list(range(n)) and {f.version for f in report.frames} == {"1"}
    assert report.swaps == [] and len(report.failures) == 1, report.failures  # reported once, not every frame
    assert report.failures[0][0] == str(gate_dir / "current") and "not a release in" in report.failures[0][1]
    assert "keeping v1" in caplog.text
    with pytest.raises(GateFolderError, match="not a release in") as e:  # a gate (re)started on it does not run it
        GateRuntime(gate_dir, 0.25, 0.7)
    assert str(outside) in str(e.value)
