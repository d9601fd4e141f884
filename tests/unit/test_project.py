"""What a deployment run sees of a project: params parsed at run time, overrides (the lock: test_locks.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.support.config import ConfigError
from tasks.support.project import Overrides, load_project


def test_candidates_subset_keeps_the_references_and_names_typos(tmp_path: Path, make_params) -> None:
    make_params(tmp_path)
    proj = load_project(tmp_path / "params.yaml", Overrides.of(only=["ov-int8"]))
    assert [c.name for c in proj.params.build.candidates] == ["fp32", "fp32-ov", "ov-int8"]
    with pytest.raises(ConfigError, match=r"unknown candidate\(s\) \['ov-int9'\].*declares"):
        load_project(tmp_path / "params.yaml", Overrides.of(only=["ov-int9"]))


def test_dvc_records_only_runs_on_the_paths_dvc_yaml_describes(tmp_path: Path, make_params) -> None:
    make_params(tmp_path)
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    assert load_project(tmp_path / "params.yaml").dvc_root == tmp_path
    assert load_project(tmp_path / "params.yaml", Overrides.of(videos=tmp_path / "other")).dvc_root is None
    assert load_project(tmp_path / "params.yaml", Overrides.of(only=["fp32"])).dvc_root is None
