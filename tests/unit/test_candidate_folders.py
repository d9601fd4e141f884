"""Issue item 2: `paths.candidates` set to an existing folder lost the files of its sub-folders named like a
candidate. The build checks every folder it would write before its first export and refuses, by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.pipeline.build import build_candidates
from tasks.support.config import BuildConfig, CandidateConfig
from tasks.support.errors import Remedy
from tasks.support.fsutil import OUTPUT_MARKER, NotOurFolder

CFG = BuildConfig(
    imgsz=64,
    speed_reference=None,
    candidates=(CandidateConfig(name="fp32", precision="fp32", backend="onnxruntime"),),
)


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("where", ["fp32/important.onnx", "important.txt"])
def test_a_candidates_setting_pointed_at_a_folder_of_files_refuses_before_any_export(
    tmp_path: Path, where: str
) -> None:
    out = tmp_path / "models"
    (out / where).parent.mkdir(parents=True)
    (out / where).write_bytes(b"mine")
    dataset_yaml = tmp_path / "calibration.yaml"
    dataset_yaml.write_text("val: images\n")
    before = _tree(out)
    folder = out / "fp32" if where.startswith("fp32/") else out
    with pytest.raises(NotOurFolder, match=rf"{folder} \(paths\.candidates\) holds files") as e:
        build_candidates(tmp_path / "never-read.pt", dataset_yaml, out, CFG, "x", "y")
    assert e.value.remedy is Remedy.OUTPUT_FOLDER
    assert _tree(out) == before and not (out / OUTPUT_MARKER).exists()
    assert sorted(p.name for p in out.iterdir()) == sorted({where.split("/")[0]}), "a temp folder was left"
