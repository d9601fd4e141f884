"""The project lock (issue 15, defect 4): every writer queues on it and says for whom it waits; it is re-entrant
for its holder (a flow and its subflow, a child process the holder starts) and for no one else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tasks.support.locks import TOKEN_ENV, is_locked, project_lock

ROOT = Path(__file__).resolve().parents[2]
CHILD = "import sys; from pathlib import Path; from tasks.support.locks import project_lock\n" \
    "with project_lock(Path(sys.argv[1]), 'child'):\n    print('inside', flush=True)\n"  # fmt: skip


def _wait_for(what: str, done, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_a_second_writer_waits_and_says_for_whom(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lock = tmp_path / "project.lock"
    spans: list[tuple[str, float, float]] = []
    holding, release = threading.Event(), threading.Event()

    def run(name: str, what: str) -> None:
        with project_lock(lock, what):
            start = time.monotonic()
            if name == "first":
                holding.set()
                assert release.wait(60), "the test never released the first run"
            spans.append((name, start, time.monotonic()))

    caplog.set_level("WARNING", logger="tasks.support.locks")
    first = threading.Thread(target=run, args=("first", "rebuild"))
    first.start()
    assert holding.wait(60), "the first run never got the lock"
    info = json.loads(lock.read_text())
    assert info["what"] == "rebuild" and info["pid"] == os.getpid() and info["started"] and info["command"]
    assert is_locked(lock)  # what the watcher asks before a `dvc pull`
    second = threading.Thread(target=run, args=("second", "extract"))  # a new thread: not the holder's context
    second.start()
    said = f"extract: waiting for the rebuild started at {info['started']} by pid {os.getpid()}"
    _wait_for("the second run did not wait", lambda: any(said in r.getMessage() for r in caplog.records))
    assert spans == []  # queued, not running
    release.set()
    first.join(60)
    second.join(60)
    assert not is_locked(lock) and lock.read_text() == ""
    (_, _, first_end), (_, second_start, _) = sorted(spans, key=lambda s: s[1])
    assert [s[0] for s in sorted(spans, key=lambda s: s[1])] == ["first", "second"]
    assert second_start >= first_end  # one after the other, never side by side


def test_the_holder_re_enters_and_its_children_too(tmp_path: Path) -> None:
    lock = tmp_path / "project.lock"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    entered: list[str] = []

    def holder() -> None:
        with project_lock(lock, "rebuild"):
            with project_lock(lock, "promote"):  # an flock taken twice by one process would block here forever
                entered.append("nested")
            child = subprocess.run(  # a process the holder starts inherits its token (`alpr-ops repro`'s stages)
                [sys.executable, "-c", CHILD, str(lock)], env={**env, TOKEN_ENV: os.environ[TOKEN_ENV]},
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            entered.append(child.stdout.strip())
            stranger = subprocess.Popen(  # a process without the token queues
                [sys.executable, "-c", CHILD, str(lock)], env={k: v for k, v in env.items() if k != TOKEN_ENV},
                stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            try:
                assert stranger.stderr is not None
                line = stranger.stderr.readline()  # blocks until it says it waits (or exits: then '')
                entered.append(line)
            finally:
                stranger.kill()
                stranger.wait(30)

    t = threading.Thread(target=holder, daemon=True)
    t.start()
    t.join(180)
    assert not t.is_alive(), "the holder deadlocked on its own lock"
    assert entered[:2] == ["nested", "inside"]
    assert "child: waiting for the rebuild started at" in entered[2]
    assert TOKEN_ENV not in os.environ and not is_locked(lock)


def test_a_subflow_re_enters_its_flow_s_lock(tmp_path: Path, prefect_api: str) -> None:
    """Real Prefect: `rebuild` runs the `promote` flow inside its hold; both take the project lock."""
    from prefect import flow, task

    lock = tmp_path / "project.lock"

    @task
    def write(what: str) -> str:
        with project_lock(lock, what):
            return what

    @flow
    def promote() -> str:
        with project_lock(lock, "promote"):
            return write("promote-task")

    @flow
    def rebuild() -> list[str]:
        with project_lock(lock, "rebuild"):
            return [write("rebuild-task"), promote()]

    out: list[list[str]] = []
    t = threading.Thread(target=lambda: out.append(rebuild()), daemon=True)
    t.start()
    t.join(240)
    assert not t.is_alive(), "the subflow deadlocked on its flow's lock"
    assert out == [["rebuild-task", "promote-task"]]
