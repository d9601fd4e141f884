"""A rebuild logged to MLflow (lineage, one run per candidate, registry versions) against a real sqlite store.

Its promotion is tested in test_promotion.py."""

from pathlib import Path

import pytest

from tasks.pipeline.lineage import lineage
from tasks.pipeline.track import latest_rebuild, log_rebuild
from tasks.pipeline.validate import GEOMETRY_ROLE
from tasks.support.config import Params
from tasks.support.tracking import client

pytestmark = pytest.mark.integration


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
        if validated[cand.name]["role"] == GEOMETRY_ROLE:  # FP32 at the INT8 geometry: compared, not timed
            assert "latency_p95_ms" not in run.data.metrics and run.data.tags["role"] == GEOMETRY_ROLE
        else:
            assert run.data.metrics["latency_p95_ms"] == pytest.approx(validated[cand.name]["latency_p95_ms"])
        for key in ("map_drop_ci", "quant_map_drop_ci", "geometry_map_drop_ci"):  # an interval: two metrics
            if key in validated[cand.name]:
                low, high = validated[cand.name][key]
                assert (run.data.metrics[f"{key}_low"], run.data.metrics[f"{key}_high"]) == (low, high), cand.name
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
    assert metrics["ov-int8"]["geometry_reference"] == "fp32@192x320"  # what the smoke test and the nightly read
