"""The `rebuild` Prefect flow: videos -> calibration frames -> candidates -> validation -> MLflow -> promotion.

Prefect decorators live here only; the logic is in `tasks/`, whose plain functions the tests call directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from tasks import build, extract, fetch, promote, track, validate
from tasks.config import Params

# Results are not cached between runs: a rebuild must redo what its inputs say (content-addressed reuse is the
# build task's own business, keyed on hashes, not on Prefect's argument hashing).
verify_model = task(fetch.verify_model, name="verify-model", cache_policy=NO_CACHE)
extract_frames = task(extract.extract_frames, name="extract", cache_policy=NO_CACHE)
build_candidates = task(build.build_candidates, name="build", cache_policy=NO_CACHE)
validate_candidates = task(validate.validate_candidates, name="validate", cache_policy=NO_CACHE)
write_metrics = task(validate.write_metrics, name="write-metrics", cache_policy=NO_CACHE)
lineage = task(track.lineage, name="lineage", cache_policy=NO_CACHE)
log_rebuild = task(track.log_rebuild, name="track", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
promote_winner = task(promote.promote, name="promote", cache_policy=NO_CACHE)


@flow(name="rebuild", log_prints=False)
def rebuild(params: Params, root: Path) -> dict[str, Any]:
    """Rebuild every candidate from the videos in `params.paths.videos` and promote the winner."""
    p = params.paths
    model = verify_model(p.model, params.model.sha256)
    frames = extract_frames(p.videos, p.calibration, p.calibration_yaml, params.extract, params.model.names)
    built = build_candidates(
        model, frames.dataset_yaml, p.candidates, params.build, params.model.sha256, frames.frames_hash
    )
    metrics = validate_candidates(built, p.holdout, params.build.reference, params.validate_)
    write_metrics(p.metrics, params.build.reference, metrics)
    tags = lineage(root, frames.frames_hash, params.model.sha256, p.videos.with_suffix(".dvc"))
    record = log_rebuild(params, built, metrics, tags)
    result = None
    if params.promote.auto:
        result = promote_winner(
            record, metrics, built, params.promote, params.tracking, p.holdout, params.validate_.imgsz
        )
    return {"record": record, "metrics": metrics, "promotion": result, "extract": frames}
