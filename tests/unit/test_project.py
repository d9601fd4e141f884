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


def test_a_second_rebuild_waits_for_the_first(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lock = tmp_path / "rebuild.lock"
    spans: list[tuple[str, float, float]] = []
    holding, release = threading.Event(), threading.Event()

    def rebuild(name: str) -> None:
        with rebuild_lock(lock):
            start = time.monotonic()
            if name == "first":
                holding.set()
                assert release.wait(30), "the test never released the first rebuild"
            spans.append((name, start, time.monotonic()))

    def waiting() -> bool:  # the second rebuild said it waits for the lock (it logs that before blocking)
        return any("waiting for it to finish" in r.getMessage() for r in caplog.records)

    caplog.set_level("WARNING", logger="tasks.support.project")
    first = threading.Thread(target=rebuild, args=("first",))
    first.start()
    assert holding.wait(30), "the first rebuild never got the lock"
    assert rebuild_running(lock)  # what the watcher asks before a `dvc pull`
    second = threading.Thread(target=rebuild, args=("second",))
    second.start()
    deadline = time.monotonic() + 30
    while not waiting():
        assert time.monotonic() < deadline, "the second rebuild did not wait for the lock"
        time.sleep(0.01)
    assert spans == [] and rebuild_running(lock)  # the second one is queued, not running
    release.set()
    first.join(30)
    second.join(30)
    assert not rebuild_running(lock)
    (_, _, first_end), (_, second_start, _) = sorted(spans, key=lambda s: s[1])
    assert [s[0] for s in sorted(spans, key=lambda s: s[1])] == ["first", "second"]
    assert second_start >= first_end  # queued, never side by side
