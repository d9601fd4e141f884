"""MLflow tracking, registry and deployment against a real sqlite store and a real gate folder."""

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import another_build
from mlflow.exceptions import MlflowException

from tasks.operations.promote import promote
from tasks.operations.smoke import SmokeTestError
from tasks.operations.status import status
from tasks.pipeline.track import client, latest_rebuild, lineage, log_rebuild
from tasks.runtime.releases import MANIFEST, current_release, gate_id
from tasks.support.config import Params, PromoteConfig
from tasks.support.registry import aliases_for

pytestmark = pytest.mark.integration


def by_alias(store: Params, which: str):
    """The version holding the gate folder's own `champion` / `previous` alias."""
    scoped = getattr(aliases_for(gate_id(store.promote.gate_dir)), which)
    return client(store.tracking).get_model_version_by_alias(store.tracking.registered_model, scoped)


def tags(params: Params, candidates: list) -> dict:
    return lineage(Path.cwd(), candidates[0].frames_hash, params.model.sha256, params.paths.videos.with_suffix(".dvc"))


def test_rebuild_is_logged_with_lineage_runs_and_registry_versions(store: Params, built: tuple, validated: dict):
    _, candidates = built
    record = log_rebuild(store, candidates, validated, tags(store, candidates))
    mc = client(store.tracking)
    parent = mc.get_run(record.parent_run_id)
    assert parent.data.tags["alpr.kind"] == "rebuild"
    assert parent.data.tags["frames_hash"] == candidates[0].frames_hash
    assert len(parent.data.tags["git_commit"]) >= 7
    assert parent.data.params["extract.interval_s"] == "0.5"
    for cand in candidates:
        tracked = record.candidates[cand.name]
        run = mc.get_run(tracked.run_id)
        assert run.data.tags["mlflow.parentRunId"] == record.parent_run_id
        assert run.data.metrics["map50_95"] == pytest.approx(validated[cand.name]["map50_95"])
        assert run.data.metrics["latency_p95_ms"] == pytest.approx(validated[cand.name]["latency_p95_ms"])
        assert run.data.params["precision"] == cand.precision
        shape = "x".join(str(v) for v in cand.input_shape)  # INT8 at the camera's shape, FP32 square
        assert run.data.params["input_shape"] == run.data.tags["input_shape"] == shape, cand.name
        files = {f.path for f in mc.list_artifacts(tracked.run_id, "artifact")}
        assert f"artifact/{cand.artifact}" in files and "artifact/candidate.json" in files
        mv = mc.get_model_version(store.tracking.registered_model, tracked.version)
        assert mv.run_id == tracked.run_id and mv.tags["frames_hash"] == cand.frames_hash
    again, metrics = latest_rebuild(store.tracking)
    assert again.parent_run_id == record.parent_run_id
    assert metrics["ov-int8"]["map50_95"] == pytest.approx(validated["ov-int8"]["map50_95"])


def test_promotion_deploys_the_winner_and_moves_aliases(
    store: Params, built: tuple, validated: dict, tmp_path: Path
) -> None:
    _, candidates = built
    by_name = {c.name: c for c in candidates}
    record = log_rebuild(store, candidates, validated, tags(store, candidates))
    result = promote(record, validated, store.promote, store.tracking, store.paths.holdout, store.validate_)
    assert result.decision.winner is not None
    winner = record.candidates[result.decision.winner]
    mc = client(store.tracking)
    assert str(by_alias(store, "champion").version) == winner.version
    gate = store.promote.gate_dir
    assert current_release(gate) == (gate / "releases" / f"v{winner.version}").resolve()
    manifest = json.loads((gate / "current" / MANIFEST).read_text())
    assert manifest["run_id"] == winner.run_id and manifest["version"] == winner.version
    assert manifest["metrics"]["map50_95"] == pytest.approx(validated[result.decision.winner]["map50_95"])
    meta = json.loads((gate / "current" / "candidate.json").read_text())
    assert manifest["sha256"] == meta["sha256"]
    assert manifest["input_shape"] == meta["input_shape"] == list(by_name[result.decision.winner].input_shape)
    verdict = mc.get_run(winner.run_id).data.tags
    assert verdict["gate.passed"] == "true"

    # a second rebuild of the same bytes registers nothing (each version reused, keeping its own run), and promoting
    # the bytes the gate runs is a no-op that says so: no new release, no alias moved
    versions = {mv.version for mv in mc.search_model_versions(f"name = '{store.tracking.registered_model}'")}
    record2 = log_rebuild(store, candidates, validated, tags(store, candidates))
    assert {n: t.version for n, t in record2.candidates.items()} == {n: t.version for n, t in record.candidates.items()}
    assert {mv.version for mv in mc.search_model_versions(f"name = '{store.tracking.registered_model}'")} == versions
    reused = mc.get_model_version(store.tracking.registered_model, winner.version)
    assert reused.run_id == winner.run_id and record2.candidates[result.decision.winner].run_id != winner.run_id
    latest, _ = latest_rebuild(store.tracking)  # what `alpr-ops promote` reads back: the reused versions, their bytes
    assert latest.parent_run_id == record2.parent_run_id
    assert {n: (t.version, t.source) for n, t in latest.candidates.items()} == {
        n: (t.version, record.candidates[n].source) for n, t in record2.candidates.items()
    }
    result2 = promote(record2, validated, store.promote, store.tracking, store.paths.holdout, store.validate_)
    assert result2.version == winner.version and "already runs these exact bytes" in result2.unchanged
    assert current_release(gate) == (gate / "releases" / f"v{winner.version}").resolve()
    assert sorted(p.name for p in (gate / "releases").iterdir()) == [f"v{winner.version}"]
    assert str(by_alias(store, "champion").version) == winner.version

    # a rebuild with another build of the winner (other bytes) promotes again: `previous` keeps the old champion
    fresh = another_build(candidates_by_name(candidates)[result.decision.winner], tmp_path / "builds")
    rows = {fresh.name: validated[fresh.name]}
    record3 = log_rebuild(store, [fresh], rows, tags(store, candidates))
    result3 = promote(record3, rows, store.promote, store.tracking, store.paths.holdout, store.validate_)
    assert result3.version not in versions and not result3.unchanged
    assert str(by_alias(store, "previous").version) == winner.version
    assert str(by_alias(store, "champion").version) == result3.version
    info = status(store.tracking, store.promote)
    assert info["champion"]["version"] == result3.version
    assert info["deployed"]["version"] == result3.version
    assert {c["name"] for c in info["candidates"]} == {fresh.name}


