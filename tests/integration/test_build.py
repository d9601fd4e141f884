import json
from pathlib import Path

import pytest

from tasks.support.candidate import CANDIDATE_JSON, CandidateMissing, load_candidates
from tasks.support.config import CandidateConfig
from tasks.support.errors import Remedy
from tasks.support.hashing import path_sha256

pytestmark = pytest.mark.integration


def test_each_candidate_has_its_own_folder_artifact_and_metadata(built: tuple) -> None:
    params, candidates = built
    by_name = {c.name: c for c in candidates}
    # the declared candidates, and the FP32 model derived at the INT8 candidates' geometry (the clips' camera shape;
    # they show too few plates for a region of interest)
    assert set(by_name) == {"fp32", "fp32-ov", "ov-int8", "ort-int8", "ov-int8-mixed", "fp32@192x320"}
    assert by_name["fp32@192x320"].input_shape == by_name["ov-int8"].input_shape == (192, 320)
    assert by_name["fp32"].path.suffix == ".onnx"
    assert by_name["fp32-ov"].path.is_dir() and (by_name["fp32-ov"].path / "model.xml").is_file()  # speed reference
    assert by_name["fp32-ov"].input_shape == by_name["fp32"].input_shape == (320, 320)  # both references square
    assert by_name["ort-int8"].path.name.endswith("_int8.onnx")
    assert by_name["ov-int8"].path.is_dir() and (by_name["ov-int8"].path / "model.xml").is_file()
    assert by_name["ov-int8-mixed"].path.name.endswith("_openvino_model")
    assert (by_name["ov-int8-mixed"].path / "metadata.yaml").is_file()
    for cand in candidates:
        folder = params.paths.candidates / cand.name
        meta = json.loads((folder / CANDIDATE_JSON).read_text())
        assert meta["sha256"] == path_sha256(cand.path)
        assert meta["base_model_sha256"] == params.model.sha256
        assert meta["imgsz"] == 320
        assert {"ultralytics", "openvino", "onnxruntime"} <= set(meta["toolchain"])
        # only the artifact and its metadata: no stray copy of the .pt, no other candidate's files
        assert sorted(p.name for p in folder.iterdir()) == sorted([cand.artifact, CANDIDATE_JSON])
    # INT8 artifacts are smaller than the FP32 reference
    assert by_name["ort-int8"].size_mb < by_name["fp32"].size_mb / 2
    assert by_name["ov-int8"].size_mb < by_name["fp32"].size_mb / 2


def test_load_candidates_reads_back_what_was_built(built: tuple) -> None:
    params, candidates = built
    loaded = load_candidates(params.paths.candidates, [c.name for c in candidates])
    assert loaded == candidates
    with pytest.raises(CandidateMissing, match="'missing' has not been built") as e:
        load_candidates(params.paths.candidates, ["missing"])
    assert e.value.remedy is Remedy.BUILD


def test_int8_build_needs_the_calibration_yaml(tmp_path: Path, plate_model: Path) -> None:
    from tasks.pipeline.build import BuildInputMissing, build_candidates
    from tasks.support.config import BuildConfig

    cfg = BuildConfig(
        imgsz=64,
        speed_reference=None,
        candidates=(CandidateConfig(name="fp32", precision="fp32", backend="onnxruntime"),),
    )
    with pytest.raises(BuildInputMissing, match="calibration dataset YAML not found") as e:
        build_candidates(plate_model, tmp_path / "calibration.yaml", tmp_path / "out", cfg, "x", "y")
    assert e.value.remedy is Remedy.EXTRACT
    assert not (tmp_path / "out").exists()


def test_candidates_folder_of_an_older_version_is_adopted_and_built_into(tmp_path: Path, plate_model: Path) -> None:
    """Issue item 2, the adoption side: `paths.candidates` as a version before the marker left it (candidate folders
    holding candidate.json, no marker) is built into as before: a changed candidate's folder is replaced, and the
    candidates folder is marked as this project's. (Refusals: tests/unit/test_candidate_folders.py.)"""
    from tasks.pipeline.build import build_candidates
    from tasks.support.config import BuildConfig
    from tasks.support.fsutil import OUTPUT_MARKER

    dataset_yaml = tmp_path / "calibration.yaml"
    dataset_yaml.write_text("val: images\n")  # FP32 does not calibrate: never read
    out = tmp_path / "candidates"

    def build(imgsz: int) -> list:
        cfg = BuildConfig(
            imgsz=imgsz,
            speed_reference=None,
            candidates=(CandidateConfig(name="fp32", precision="fp32", backend="onnxruntime"),),
        )
        return build_candidates(plate_model, dataset_yaml, out, cfg, "base", "frames")

    first = build(64)
    assert (out / OUTPUT_MARKER).is_file() and not (out / "fp32" / OUTPUT_MARKER).exists()
    (out / OUTPUT_MARKER).unlink()  # as an older version left it
    (second,) = build(96)  # another input size: the candidate's folder is replaced
    assert second.imgsz == 96 and second.sha256 != first[0].sha256 and (out / OUTPUT_MARKER).is_file()
    assert sorted(p.name for p in (out / "fp32").iterdir()) == sorted([second.artifact, CANDIDATE_JSON])
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER, "fp32"]
