"""A failed rebuild resumes from its last finished step: `alpr-ops resume`, as the CLI's failure message says."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.support.config import Params

pytestmark = pytest.mark.e2e

EXE = Path(sys.executable).parent


def test_failed_rebuild_resumes_from_the_last_finished_step(project: Params, make_params, tmp_path: Path) -> None:
    root = project.paths.videos.parents[1]
    fp32 = [{"name": "fp32", "precision": "fp32", "backend": "onnxruntime"}]
    params = make_params(
        root, build={"imgsz": 160, "candidates": fp32, "speed_reference": None}, validate={"imgsz": 160}
    )
    holdout = params.paths.holdout
    shutil.move(holdout, tmp_path / "holdout-aside")  # validation will fail: no labelled holdout
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "COLUMNS": "250",
           "PATH": f"{EXE}{os.pathsep}{os.environ['PATH']}"}  # fmt: skip
    env.pop("PREFECT_API_URL", None)

    failed = subprocess.run([str(EXE / "alpr-ops"), "rebuild"], cwd=root, env=env, capture_output=True, text=True)
    out = failed.stdout + failed.stderr
    assert failed.returncode == 3, out[-3000:]
    assert str(holdout) in out  # the error names what is missing
    assert re.search(r"build-\w+: Finished in state Completed", out)
    match = re.search(r"alpr-ops resume (\S+)", out)
    assert match, out[-3000:]

    shutil.move(tmp_path / "holdout-aside", holdout)  # the fix
    retry = [str(EXE / "alpr-ops"), "resume", match[1]]
    resumed = subprocess.run(retry, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    out = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, out[-4000:]
    for step in ("extract", "build"):  # finished before the failure: loaded from the persisted results
        assert re.search(rf"Task run '{step}-\w+' - Finished in state Cached", out), (step, out[-4000:])
    assert re.search(r"Task run 'validate-\w+' - Finished in state Completed", out)
    assert (params.promote.gate_dir / "current" / "manifest.json").is_file()