def candidates_by_name(candidates: list) -> dict:
    return {c.name: c for c in candidates}


def test_nothing_passes_leaves_champion_and_current_untouched(store: Params, built: tuple, validated: dict) -> None:
    _, candidates = built
    record = log_rebuild(store, candidates, validated, tags(store, candidates))
    first = promote(record, validated, store.promote, store.tracking, store.paths.holdout, store.validate_)
    before = os.readlink(store.promote.gate_dir / "current")
    worse = {k: {**v, "map_drop": 0.5} for k, v in validated.items()}
    strict = PromoteConfig(max_map_drop=0.01, gate_dir=store.promote.gate_dir)
    result = promote(record, worse, strict, store.tracking, store.paths.holdout, store.validate_)
    assert result.decision.winner is None and result.version is None
    assert os.readlink(store.promote.gate_dir / "current") == before
    mc = client(store.tracking)
    assert str(by_alias(store, "champion").version) == first.version
    assert mc.get_run(record.candidates["fp32"].run_id).data.tags["gate.passed"] == "false"


def test_artifact_that_fails_the_smoke_test_is_not_deployed(store: Params, built: tuple, validated: dict, tmp_path):
    _, candidates = built
    broken_dir = tmp_path / "broken"
    shutil.copytree(candidates[0].folder, broken_dir)
    broken = candidates[0].__class__(**{**candidates[0].__dict__, "folder": broken_dir})
    (broken_dir / broken.artifact).write_bytes(b"not an onnx model")
    meta = json.loads((broken_dir / "candidate.json").read_text())
    from tasks.support.hashing import path_sha256

    meta["sha256"] = path_sha256(broken_dir / broken.artifact)
    (broken_dir / "candidate.json").write_text(json.dumps(meta))
    broken = broken.__class__(**{**broken.__dict__, "sha256": meta["sha256"]})
    record = log_rebuild(store, [broken], {broken.name: validated[broken.name]}, tags(store, candidates))
    with pytest.raises(SmokeTestError, match="failed to load or run"):
        metrics = {broken.name: validated[broken.name]}
        promote(record, metrics, store.promote, store.tracking, store.paths.holdout, store.validate_)
    gate = store.promote.gate_dir
    assert current_release(gate) is None
    assert [p.name for p in (gate / "releases").iterdir()] == [], "a failed release was left in releases/"
    with pytest.raises(MlflowException, match="alias"):
        by_alias(store, "champion")


def test_promoting_the_live_version_again_keeps_the_release_in_place(store: Params, built: tuple, validated: dict):
    import stat

    _, candidates = built
    record = log_rebuild(store, candidates, validated, tags(store, candidates))
    first = promote(record, validated, store.promote, store.tracking, store.paths.holdout, store.validate_)
    inode = first.release.stat().st_ino
    again = promote(record, validated, store.promote, store.tracking, store.paths.holdout, store.validate_)
    assert again.release == first.release and again.release.stat().st_ino == inode, "live release was replaced"
    # the gate runtime may run as another user: releases are readable like ordinary files
    assert stat.S_IMODE(first.release.stat().st_mode) & 0o005 == 0o005
    assert stat.S_IMODE((first.release / MANIFEST).stat().st_mode) & 0o004
