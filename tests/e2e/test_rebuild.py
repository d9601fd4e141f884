"""The whole workflow: the Prefect flow against a real sqlite MLflow store, then the CLI and DVC over its results."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import copy_project_code
from conftest import run_dvc as dvc

from tasks.pipeline.extract import read_frames_hash
from tasks.pipeline.unchanged import FINGERPRINT_TAG, MATCHED_TAG, UNCHANGED_KIND
from tasks.pipeline.validation_cache import CACHE_KEY
from tasks.runtime.releases import MANIFEST, current_release, gate_id
from tasks.support.config import Params
from tasks.support.project import Project
from tasks.support.registry import aliases_for
from tasks.support.tracking import KIND_TAG, REUSED_VERSION_TAG, client

pytestmark = pytest.mark.e2e

STATUS_KEYS = {
    "name", "precision", "backend", "map50", "map50_95", "map_drop", "latency_p50_ms", "latency_p95_ms", "size_mb",
    "passed", "mlflow_run_id",
}  # fmt: skip


def make_dvc_project(root: Path) -> None:
    """What a clone of the project holds: git, DVC, dvc.yaml and the code its stages depend on; data `dvc add`ed."""
    repo = Path(__file__).resolve().parents[2]
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    dvc(root, "init", "-q")
    copy_project_code(root)
    shutil.copyfile(repo / "dvc.yaml", root / "dvc.yaml")
    dvc(root, "add", "-q", "data/videos", "data/holdout", "models/best.pt")


def test_rebuild_flow_promotes_and_status_reports(project: Params, prefect_api: str, seed_caches, cli) -> None:
    from flows.rebuild import rebuild

    root = project.paths.videos.parents[1]
    seed_caches(project)  # the session built these videos with these params: an unchanged rebuild reuses it all
    make_dvc_project(root)
    out = rebuild(project=Project(project, root, root))

    record, metrics = out["record"], out["metrics"]
    # the declared candidates and the FP32 model at the INT8 candidates' geometry (their quantization's yardstick)
    assert set(metrics) == {"fp32", "fp32-ov", "ov-int8", "ort-int8", "ov-int8-mixed", "fp32@192x320"}
    assert metrics["ov-int8-mixed"]["geometry_reference"] == "fp32@192x320"
    promotion = out["promotion"]
    assert promotion.decision.winner is not None

    # registry: the gate folder's champion alias points at the promoted version of this rebuild
    mc = client(project.tracking)
    scoped = aliases_for(gate_id(project.promote.gate_dir)).champion
    champ = mc.get_model_version_by_alias(project.tracking.registered_model, scoped)
    assert str(champ.version) == promotion.version
    assert champ.run_id == record.candidates[promotion.decision.winner].run_id

    # gate folder: `current` -> the release, whose manifest names the version, run and hash
    release = current_release(project.promote.gate_dir)
    assert release is not None and release.name == f"v{promotion.version}"
    manifest = json.loads((release / MANIFEST).read_text())
    assert manifest["version"] == promotion.version and manifest["run_id"] == champ.run_id
    assert len(manifest["sha256"]) == 64 and "map50_95" in manifest["metrics"]
    assert "openvino" in manifest["toolchain"]

    # the promote flow drew the trade-off chart with the verdicts on the rebuild's parent run
    chart = Path(mc.download_artifacts(record.parent_run_id, "tradeoff", str(root / "chart")))
    assert sorted(f.name for f in chart.iterdir()) == ["tradeoff.csv", "tradeoff.json", "tradeoff.png"]
    drawn = json.loads((chart / "tradeoff.json").read_text())
    assert drawn["decided"] and drawn["winner"] == promotion.decision.winner

    # DVC's metrics file
    doc = json.loads(project.paths.metrics.read_text())
    assert doc["reference"] == "fp32" and doc["speed_reference"] == "fp32-ov" and set(doc["candidates"]) == set(metrics)

    # `alpr-ops status --json` reads it all back from MLflow and the gate folder
    info = json.loads(cli(root, "status", "--json").stdout)
    assert info["champion"]["version"] == promotion.version
    assert {c["name"] for c in info["candidates"]} == set(metrics)
    for cand in info["candidates"]:
        assert set(cand) >= STATUS_KEYS, cand
        assert cand["mlflow_run_id"] == record.candidates[cand["name"]].run_id
    # the speed reference passes its own speed-up gate (1.0 >= 1.0) and FP32's accuracy gates
    assert [c["passed"] for c in info["candidates"] if c["name"] == "fp32-ov"] == [True]
    roles = {c["name"]: c["role"] for c in info["candidates"]}
    assert roles["fp32"] == "accuracy reference" and roles["fp32-ov"] == "speed reference"
    assert info["rebuild"]["mlflow_url"].endswith(f"#/experiments/{record.experiment_id}?workflowType=machine_learning")

    # DVC sees the flow's outputs as its own stages' outputs: nothing to reproduce, data untouched by validation
    assert "up to date" in dvc(root, "status")
    assert "didn't change, skipping" in dvc(root, "repro")

    # and reproducing every stage through DVC gives the same frames and an FP32 reference that scores the same
    # (not the same bytes: Ultralytics embeds the export date in every artifact's metadata)
    frames_before = read_frames_hash(project.paths.calibration)
    dvc(root, "repro", "--force")
    assert read_frames_hash(project.paths.calibration) == frames_before
    again = json.loads(project.paths.metrics.read_text())["candidates"]
    assert set(again) == set(metrics)
    for key in ("map50", "map50_95", "agreement_map50_95"):
        assert again["fp32"][key] == pytest.approx(metrics["fp32"][key], abs=1e-6), key
    assert "up to date" in dvc(root, "status")

    # the same rebuild again (same videos, params, code, hardware): it registers nothing and leaves one small run
    # naming the rebuild it matched, from the flow (a deployment's run) and from the CLI (before Prefect starts)
    name = project.tracking.registered_model
    versions_before = {mv.version for mv in mc.search_model_versions(f"name = '{name}'")}

    def runs(kind: str) -> list:
        return mc.search_runs([record.experiment_id], f"tags.`{KIND_TAG}` = '{kind}'")

    assert [r.info.run_id for r in runs("rebuild")] == [record.parent_run_id]
    assert mc.get_run(record.parent_run_id).data.tags[FINGERPRINT_TAG]
    same = rebuild(project=Project(project, root, root))
    assert same["unchanged"] == record.parent_run_id and same["record"] is None and same["promotion"] is None
    small = mc.get_run(same["mlflow_run_id"])
    assert small.data.tags[MATCHED_TAG] == record.parent_run_id and small.data.tags[KIND_TAG] == UNCHANGED_KIND
    assert not small.data.metrics and not small.data.params  # small: a record, not a rebuild
    done = cli(root, "rebuild")
    assert f"Inputs unchanged since rebuild {record.parent_run_id}" in done.stdout, done.stderr[-2000:]
    assert len(runs(UNCHANGED_KIND)) == 2 and [r.info.run_id for r in runs("rebuild")] == [record.parent_run_id]
    assert {mv.version for mv in mc.search_model_versions(f"name = '{name}'")} == versions_before
    assert current_release(project.promote.gate_dir) == release

    # a changed input rebuilds; its artifacts are the same bytes (build cache), so validation's report is reused
    # (identical rows), their registry versions are reused, and promoting the same champion is a no-op
    keep = project.promote.keep_releases + 1
    changed = project.model_copy(update={"promote": project.promote.model_copy(update={"keep_releases": keep})})
    third = rebuild(project=Project(changed, root, None))
    assert third["unchanged"] is None and third["record"].parent_run_id != record.parent_run_id
    assert third["validation"].metrics == out["validation"].metrics
    assert mc.get_run(third["record"].parent_run_id).data.tags[CACHE_KEY].startswith("hit ")
    assert {mv.version for mv in mc.search_model_versions(f"name = '{name}'")} == versions_before
    for cand, tracked in third["record"].candidates.items():
        assert tracked.version == record.candidates[cand].version, cand
        assert mc.get_run(tracked.run_id).data.tags[REUSED_VERSION_TAG] == tracked.version
    assert third["promotion"].unchanged and "already runs these exact bytes" in third["promotion"].unchanged
    assert current_release(project.promote.gate_dir) == release
