"""Our INT8 builds on real models and frames: the accuracy gate and its recovery, the content-addressed cache, and
metadata embedded in and beside every artifact."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import pytest

from tasks.edge.metadata import read_embedded_metadata
from tasks.pipeline.build import build_candidates
from tasks.pipeline.extract import extract_frames
from tasks.support.candidate import CANDIDATE_JSON
from tasks.support.config import BuildConfig, CandidateConfig, ExtractConfig, ValidateConfig
from tasks.support.hashing import path_sha256

pytestmark = pytest.mark.integration

GATE = ValidateConfig(imgsz=320)
FP32 = CandidateConfig(name="fp32", precision="fp32", backend="onnxruntime")
# every frame of every video, no dedup or brightness strata: the frame counts these tests reason about
PLAIN = {"dedup_threshold": 0, "brightness_bins": 1, "holdout_fraction": 0}


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 4 s gate videos: enough frames (16) that held-out frames show plates the FP32 model detects."""
    from tasks.demo.synth import SynthConfig, write_videos

    root = tmp_path_factory.mktemp("videos")
    write_videos(root, 2, 4, 0, SynthConfig(width=640, height=360, fps=10))
    return root


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory, videos: Path):
    root = tmp_path_factory.mktemp("frames")
    cfg = ExtractConfig(interval_s=0.5, max_frames_per_video=8, **PLAIN)
    return extract_frames(videos, root / "calibration", root / "calibration.yaml", cfg, ("plate",))


