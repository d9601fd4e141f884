"""Issue 15, defect 4: every entry point that writes the project's data, candidates, registry or gate folder takes
the one project lock; started beside a holder, it queues (saying for whom) and then gives what it gives when run
after it. The holder is paused at a known point with the test hook `ALPR_PAUSE_AT` (no sleeps decide anything)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tasks.support.config import Params
from tasks.support.faults import PAUSE_ENV

pytestmark = pytest.mark.integration

EXE = Path(sys.executable).with_name("alpr-ops")


class Run:
    """`alpr-ops ARGS` in a subprocess whose stderr is read line by line, so the test can wait for a line."""

    def __init__(self, root: Path, env: dict[str, str], *args: str) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            [str(EXE), *args], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.err: list[str] = []
        self.out = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err.append(line)

    def wait_for(self, text: str, timeout: float = 300) -> None:
        """Until a line of its stderr contains `text`; fails at once if the process ends without saying it."""
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.err):
            assert self.proc.poll() is None or self._reader.is_alive(), (
                f"alpr-ops {' '.join(self.args)} ended without saying {text!r}:\n{''.join(self.err)[-3000:]}"
            )
            assert time.monotonic() < deadline, f"alpr-ops {' '.join(self.args)} never said {text!r}"
            time.sleep(0.02)

    def finish(self) -> int:
        assert self.proc.stdout is not None
        self.out = self.proc.stdout.read()
        code = self.proc.wait(600)
        self._reader.join(60)
        return code

    @property
    def stderr(self) -> str:
        return "".join(self.err)


def test_writers_queue_behind_the_lock_holder_and_end_as_if_run_after_it(project: Params, cli, tmp_path: Path) -> None:
    root = project.paths.videos.parents[1]
    pause = tmp_path / "pause"
    pause.mkdir()
    env = {**os.environ, "PATH": f"{EXE.parent}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "200"}
    first = Run(root, {**env, PAUSE_ENV: f"locked-extract:{pause}"}, "extract")
    deadline = time.monotonic() + 300
    while not (pause / "locked-extract.paused").exists():
        assert first.proc.poll() is None, f"the first extract ended without pausing:\n{first.stderr[-3000:]}"
        assert time.monotonic() < deadline, "the first extract never paused"
        time.sleep(0.02)
    holder = json.loads(project.paths.rebuild_lock.read_text())
    assert holder["what"] == "extract" and holder["pid"] == first.proc.pid and "extract" in holder["command"]

    # started while the first extract holds the project lock: a second extract (a dvc.yaml stage, as build and
    # validate are) and a rollback (a registry and gate writer, as promote and the nightly check are)
    waiters = [Run(root, env, "extract"), Run(root, env, "rollback")]
    for run in waiters:
        run.wait_for(f"waiting for the extract started at {holder['started']} by pid {holder['pid']}")
    assert first.proc.poll() is None and not project.paths.calibration.exists()  # nothing ran beside the holder
    (pause / "locked-extract.resume").touch()

    assert first.finish() == 0, first.stderr[-3000:]
    codes = [run.finish() for run in waiters]
    # what each gives when run after the first one: the second extract decodes nothing (every video is cached by
    # then) and writes the same frames; rollback finds nothing to roll back to, and says so without a traceback
    second, rollback = waiters
    assert codes[0] == 0, second.stderr[-3000:]
    report = json.loads((project.paths.calibration / "report.json").read_text())
    assert report["decoded_videos"] == 0 and report["calibration_frames"] > 0
    assert codes[1] != 0 and "error: nothing to roll back to" in rollback.stderr, rollback.stderr[-3000:]
    assert "Traceback" not in rollback.stderr, rollback.stderr[-3000:]


def wait_paused(pause: Path, point: str, run: Run) -> None:
    deadline = time.monotonic() + 300
    while not (pause / f"{point}.paused").exists():
        assert run.proc.poll() is None, f"alpr-ops {' '.join(run.args)} ended without pausing:\n{run.stderr[-3000:]}"
        assert time.monotonic() < deadline, f"alpr-ops {' '.join(run.args)} never paused at {point}"
        time.sleep(0.02)


@pytest.mark.timeout(600)
def test_promote_and_nightly_during_a_rebuild_wait_and_neither_fails(
    project: Params, cli, make_params, seed_caches, tmp_path: Path
) -> None:
    """Defect 4's other pairs: a manual promote and the nightly check started while a rebuild (with its automatic
    promotion) holds the lock. Both queue; the rebuild, the promote and the nightly check then give what they give
    one after the other: the rebuild (forced: its inputs are the first's) builds the same bytes, so its winner is
    the champion's own version and neither its promotion nor the promote after it changes anything; the nightly
    check passes on that champion."""
    from tasks.runtime.releases import current_release, gate_id
    from tasks.support.registry import aliases_for
    from tasks.support.tracking import client

    root = project.paths.videos.parents[1]
    # the FP32 reference alone, from the session's build cache (the nightly check needs plates found at 320)
    fp32 = [{"name": "fp32", "precision": "fp32", "backend": "onnxruntime", "method": "ultralytics"}]
    params = make_params(root, build={"candidates": fp32, "speed_reference": None})
    seed_caches(params)
    cli(root, "rebuild")  # the first champion: what the nightly check needs
    first = current_release(params.promote.gate_dir)
    assert first is not None

    pause = tmp_path / "pause"
    pause.mkdir()
    env = {**os.environ, "PATH": f"{EXE.parent}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "200"}
    # --force: the inputs are the first rebuild's, which would otherwise stop at the unchanged check
    rebuild = Run(root, {**env, PAUSE_ENV: f"locked-rebuild:{pause}"}, "rebuild", "--force")
    wait_paused(pause, "locked-rebuild", rebuild)
    holder = json.loads(params.paths.rebuild_lock.read_text())
    waiters = [Run(root, env, "promote"), Run(root, env, "nightly")]
    for run in waiters:
        run.wait_for(f"waiting for the rebuild started at {holder['started']} by pid {holder['pid']}")
    assert current_release(params.promote.gate_dir) == first  # nothing moved beside the holder
    (pause / "locked-rebuild.resume").touch()

    assert rebuild.finish() == 0, rebuild.stderr[-3000:]
    promote, nightly = waiters
    assert promote.finish() == 0, promote.stderr[-3000:]
    nightly_code = nightly.finish()
    # the forced rebuild built the same bytes (build cache): its winner is the champion's version, reused, and
    # promoting it again (the rebuild's own promotion, then the promote after it) changed nothing
    second = current_release(params.promote.gate_dir)
    assert second == first
    assert "already runs these exact bytes" in rebuild.stderr + promote.stderr, rebuild.stderr[-3000:]
    aliases = aliases_for(gate_id(params.promote.gate_dir))
    mc = client(params.tracking)
    name = params.tracking.registered_model
    champion = mc.get_model_version_by_alias(name, aliases.champion).version
    assert second.name == f"v{champion}"
    # the nightly check judged the rebuild's champion, not the one live when it started (its verdict on these
    # 3-second clips is its own business: exit 0 for a pass, 1 for a broken gate; never a lock or store error)
    # (the verdict's explanation: the result on stdout after a pass, the error on stderr after a broken gate)
    said = nightly.out if nightly_code == 0 else nightly.stderr
    assert f"nightly regression of champion version {champion} " in said, nightly.stderr[-3000:]
    assert nightly_code in (0, 1) and "Traceback" not in promote.stderr + nightly.stderr
