"""`dvc metrics diff` and `dvc plots diff` between two commits show what a rebuild changed (a real git+DVC repo)."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.pipeline.validate import write_metrics, write_plot_data
from tasks.support.config import load_params

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def run(root: Path, *cmd: str) -> str:
    exe = Path(sys.executable).with_name(cmd[0]) if cmd[0] == "dvc" else Path(cmd[0])
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run([str(exe), *cmd[1:]], cwd=root, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def commit(root: Path, message: str) -> None:
    git = shutil.which("git")
    run(root, git, "add", "-A")
    run(root, git, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)


def test_metrics_and_plots_diff_between_commits(validation_report, tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    run(root, shutil.which("git"), "init", "-q")
    run(root, "dvc", "init", "-q")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copyfile(REPO / name, root / name)
    paths = load_params(root / "params.yaml").paths
    report = validation_report
    write_metrics(paths.metrics, report.reference, report.metrics)
    write_plot_data(paths.plots, report)
    commit(root, "first rebuild")

    # a second rebuild: ov-int8 got slower (every latency sample x1.5) and lost agreement
    slower = {k: dict(v) for k, v in report.metrics.items()}
    slower["ov-int8"]["latency_p50_ms"] = float(report.metrics["ov-int8"]["latency_p50_ms"]) * 1.5
    slower["ov-int8"]["agreement_map50_95"] = 0.1
    samples = {k: dict(v) for k, v in report.latency_samples.items()}
    samples["ov-int8"]["inference_ms"] = [x * 1.5 for x in samples["ov-int8"]["inference_ms"]]
    second = dataclasses.replace(report, metrics=slower, latency_samples=samples)
    write_metrics(paths.metrics, second.reference, second.metrics)
    write_plot_data(paths.plots, second)

    diff = json.loads(run(root, "dvc", "metrics", "diff", "HEAD", "--json"))
    changed = diff["metrics/validate.json"]
    assert changed["candidates.ov-int8.latency_p50_ms"]["new"] == pytest.approx(slower["ov-int8"]["latency_p50_ms"])
    assert changed["candidates.ov-int8.agreement_map50_95"]["new"] == 0.1
    assert not any(k.startswith("candidates.fp32.") for k in changed), "unchanged candidates are not listed"

    plots = json.loads(run(root, "dvc", "plots", "diff", "HEAD", "--json"))["data"]
    cdf_key = next(k for k in plots if k.endswith(os.path.join("latency_cdf", "ov-int8.csv")))
    revs = {d["rev"] for d in plots[cdf_key][0]["content"]["data"]["values"]}
    assert revs == {"HEAD", "workspace"}, revs
    assert any(k.endswith(os.path.join("pr_curve", "fp32.csv")) for k in plots)