@pytest.fixture(scope="module")
def gate_frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Frames of a video never used for calibration (what `paths.holdout_frames` holds): where our gate measures."""
    from tasks.demo.synth import SynthConfig, write_videos

    root = tmp_path_factory.mktemp("gate")
    write_videos(root / "videos", 1, 4, 7, SynthConfig(width=640, height=360, fps=10))
    cfg = ExtractConfig(interval_s=0.5, max_frames_per_video=8, **PLAIN)
    return extract_frames(root / "videos", root / "frames", root / "frames.yaml", cfg, ("plate",)).out_dir


def _build(model: Path, frames, out: Path, *cands: CandidateConfig, shape: str = "square", **kw) -> list:
    # square by default: the agreement numbers these tests reason about were measured at 320x320
    cfg = BuildConfig(imgsz=320, shape=shape, shape_margin=0, speed_reference=None, candidates=(FP32, *cands))
    return build_candidates(model, frames.dataset_yaml, out, cfg, "m" * 64, frames.frames_hash, gate=GATE, **kw)


def test_a_candidate_forced_below_the_gate_recovers_and_names_the_layers_kept_in_float(
    plate_model: Path, frames, gate_frames: Path, tmp_path: Path
) -> None:
    # the head quantized (Ultralytics' own head scope and the branches' last convs off): far below the gate at first.
    # max_drop 0.1: on this machine's CPU NNCF's search stops at agreement 0.908 (drop 0.087; the old code too), so a
    # 0.03 gate is never met here; 0.1 still fails the first gate (0.749) and the head step (0.858), so the search runs
    forced = CandidateConfig.model_validate(
        {
            "name": "forced",
            "precision": "int8",
            "method": "nncf",
            "nncf": {
                "ignored_scope": {"ultralytics_head": False, "branch_last_conv": False},
                "fast_bias_correction": True,
                "accuracy_control": {"enabled": True, "max_drop": 0.1, "max_iterations": 4},
            },
        }
    )
    built = _build(plate_model, frames, tmp_path / "c", forced, gate_frames=gate_frames)
    q = built[1].quantization
    assert q["gate_frames_source"] == "holdout_videos"
    assert q["holdout_frames"] == len(list((gate_frames / "images").iterdir()))
    assert q["calibration_frames"] == len(list((frames.out_dir / "images").iterdir()))  # none spent on the gate
    assert q["gate_first"]["passed"] is False, q["gate_first"]
    assert q["gate"]["passed"] is True, (q["gate_first"], q["recovery"])
    assert q["holdout_boxes"] > 0
    assert q["recovery"], "the recovery loop did not run"
    assert q["kept_by_recovery"], "recovery passed without keeping any layer in float"
    assert set(q["kept_by_recovery"]) <= set(q["kept_in_float"])
    assert all("Convolution" in name for name in q["kept_in_float"])
    # after the search, its float scope quantized afresh; the gate keeps whichever model agrees more
    search, fresh = q["recovery"][-2:]
    assert search["step"] == "nncf_accuracy_control" and fresh["step"] == "requantize_final_scope", q["recovery"]
    assert q["gate"]["agreement"] == max(search["agreement"], fresh["agreement"])
    assert fresh["kept"] is (fresh["agreement"] > search["agreement"])
    meta = json.loads((built[1].folder / CANDIDATE_JSON).read_text())
    assert meta["quantization"]["kept_in_float"] == q["kept_in_float"]
    assert read_embedded_metadata(built[1].path)["kept_in_float"] == q["kept_in_float"]

    # next build (frames changed -> a real rebuild) starts from the layers this one kept, including the operations
    # NNCF's search reverted (its activation quantizers too, not only float weights), and ends passing. Whether it
    # passes at once depends on the frames: re-quantizing recomputes bias correction, so the search may run again.
    changed = dataclasses.replace(frames, frames_hash="changed")
    again = _build(plate_model, changed, tmp_path / "c2", forced, previous=built[1].folder, gate_frames=gate_frames)
    again = again[1].quantization
    assert again["start_kept_in_float"] == q["float_scope"]
    assert set(q["kept_in_float"]) <= set(q["float_scope"])
    searched = [step for step in q["recovery"] if step["step"] == "nncf_accuracy_control"]
    assert all(step["reverted"] and set(step["reverted"]) <= set(again["ignored_scope"]) for step in searched), searched
    assert again["gate"]["passed"] is True, (again["gate_first"], again["recovery"])


def test_the_search_stops_at_its_time_budget_and_keeps_the_candidate(
    plate_model: Path, frames, gate_frames: Path, tmp_path: Path
) -> None:
    # a gate no INT8 model meets, and a search budget spent before NNCF's first evaluation
    strict = CandidateConfig.model_validate(
        {
            "name": "strict",
            "precision": "int8",
            "method": "nncf",
            "nncf": {
                "ignored_scope": {"ultralytics_head": False, "branch_last_conv": False},
                "fast_bias_correction": True,
                "accuracy_control": {"enabled": True, "max_drop": 1e-6, "search": True, "search_budget_s": 1e-3},
            },
        }
    )
    built = _build(plate_model, frames, tmp_path / "c", strict, gate_frames=gate_frames)[1]
    q = built.quantization
    assert [step["step"] for step in q["recovery"]] == ["head_scope", "nncf_accuracy_control"]
    assert "budget" in q["recovery"][-1]["stopped"]
    assert q["gate"]["passed"] is False and q["gate"] == {k: q["recovery"][0][k] for k in q["gate"]}
    assert built.path.is_dir() and q["kept_in_float"]  # the head-scope model, saved as the candidate


def test_unchanged_rebuild_reuses_every_artifact_and_changed_frames_rebuild(
    plate_model: Path, frames, gate_frames: Path, tmp_path: Path, videos: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ours = CandidateConfig.model_validate(
        {
            "name": "ours",
            "precision": "int8",
            "method": "nncf",
            "nncf": {"fast_bias_correction": True, "accuracy_control": {"enabled": False, "holdout_fraction": 0.125}},
        }
    )
    qdq = CandidateConfig.model_validate(
        {"name": "qdq", "precision": "int8", "method": "ort-qdq", "qdq": {"holdout_fraction": 0.125}}
    )
    out, cache = tmp_path / "candidates", tmp_path / "cache"
    first = _build(plate_model, frames, out, ours, qdq, cache_dir=cache, gate_frames=gate_frames, shape="camera")
    # the INT8 ones at the 640x360 clips' shape (NNCF and Q/DQ calibrate and gate at it), FP32 square, and after them
    # FP32 at their geometry (what their quantization is measured against)
    assert [c.input_shape for c in first] == [(320, 320), (192, 320), (192, 320), (192, 320)]
    assert first[-1].name == "fp32@192x320" and first[-1].precision == "fp32"
    stamps = {c.name: (c.path.stat().st_mtime_ns, path_sha256(c.path), c.built_at) for c in first}

    # metadata in and beside every artifact, and every artifact loads in Ultralytics
    from ultralytics import YOLO

    for c in first:
        beside = json.loads((c.folder / CANDIDATE_JSON).read_text())
        inside = read_embedded_metadata(c.path)
        assert inside["cache_key"] == beside["cache_key"] == c.cache_key
        assert inside["frames_hash"] == frames.frames_hash and inside["base_model_sha256"] == "m" * 64
        assert inside["params"]["name"] == c.name and "openvino" in inside["toolchain"]
        assert beside["sha256"] == path_sha256(c.path)
        assert inside["input_shape"] == beside["input_shape"] == list(c.input_shape)
        assert YOLO(str(c.path), task="detect").predict(
            str(next((frames.out_dir / "images").iterdir())), imgsz=320, verbose=False
        )

    caplog.set_level(logging.INFO, logger="tasks.pipeline.build")
    again = _build(plate_model, frames, out, ours, qdq, cache_dir=cache, gate_frames=gate_frames, shape="camera")
    assert again == first
    assert {c.name: (c.path.stat().st_mtime_ns, path_sha256(c.path), c.built_at) for c in again} == stamps
    assert sum("reused" in r.message for r in caplog.records) == 4
    assert not any(r.message.startswith("built ") for r in caplog.records)

    # the candidates folder lost (e.g. a fresh DVC checkout): restored from the cache, still without exporting
    shutil.rmtree(out)
    caplog.clear()
    caplog.set_level(logging.INFO, logger="tasks.pipeline.build")
    restored = _build(plate_model, frames, out, ours, qdq, cache_dir=cache, gate_frames=gate_frames, shape="camera")
    assert [path_sha256(c.path) for c in restored] == [s[1] for s in stamps.values()]
    assert sum("from the build cache" in r.message for r in caplog.records) == 4

    # different gate frames: only the candidate gated on them is built again
    fewer = tmp_path / "gate2" / "images"
    fewer.mkdir(parents=True)
    for image in sorted((gate_frames / "images").iterdir())[1:]:
        shutil.copyfile(image, fewer / image.name)
    regated = _build(plate_model, frames, out, ours, qdq, cache_dir=cache, gate_frames=fewer.parent, shape="camera")
    mtimes = {c.name: c.path.stat().st_mtime_ns for c in regated}
    assert mtimes["fp32"] == stamps["fp32"][0] and mtimes["qdq"] == stamps["qdq"][0]
    assert mtimes["ours"] > stamps["ours"][0]
    assert regated[1].quantization["holdout_frames"] == len(list(fewer.iterdir()))

    # different frames: every INT8 candidate is built again, calibrated on the new frames; FP32 does not use them
    other = extract_frames(
        videos,
        tmp_path / "other",
        tmp_path / "other.yaml",
        ExtractConfig(interval_s=0.7, max_frames_per_video=4, **PLAIN),
        ("plate",),
    )
    assert other.frames_hash != frames.frames_hash
    rebuilt = _build(plate_model, other, out, ours, qdq, cache_dir=cache, gate_frames=gate_frames, shape="camera")
    assert rebuilt[0] == first[0] and rebuilt[0].path.stat().st_mtime_ns == stamps["fp32"][0]
    assert rebuilt[-1].path.stat().st_mtime_ns == stamps["fp32@192x320"][0]  # FP32 at the geometry: no frames used
    int8 = [c for c in rebuilt if c.precision == "int8"]
    assert all(c.frames_hash == other.frames_hash for c in int8)
    assert all(c.path.stat().st_mtime_ns > stamps[c.name][0] for c in int8)
    assert all(read_embedded_metadata(c.path)["frames_hash"] == other.frames_hash for c in int8)
    assert {c.cache_key for c in int8}.isdisjoint({c.cache_key for c in first})

    # ours built square from the same inputs: another artifact under another key (the shape is part of the key)
    squared = _build(plate_model, other, tmp_path / "square", ours, cache_dir=cache, gate_frames=gate_frames)
    assert squared[0].cache_key == rebuilt[0].cache_key and squared[1].input_shape == (320, 320)
    assert squared[1].cache_key != rebuilt[1].cache_key and squared[1].sha256 != rebuilt[1].sha256
