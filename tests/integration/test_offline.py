"""Nothing reaches for the network at run time: measured in a fresh interpreter with a recording socket guard.

The guard (tests/netguard.py) records every connect and DNS lookup to a non-loopback host. The control run (no
offline settings) must record some, which shows the guard sees what Ultralytics does; the configured run none.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.support.offline import OFFLINE_ENV

pytestmark = pytest.mark.integration

GUARD = "import json, sys\nimport netguard\nattempts = netguard.install()\n"

CONFIGURED = """
from pathlib import Path
from tasks.support.offline import configure_offline
work = Path(sys.argv[1])
configure_offline(work / "yolo")
from ultralytics import YOLO
model = YOLO(sys.argv[2])
model.val(data=sys.argv[3], imgsz=160, batch=1, plots=True, device="cpu", project=str(work / "runs"), verbose=False)
model.export(format="openvino", quantize=8, data=sys.argv[3], imgsz=160, device="cpu", verbose=False)
model = YOLO(sys.argv[2])
model.export(format="onnx", quantize=8, data=sys.argv[3], imgsz=160, device="cpu", verbose=False)
from mlflow import MlflowClient
client = MlflowClient(tracking_uri="sqlite:///" + str(work / "mlflow.db"))
run = client.create_run(client.create_experiment("offline"))
client.log_metric(run.info.run_id, "m", 1.0)
client.set_terminated(run.info.run_id)
print("ATTEMPTS=" + json.dumps(attempts))
"""

CONTROL = """
from ultralytics.utils.checks import check_font
check_font("Arial.ttf")
print("ATTEMPTS=" + json.dumps(attempts))
"""


def run_guarded(body: str, args: list[str], env: dict[str, str], cwd: Path) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", GUARD + body, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "AutoUpdate" not in done.stdout + done.stderr, "Ultralytics tried to pip-install something"
    line = [x for x in done.stdout.splitlines() if x.startswith("ATTEMPTS=")][-1]
    return json.loads(line.removeprefix("ATTEMPTS="))


def clean_env(tmp_path: Path) -> dict[str, str]:
    """The environment without any of our offline settings, with a fresh HOME (no telemetry consent file)."""
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_ENV and k != "YOLO_CONFIG_DIR"}
    env["HOME"] = str(tmp_path / "home")
    (tmp_path / "home").mkdir()
    tests = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join([str(tests.parent), str(tests)])
    return env


def test_guard_sees_ultralytics_reach_out_without_offline_settings(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    env["YOLO_CONFIG_DIR"] = str(tmp_path / "yolo")
    attempts = run_guarded(CONTROL, [], env, tmp_path)
    assert attempts, "control run made no network attempt: the guard would not catch a regression"


def test_configured_workflow_libraries_stay_offline(tmp_path: Path, sample_data: Path, plate_model: Path) -> None:
    data = tmp_path / "data.yaml"
    data.write_text(f"path: {sample_data / 'holdout'}\ntrain: images\nval: images\nnames:\n  0: License_Plate\n")
    model = tmp_path / "best.pt"
    model.write_bytes(plate_model.read_bytes())
    attempts = run_guarded(CONFIGURED, [str(tmp_path), str(model), str(data)], clean_env(tmp_path), tmp_path)
    assert attempts == []
    assert (tmp_path / "yolo" / "Ultralytics" / "Arial.ttf").is_file()
    assert (tmp_path / "home" / "intel" / "openvino_telemetry").read_text() == "0"
    settings = json.loads((tmp_path / "yolo" / "Ultralytics" / "settings.json").read_text())
    assert settings["sync"] is False and settings["mlflow"] is False and settings["dvc"] is False
