"""`alpr-ops gc`: prune the frame, build and validation caches and old MLflow artifacts, keeping everything in use.

Every cache is a `tasks.support.cache.CacheStore`, pruned by one rule: keep the keys in use, remove the rest.

In use, never pruned:
- frame cache (`paths.frame_cache`): the entries of the videos in `paths.videos` under the current extraction
  parameters and code (what the next rebuild and the nightly check read), and their hash memos;
- build cache (`paths.build_cache`): the entries whose key a `candidate.json` names in `paths.candidates` (the
  latest build), in the gate folder's releases (`current`, the rollback chain), in a kept MLflow run or in a
  candidate's last-build record (`last/`, kept too);
- validation cache (`paths.validation_cache`): the reports a kept rebuild recorded (its parent run's
  `validation_cache` tag: "hit <key>" or "stored <key>");
- MLflow: every run of the latest finished rebuild and of each rebuild that holds an aliased registry version
  (`champion`, `previous`, `challenger`): promotion, rollback and the nightly check download from those (the
  nightly check also reads the champion's FP32 reference, a sibling run), and the run holding the bytes of each
  registry version a kept run reused (`registry.reused_from_run`). Of the other rebuilds, the candidate
  runs' `artifact/` folders (the models: nearly all of the space) are deleted; runs, metrics, tags and plots stay,
  and each pruned run is tagged `alpr.pruned`.

The caller holds the project lock, so no rebuild or promotion changes what is in use while this runs.

"No video" must never read as "no video in use": a videos folder that is not there, or that holds no video while
the frame cache holds entries (an unmounted share leaves its empty mount point), is the watcher's error
(`VideosFolderMissing`) here too, raised before anything is pruned in any area.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.support.cache import Pruned
from tasks.support.candidate import CANDIDATE_JSON
from tasks.support.config import Params
from tasks.support.tracking import ARTIFACT_PATH, KIND_TAG, PARENT_TAG, PRUNED_TAG, REUSED_RUN_TAG, client

log = logging.getLogger(__name__)


@dataclass
class AreaReport:
    """One area: its size now, and what gc removes (or, in a dry run, would remove)."""

    name: str
    where: str
    total_bytes: int = 0
    pruned_bytes: int = 0
    pruned: list[str] = field(default_factory=list)
    kept: int = 0

    def add(self, done: Pruned) -> None:
        """Count what pruning one store of this area did."""
        self.total_bytes += done.total_bytes
        self.pruned_bytes += done.pruned_bytes
        self.pruned += done.pruned
        self.kept += done.kept


@dataclass(frozen=True)
class GcReport:
    dry_run: bool
    areas: tuple[AreaReport, ...]

    @property
    def pruned_bytes(self) -> int:
        return sum(a.pruned_bytes for a in self.areas)


def videos_in_use(params: Params) -> list[Path]:
    """The videos whose frame-cache entries are in use; `VideosFolderMissing` when the folder is not there, or holds
    no video while the frame cache holds entries: the watcher's rule (an empty folder that held videos is an
    unmounted share until shown otherwise), since read as "no video" it would prune the whole frame cache."""
    from tasks.pipeline.extract import frame_store
    from tasks.support.videos import VideosFolderMissing, hash_memos, list_videos

    folder, cache = params.paths.videos, params.paths.frame_cache
    if not folder.is_dir():
        raise VideosFolderMissing(
            f"{folder}: the videos folder is not there (an unmounted share?), so gc cannot tell which "
            "frame-cache entries are in use; mount or restore it (or point paths.videos at it), then run gc again",
            path=str(folder),
        )
    try:
        videos = list_videos(folder)[0]
    except OSError as e:  # a stale network mount, no permission: as the watcher reads it, not "empty"
        raise VideosFolderMissing(
            f"{folder}: the videos folder cannot be read ({e.strerror or e}); is its share mounted? gc pruned nothing",
            path=str(folder),
        ) from e
    held = len(frame_store(cache).keys()) + len(hash_memos(cache).keys())
    if not videos and held:
        raise VideosFolderMissing(
            f"{folder}: the videos folder holds no video, but the frame cache {cache} holds {held} entries made from "
            "videos; is its share mounted? gc pruned nothing. Mount or restore it (or point paths.videos at it) and "
            f"run gc again; if every video is really gone, delete {cache} yourself (it is only a cache)",
            path=str(folder),
        )
    return videos


def frame_cache_area(params: Params, dry_run: bool) -> AreaReport:
    from tasks.pipeline.extract import frame_key, frame_store, params_key
    from tasks.support.videos import file_sha256, hash_memo_key, hash_memos

    cache = params.paths.frame_cache
    area = AreaReport("frame cache", str(cache))
    videos = videos_in_use(params)  # "not there" must not read as "no video in use": it would prune them all
    key = params_key(params.extract)
    area.add(frame_store(cache).prune({frame_key(file_sha256(v, cache), key) for v in videos}, dry_run))
    area.add(hash_memos(cache).prune({hash_memo_key(v) for v in videos}, dry_run))
    return area


def _cache_keys(folders: list[Path]) -> set[str]:
    keys = set()
    for folder in folders:
        try:
            key = json.loads((folder / CANDIDATE_JSON).read_text()).get("cache_key")
        except (OSError, ValueError):
            continue
        if key:
            keys.add(str(key))
    return keys


def build_cache_area(params: Params, kept_run_keys: set[str], dry_run: bool) -> AreaReport:
    from tasks.pipeline.build import build_store, remembered_keys
    from tasks.runtime.releases import gate_paths

    cache = params.paths.build_cache
    area = AreaReport("build cache", str(cache))
    candidates = params.paths.candidates
    releases = gate_paths(params.promote.gate_dir).releases
    folders = [p for root in (candidates, releases) if root.is_dir() for p in root.iterdir() if p.is_dir()]
    # each candidate's last build too: the next build starts there
    keys = _cache_keys(folders) | kept_run_keys | remembered_keys(cache)
    area.add(build_store(cache).prune(keys, dry_run))
    return area


def validation_cache_area(params: Params, kept_reports: set[str], dry_run: bool) -> AreaReport:
    """The validation reports the kept rebuilds recorded (`kept_reports`, from `mlflow_area`); the others go."""
    from tasks.pipeline.validation_cache import validation_store

    cache = params.paths.validation_cache
    area = AreaReport("validation cache", str(cache))
    area.add(validation_store(cache).prune(kept_reports, dry_run))
    return area


def _artifact_bytes(mc: Any, run_id: str, path: str) -> int:
    total = 0
    for item in mc.list_artifacts(run_id, path):
        total += _artifact_bytes(mc, run_id, item.path) if item.is_dir else int(item.file_size or 0)
    return total


def mlflow_area(params: Params, dry_run: bool) -> tuple[AreaReport, set[str], set[str]]:
    """Prune the model artifacts of candidate runs no alias and no latest rebuild needs; returns the area, the
    build-cache keys of the kept candidate runs and the validation-cache keys their rebuilds recorded."""
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    from tasks.pipeline.validation_cache import CACHE_KEY, recorded_key

    tracking = params.tracking
    area = AreaReport("MLflow artifacts", tracking.shown_uri)
    mc = client(tracking)
    exp = mc.get_experiment_by_name(tracking.experiment)
    if exp is None:
        return area, set(), set()
    runs = mc.search_runs([exp.experiment_id], filter_string=f"tags.`{KIND_TAG}` = 'candidate'", max_results=50000)
    parents = mc.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{KIND_TAG}` = 'rebuild' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    keep_parents = {parents[0].info.run_id} if parents else set()
    try:
        aliases = mc.get_registered_model(tracking.registered_model).aliases or {}
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        aliases = {}
    parent_of = {r.info.run_id: r.data.tags.get(PARENT_TAG) for r in runs}
    for alias, version in sorted(aliases.items()):
        run_id = mc.get_model_version(tracking.registered_model, str(version)).run_id
        if run_id not in parent_of:
            raise RuntimeError(f"registry alias {alias} (version {version}) names run {run_id}, not a candidate run")
        keep_parents.add(parent_of[run_id])
    kept_runs = {r.info.run_id for r in runs if parent_of[r.info.run_id] in keep_parents}
    # a kept run whose artifact is a registered version's bytes holds none itself: that version's run holds them
    kept_runs |= {
        r.data.tags[REUSED_RUN_TAG] for r in runs if r.info.run_id in kept_runs and REUSED_RUN_TAG in r.data.tags
    }
    keys: set[str] = set()
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    for run in runs:
        rid = run.info.run_id
        if run.data.tags.get(PRUNED_TAG):
            continue
        size = _artifact_bytes(mc, rid, ARTIFACT_PATH)
        area.total_bytes += size
        if rid in kept_runs or run.info.status != "FINISHED":
            area.kept += 1
            meta = [a for a in mc.list_artifacts(rid, ARTIFACT_PATH) if a.path.endswith(CANDIDATE_JSON)]
            if meta:
                with tempfile.TemporaryDirectory(prefix="alpr-gc-") as tmp:
                    text = Path(mc.download_artifacts(rid, meta[0].path, tmp)).read_text()
                keys.add(str(json.loads(text).get("cache_key", "")))
            continue
        area.pruned_bytes += size
        area.pruned.append(f"{run.data.tags.get('candidate', run.info.run_name)} of rebuild {parent_of[rid]} ({rid})")
        if not dry_run and size:
            get_artifact_repository(run.info.artifact_uri).delete_artifacts(ARTIFACT_PATH)
            mc.set_tag(rid, PRUNED_TAG, stamp)
    keys.discard("")
    reports = {recorded_key(mc.get_run(pid).data.tags.get(CACHE_KEY, "")) for pid in keep_parents if pid}
    return area, keys, {k for k in reports if k}


def collect_garbage(params: Params, dry_run: bool) -> GcReport:
    """Prune the four areas (nothing in a dry run) and report sizes; the caller holds the project lock. Nothing is
    pruned anywhere when the videos in use cannot be told (`videos_in_use`)."""
    videos_in_use(params)
    ml, kept_keys, kept_reports = mlflow_area(params, dry_run)
    areas = (
        frame_cache_area(params, dry_run),
        build_cache_area(params, kept_keys, dry_run),
        validation_cache_area(params, kept_reports, dry_run),
        ml,
    )
    for a in areas:
        log.info(
            "%s %s: %d of %d bytes in %d entries%s",
            "would prune" if dry_run else "pruned",
            a.name,
            a.pruned_bytes,
            a.total_bytes,
            len(a.pruned),
            f", {a.kept} kept" if a.kept else "",
        )
    return GcReport(dry_run, areas)
