"""What a deployment run sees of a project: params parsed at run time, overrides, and one rebuild at a time."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tasks.support.config import ConfigError
from tasks.support.project import Overrides, load_project, rebuild_lock, rebuild_running


def test_candidates_subset_keeps_the_reference_and_names_typos(tmp_path: Path, make_params) -> None:
    make_params(tmp_path)
    proj = load_project(tmp_path / "params.yaml", Overrides.of(only=["ov-int8"]))
    assert [c.name for c in proj.params.build.candidates] == ["fp32", "ov-int8"]
    with pytest.raises(ConfigError, match=r"unknown candidate\(s\) \['ov-int9'\].*declares"):
        load_project(tmp_path / "params.yaml", Overrides.of(only=["ov-int9"]))


def test_dvc_records_only_runs_on_the_paths_dvc_yaml_describes(tmp_path: Path, make_params) -> None:
    make_params(tmp_path)
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    assert load_project(tmp_path / "params.yaml").dvc_root == tmp_path
    assert load_project(tmp_path / "params.yaml", Overrides.of(videos=tmp_path / "other")).dvc_root is None
    assert load_project(tmp_path / "params.yaml", Overrides.of(only=["fp32"])).dvc_root is None


def test_a_second_rebuild_waits_for_the_first(tmp_path: Path) -> None:
    lock = tmp_path / "rebuild.lock"
    spans: list[tuple[str, float, float]] = []

    def rebuild(name: str) -> None:
        with rebuild_lock(lock):
            start = time.monotonic()
            time.sleep(0.5)
            spans.append((name, start, time.monotonic()))

    first = threading.Thread(target=rebuild, args=("first",))
    first.start()
    time.sleep(0.1)
    assert rebuild_running(lock)  # what the watcher asks before a `dvc pull`
    second = threading.Thread(target=rebuild, args=("second",))
    second.start()
    first.join()
    second.join()
    assert not rebuild_running(lock)
    (_, _, first_end), (_, second_start, _) = sorted(spans, key=lambda s: s[1])
    assert [s[0] for s in sorted(spans, key=lambda s: s[1])] == ["first", "second"]
    assert second_start >= first_end  # queued, never side by side
