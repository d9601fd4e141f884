"""`alpr-ops doctor`'s checks as plain functions (tasks/operations/doctor.py) and the nightly verdict file."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from tasks.operations import doctor
from tasks.operations.policy import GateCheck
from tasks.operations.regression import RegressionReport, last_verdict, record_verdict
from tasks.support.config import Params, TrackingConfig
from tasks.support.errors import Remedy
from tasks.support.locks import project_lock


def test_model_missing_wrong_or_pinned(tmp_path: Path) -> None:
    model = tmp_path / "best.pt"
    pin = hashlib.sha256(b"the detector").hexdigest()
    missing = doctor.check_model(model, pin)
    assert missing.status == "fail" and missing.remedy is Remedy.FETCH_MODEL and "no model file" in missing.detail
    model.write_bytes(b"another detector")
    wrong = doctor.check_model(model, pin)
    assert wrong.status == "fail" and "is not the pinned" in wrong.detail
    model.write_bytes(b"the detector")
    assert doctor.check_model(model, pin).status == "ok"


def test_no_videos_names_the_folder(tmp_path: Path) -> None:
    check = doctor.check_videos(tmp_path / "videos")
    assert check.blocks and check.remedy is Remedy.SAMPLE_VIDEOS and str(tmp_path / "videos") in check.detail


def test_lock_pins_and_installed_packages(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text("# comment\nPyYAML==6.0.2\nrich[jupyter]==13.0 ; python_version >= '3'\nnot-a-pin>=1\n")
    assert doctor.lock_pins(lock) == {"pyyaml": "6.0.2", "rich": "13.0"}
    real = Path(__file__).resolve().parents[2] / "requirements.lock"
    check = doctor.check_packages(real)
    assert check.status == "ok", check.detail  # this venv is installed from the lock
    lock.write_text("typer==0.0.1\n")
    stale = doctor.check_packages(lock)
    assert stale.blocks and "typer" in stale.detail and "(pinned 0.0.1)" in stale.detail


def test_a_closed_store_fails_within_the_bound(tmp_path: Path, monkeypatch) -> None:
    from conftest import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    start = time.monotonic()
    check = doctor.check_store(TrackingConfig(uri=f"http://127.0.0.1:{free_port()}"))
    assert check.blocks and "did not answer" in check.detail and time.monotonic() - start < 60
    missing = doctor.check_store(TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}"))
    assert missing.status == "warn" and "no store yet" in missing.detail
    assert not (tmp_path / "mlflow.db").exists(), "the check must not create the store"


def test_servers_are_checked_only_when_configured(tmp_path: Path) -> None:
    from conftest import free_port

    assert doctor.check_prefect({}).status == "skip" and doctor.check_label_studio({}).status == "skip"
    down = doctor.check_prefect({"PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"})
    assert down.blocks and "did not answer" in down.detail
    no_token = doctor.check_label_studio({"LABEL_STUDIO_URL": "http://127.0.0.1:1"})
    assert no_token.blocks and "LABEL_STUDIO_API_KEY" in no_token.detail
    assert doctor.check_dvc_remote(tmp_path).status == "skip"


def test_tensorrt_only_where_a_candidate_needs_it() -> None:
    assert doctor.check_tensorrt(Params()).status == "skip"  # the default: OpenVINO and ONNX Runtime on the CPU


def test_the_lock_holder_is_named(tmp_path: Path) -> None:
    lock = tmp_path / "rebuild.lock"
    assert doctor.check_lock(lock).status == "ok"
    import threading

    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with project_lock(lock, "rebuild"):
            held.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert held.wait(30)
        check = doctor.check_lock(lock)
        assert check.status == "warn" and "the rebuild started at" in check.detail
    finally:
        release.set()
        t.join(30)


def test_disk_need_follows_the_formula(tmp_path: Path) -> None:
    videos, model = tmp_path / "videos", tmp_path / "best.pt"
    videos.mkdir()
    (videos / "broken.mp4").write_bytes(b"\0" * 1000)  # no container: counted as its file size
    model.write_bytes(b"\0" * 2000)
    params = Params.model_validate({"paths": {"videos": str(videos), "model": str(model)}})
    n = len(params.build.candidates) + 1  # and the FP32 model derived at the INT8 candidates' geometry
    expected = 1000 + n * 2000 * doctor.EXPORT_BLOWUP * doctor.EXPORT_COPIES + doctor.CALIBRATION_TEMP
    assert doctor.rebuild_disk_need(params) == int(expected * doctor.MARGIN)
    assert doctor.check_disk(params, tmp_path).status == "ok"  # half a GB: any test machine has it


def test_the_verdict_file_says_pass_fail_or_could_not_check(tmp_path: Path) -> None:
    path = tmp_path / ".cache" / "nightly.json"
    assert last_verdict(path) is None
    broken = GateCheck("brightness_change", False, 0.6, 0.35, "<=")
    report = RegressionReport(False, (broken,), {}, "3", "ov-int8", "ref", ("a.mp4",), 10, "newest", (), "run1")
    record_verdict(path, report)
    doc = last_verdict(path)
    assert doc["verdict"] == "fail" and doc["broken"] == ["brightness_change"] and doc["mlflow_run_id"] == "run1"
    assert doc["checked_at"] and doc["champion_version"] == "3"
    record_verdict(path, error=RuntimeError("the MLflow store http://u:secret@h did not answer"))
    doc = last_verdict(path)
    assert doc["verdict"] == "could not check" and "did not answer" in doc["reason"] and "secret" not in doc["reason"]
    assert [p.name for p in path.parent.iterdir()] == ["nightly.json"], "written atomically: no temp file left"
