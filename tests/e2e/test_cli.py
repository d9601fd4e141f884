"""Bad input through the CLI: a clear message naming the file and the fix, a non-zero exit, nothing corrupted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tasks.runtime.releases import current_release
from tasks.support.config import Params

pytestmark = pytest.mark.e2e


def test_missing_params_file(tmp_path: Path, cli) -> None:
    done = cli(tmp_path, "--params", "nope.yaml", "status", check=False)
    assert done.returncode == 2
    assert "nope.yaml: not found" in done.stderr and "--params PATH" in done.stderr


def test_typo_in_params_names_the_key(tmp_path: Path, cli) -> None:
    (tmp_path / "params.yaml").write_text("extract:\n  intervall_s: 1\n")
    done = cli(tmp_path, "status", check=False)
    assert done.returncode == 2
    assert "extract.intervall_s" in done.stderr


def test_missing_model_says_to_fetch_it(project: Params, cli) -> None:
    root = project.paths.videos.parents[1]
    project.paths.model.unlink()
    cli(root, "extract")
    done = cli(root, "build", check=False)
    assert done.returncode == 3
    assert "model not found" in done.stderr and "alpr-ops fetch-model" in done.stderr
    assert not project.paths.candidates.exists()


def test_wrong_sha256_stops_the_run(project: Params, cli) -> None:
    root = project.paths.videos.parents[1]
    project.paths.model.write_bytes(b"not the pinned detector")
    cli(root, "extract")
    done = cli(root, "build", check=False)
    assert done.returncode == 3
    assert "does not match the pinned" in done.stderr and "best.pt" in done.stderr


def test_unreadable_video_is_named_and_skipped(project: Params, cli) -> None:
    root = project.paths.videos.parents[1]
    (project.paths.videos / "truncated.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    done = cli(root, "extract")
    assert "truncated.mp4" in done.stderr
    manifest = (project.paths.calibration / "manifest.csv").read_text()
    assert "truncated.mp4" not in manifest and "gate_" in manifest


def test_no_frames_at_all_stops_and_keeps_the_previous_frames(project: Params, cli) -> None:
    root = project.paths.videos.parents[1]
    cli(root, "extract")
    before = (project.paths.calibration / "manifest.csv").read_text()
    shutil.rmtree(project.paths.videos)
    project.paths.videos.mkdir()
    (project.paths.videos / "empty.mp4").write_bytes(b"")
    done = cli(root, "extract", check=False)
    assert done.returncode == 3
    assert "no frames could be extracted" in done.stderr and "empty.mp4" in done.stderr
    assert (project.paths.calibration / "manifest.csv").read_text() == before


def test_status_on_an_empty_store(project: Params, cli) -> None:
    from tasks.support.tracking import client, experiment_id

    root = project.paths.videos.parents[1]
    experiment_id(client(project.tracking), project.tracking)  # an existing store with nothing in it
    info = json.loads(cli(root, "status", "--json").stdout)
    assert info == {
        "champion": None,
        "deployed": None,
        "rebuild": None,
        "candidates": [],
        "mismatch": None,
        "nightly": None,
    }


def test_status_without_a_store_names_it_and_creates_none(project: Params, cli) -> None:
    """Before the first rebuild there is no store to read: status says so (a typo in tracking.uri looks the same)
    rather than creating an empty store."""
    root = project.paths.videos.parents[1]
    done = cli(root, "status", "--json", check=False)
    assert done.returncode == 3 and "names no MLflow store" in done.stderr and "tracking.uri" in done.stderr
    assert not (root / "mlflow.db").exists()


def test_promote_without_a_rebuild_says_what_to_run(project: Params, cli) -> None:
    root = project.paths.videos.parents[1]
    done = cli(root, "promote", check=False)
    assert done.returncode == 3
    assert "alpr-ops rebuild" in done.stderr
    # approving a version that is not the gate's pending decision is refused, naming what is pending
    done = cli(root, "promote", "--approve", "3", check=False)
    assert done.returncode == 2 and "version 3 is not the pending decision" in done.stderr, done.stderr[-2000:]  # usage
    assert "(pending: none)" in done.stderr and current_release(project.promote.gate_dir) is None


def test_demo_runs_the_whole_workflow(tmp_path: Path, plate_model: Path, cli, make_params, seed_caches) -> None:
    """`alpr-ops demo` (what `make demo` runs) on test-sized params in a fresh git+DVC project."""
    import subprocess
    import sys

    params = make_params(tmp_path)
    seed_caches(params)  # the demo's sample videos are the session's: frames and candidates come from the caches
    params.paths.model.parent.mkdir(parents=True)
    shutil.copyfile(plate_model, params.paths.model)  # fetch-model then finds the pinned file and only verifies it
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([str(Path(sys.executable).with_name("dvc")), "init", "-q"], cwd=tmp_path, check=True)
    done = cli(tmp_path, "demo")
    assert "Candidates" in done.stdout and "champion:" in done.stdout
    assert "mlflow ui --backend-store-uri" in done.stdout and "127.0.0.1" in done.stdout
    assert len(list(params.paths.videos.glob("gate_*.mp4"))) == params.sample.n
    assert (tmp_path / "data" / "videos.dvc").is_file() and (tmp_path / "models" / "best.pt.dvc").is_file()
    assert (params.promote.gate_dir / "current" / "manifest.json").is_file()
    info = json.loads(cli(tmp_path, "status", "--json").stdout)
    assert info["champion"] is not None and info["deployed"]["version"] == info["champion"]["version"]
    dvc = subprocess.run(
        [str(Path(sys.executable).with_name("dvc")), "status"], cwd=tmp_path, capture_output=True, text=True
    )
    assert "up to date" in dvc.stdout, dvc.stdout + dvc.stderr
    ready = cli(tmp_path, "doctor", check=False)  # after the demo a rebuild can run
    assert ready.returncode == 0 and "ready for a rebuild" in ready.stdout, ready.stdout + ready.stderr[-3000:]


def test_zero_counts_are_errors_not_defaults(tmp_path: Path, cli, make_params) -> None:
    make_params(tmp_path)
    done = cli(tmp_path, "sample-videos", "--n", "0", check=False)
    assert done.returncode == 2 and "n >= 1" in done.stderr
    assert not (tmp_path / "data" / "videos").exists() or not any((tmp_path / "data" / "videos").iterdir())


def test_help_works_outside_a_project(tmp_path: Path, cli) -> None:
    done = cli(tmp_path, "extract", "--help")
    assert "--videos" in done.stdout
