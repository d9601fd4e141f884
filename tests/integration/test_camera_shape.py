"""Engines shaped to the camera (issue 16, part 3): the session's 640x360 (16:9) clips build their INT8 candidates
at 192x320 (imgsz 320), the FP32 reference stays square, and every consumer (validation, the gate runtime) runs
them at that shape. Mixed footage stops the build."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from tasks.edge.agreement import box_iou
from tasks.edge.metadata import read_embedded_metadata
from tasks.pipeline.build import build_candidates
from tasks.pipeline.extract import extract_frames
from tasks.runtime.gate import GateError, GateRuntime, load_release
from tasks.runtime.releases import MANIFEST, VERIFIED_KEY, switch_current
from tasks.support.candidate import CANDIDATE_JSON, Candidate, read_candidate
from tasks.support.config import BuildConfig, CandidateConfig, ExtractConfig, ValidateConfig
from tasks.support.shape import MixedFootage

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

CAMERA = (192, 320)  # 640x360 frames at imgsz 320: 180 rows, rounded up to the stride
CONF, IOU = 0.25, 0.7


def test_mixed_footage_is_refused_before_any_export(tmp_path: Path, plate_model: Path) -> None:
    from tasks.demo.synth import SynthConfig
    from testkit.clips import encode_clip, scene_frames

    videos = tmp_path / "videos"
    encode_clip(videos / "lane16x9.mp4", scene_frames(1, 10, SynthConfig(width=640, height=360, fps=10)), 10)
    encode_clip(videos / "lane4x3.mp4", scene_frames(2, 10, SynthConfig(width=480, height=360, fps=10)), 10)
    cfg = ExtractConfig(interval_s=0.5, max_frames_per_video=2, dedup_threshold=0, brightness_bins=1,
                        holdout_fraction=0)  # fmt: skip
    frames = extract_frames(videos, tmp_path / "calibration", tmp_path / "calibration.yaml", cfg, ("plate",))
    build = BuildConfig(
        imgsz=320,
        speed_reference=None,
        candidates=(
            CandidateConfig(name="fp32", precision="fp32", backend="onnxruntime"),
            CandidateConfig(name="ov-int8", precision="int8", backend="openvino"),
        ),
    )
    with pytest.raises(MixedFootage) as err:
        build_candidates(plate_model, frames.dataset_yaml, tmp_path / "c", build, "m" * 64, frames.frames_hash)
    message = str(err.value)
    assert "640x360 (width x height): lane16x9.mp4" in message and "480x360 (width x height): lane4x3.mp4" in message
    assert "one project per frame size" in message
    assert not (tmp_path / "c").exists(), "the build exported something before refusing the footage"


def test_int8_candidates_are_built_validated_and_measured_at_the_camera_shape(built: tuple, validated: dict) -> None:
    _, candidates = built
    by_name = {c.name: c for c in candidates}
    assert by_name["fp32"].input_shape == (320, 320)  # the accuracy reference stays square
    shaped = [c for c in candidates if c.precision == "int8"]
    assert {c.method for c in shaped} >= {"ultralytics", "nncf"}  # the peers and ours
    for cand in shaped:
        assert cand.input_shape == CAMERA, cand.name
        assert json.loads((cand.folder / CANDIDATE_JSON).read_text())["input_shape"] == list(CAMERA)
        assert read_embedded_metadata(cand.path)["input_shape"] == list(CAMERA)
        # validated at that shape (validation checks what Ultralytics ran it at) and probed at it
        assert validated[cand.name]["input_shape"] == "192x320"
        assert validated[cand.name]["memory_input_shape"] == "1x3x192x320"
    assert validated["fp32"]["input_shape"] == "320x320"


def test_fp32_at_the_int8_geometry_measures_quantization_apart_from_the_geometry(built: tuple, validated: dict) -> None:
    """Issue 26, decision 1: the build derives FP32 at the INT8 candidates' geometry (the reference's method and
    backend), and validation compares each INT8 candidate with it (quant_map_drop, agreement: the gates'), with the
    square FP32 (map_drop: what the user sees), and reports the geometry's own cost on its row."""
    params, candidates = built
    by_name = {c.name: c for c in candidates}
    geo = by_name["fp32@192x320"]
    assert (geo.precision, geo.backend, geo.method, geo.input_shape) == ("fp32", "onnxruntime", "ultralytics", CAMERA)
    assert [c.name for c in candidates].count("fp32@192x320") == 1, "one per distinct geometry"
    assert candidates[-1].name == "fp32@192x320", "built after the INT8 candidates"
    ref, row = validated["fp32"], validated["fp32@192x320"]
    assert row["role"] == "geometry reference" and "latency_p50_ms" not in row and "speedup" not in row
    assert row["geometry_map_drop"] == row["map_drop"] == round(ref["map50_95"] - row["map50_95"], 5)
    assert row["geometry_agreement_map50_95"] == row["agreement_square_map50_95"] == row["agreement_map50_95"] < 1
    plates = row["holdout_plates"]
    assert plates == sum(
        1 for f in (params.paths.holdout / "labels").glob("*.txt") for _ in f.read_text().split("\n") if _.strip()
    )
    for name in ("ov-int8", "ort-int8", "ov-int8-mixed"):
        cand = validated[name]
        assert cand["geometry_reference"] == "fp32@192x320", name
        assert cand["quant_map_drop"] == round(row["map50_95"] - cand["map50_95"], 5), name
        assert cand["map_drop"] == round(ref["map50_95"] - cand["map50_95"], 5), name
        # the three add up: what the user sees = the geometry's cost + quantization's (to rounding)
        assert cand["map_drop"] == pytest.approx(row["geometry_map_drop"] + cand["quant_map_drop"], abs=2e-5)
        assert cand["agreement_map50_95"] != cand["agreement_square_map50_95"], name  # two references, two numbers
        for key in ("map_drop", "quant_map_drop"):
            low, high = cand[f"{key}_ci"]
            assert low <= cand[key] <= high, (name, key)
    for name in ("fp32", "fp32-ov"):  # square: compared with the square reference, which is its own geometry's
        assert validated[name]["geometry_reference"] == "fp32"
        assert "quant_map_drop" not in validated[name]  # nothing quantized: its drop is map_drop alone
        assert validated[name]["agreement_map50_95"] == validated[name]["agreement_square_map50_95"]
    assert ref["map_drop_ci"] == [0.0, 0.0]


def test_validation_refuses_an_int8_candidate_without_fp32_at_its_geometry(built: tuple) -> None:
    from tasks.pipeline.validate import ValidationError, geometry_references

    _, candidates = built
    without = [c for c in candidates if c.name != "fp32@192x320"]
    with pytest.raises(ValidationError, match=r"no FP32 model at the geometry of ov-int8 \(192x320: fp32@192x320\)"):
        geometry_references(without, "fp32")


def test_validation_refuses_an_artifact_that_is_not_the_recorded_shape(built: tuple, tmp_path: Path) -> None:
    from tasks.pipeline.validate import ValidationError, detect, holdout_images

    params, candidates = built
    cand = next(c for c in candidates if c.name == "ov-int8")
    wrong = dataclasses.replace(cand, input_shape=(320, 320))
    images = holdout_images(params.paths.holdout, ["License_Plate"])[:1]
    assert len(detect(cand, images, ValidateConfig(imgsz=320))) == 1
    with pytest.raises(ValidationError, match=r"\[\(192, 320\)\].*input_shape \[320, 320\]"):
        detect(wrong, images, ValidateConfig(imgsz=320))


def _release(gate_dir: Path, version: str, cand: Candidate) -> Path:
    """A release as `deploy` writes it (artifact, candidate.json, manifest.json), without MLflow."""
    release = gate_dir / "releases" / f"v{version}"
    shutil.copytree(cand.folder, release)
    manifest = {"version": version, "sha256": cand.sha256, "candidate": cand.name, "artifact": cand.artifact}
    (release / MANIFEST).write_text(json.dumps({**manifest, VERIFIED_KEY: "test (run r, version v)"}))
    return release


def test_the_gate_runs_a_camera_shaped_release_like_ultralytics(built: tuple, sample_data: Path, tmp_path) -> None:
    from ultralytics import YOLO

    _, candidates = built
    cand = next(c for c in candidates if c.name == "ov-int8")
    gate_dir = tmp_path / "gate"
    switch_current(gate_dir, _release(gate_dir, "1", cand))
    runtime = GateRuntime(gate_dir, CONF, IOU)
    compared = 0
    try:
        assert runtime.active.model.input_hw == CAMERA
        yolo = YOLO(str(cand.path), task="detect")
        for image in sorted((sample_data / "holdout" / "images").iterdir()):
            frame = cv2.imread(str(image))
            assert frame.shape[:2] == (360, 640)  # a real 16:9 frame
            ours = runtime.active.model(frame, CONF, IOU)
            # Ultralytics takes the fixed-shape export's input from its metadata: no imgsz given
            theirs = yolo.predict(frame, conf=CONF, iou=IOU, device="cpu", verbose=False)[0].boxes
            assert len(ours.conf) == len(theirs.conf), image.name
            if not ours.conf:
                continue
            o, t = np.argsort(ours.conf)[::-1], np.argsort(theirs.conf.numpy())[::-1]
            iou = box_iou(np.asarray(ours.xyxy)[o], theirs.xyxy.numpy()[t]).diagonal()
            assert (iou >= 0.9).all(), (image.name, iou)
            assert np.allclose(np.asarray(ours.conf)[o], theirs.conf.numpy()[t], atol=0.01)
            compared += len(ours.conf)
        assert yolo.predictor.imgsz == list(CAMERA)
    finally:
        runtime.close()
    assert compared >= 3, "too few plates on the holdout for the comparison to mean much"

    # a release whose candidate.json records another shape than its engine takes is not what was validated
    other = _release(gate_dir, "2", cand)
    meta = json.loads((other / CANDIDATE_JSON).read_text())
    (other / CANDIDATE_JSON).write_text(json.dumps({**meta, "input_shape": [320, 320]}))
    assert read_candidate(other).input_shape == (320, 320)
    with pytest.raises(GateError, match=r"takes \[192, 320\].*input_shape \[320, 320\]"):
        load_release(other)
