"""Issue 15, defect 8: `alpr-ops gc` prunes the frame cache, the build cache, the validation cache and old MLflow
model artifacts, with a dry run and a size report, and never touches what the champion, `previous` or the latest
rebuild use."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import another_build

from tasks.demo.synth import SynthConfig
from tasks.pipeline.track import log_rebuild
from tasks.pipeline.validation_cache import CACHE_KEY, validation_store
from tasks.support.config import Params
from tasks.support.registry import CHAMPION, PREVIOUS, set_alias
from tasks.support.tracking import ARTIFACT_PATH, client
from testkit.clips import encode_clip, scene_frames

pytestmark = pytest.mark.integration


def test_gc_prunes_only_what_nothing_uses(store: Params, built: tuple, tmp_path: Path) -> None:
    from tasks.operations.gc import collect_garbage

    session, candidates = built
    fp32 = next(c for c in candidates if c.name == session.build.reference)
    # caches of its own (copies of the session's, which other tests read), plus entries nothing uses
    caches = {"frame_cache": tmp_path / "frames", "build_cache": tmp_path / "build", "validation_cache": tmp_path / "v"}
    paths = store.paths.model_copy(update=caches)
    params = store.model_copy(update={"paths": paths})
    shutil.copytree(session.paths.frame_cache, paths.frame_cache)
    shutil.copytree(session.paths.build_cache, paths.build_cache)
    in_use_frames = sorted(p.name for p in (paths.frame_cache / "entries").iterdir())
    in_use_builds = sorted(p.name for p in paths.build_cache.iterdir())
    (paths.frame_cache / "entries" / ("0" * 64)).mkdir()  # a removed video's frames
    (paths.frame_cache / "entries" / ("0" * 64 + "-old")).mkdir()
    (paths.frame_cache / "entries" / ("0" * 64 + "-old") / "f.jpg").write_bytes(b"x" * 1000)
    (paths.build_cache / ("f" * 64)).mkdir()  # a candidate built from frames no longer used
    (paths.build_cache / ("f" * 64) / "model.onnx").write_bytes(b"x" * 5000)
    # three rebuilds: the oldest is pruned; `previous`, and the latest (the champion), are kept
    copies = [another_build(fp32, tmp_path / "builds") for _ in range(3)]  # other bytes each: a version each
    runs = [
        log_rebuild(params, [b], {b.name: {"map50_95": 0.5}}, {"frames_hash": f"h{i}"}) for i, b in enumerate(copies)
    ]
    mc = client(params.tracking)
    name = params.tracking.registered_model
    set_alias(mc, name, PREVIOUS, runs[1].candidates[fp32.name].version)
    set_alias(mc, name, CHAMPION, runs[2].candidates[fp32.name].version)
    run_ids = [r.candidates[fp32.name].run_id for r in runs]

    dry = collect_garbage(params, dry_run=True)
    frames, builds, _, ml = dry.areas
    assert ml.pruned == [f"fp32 of rebuild {runs[0].parent_run_id} ({run_ids[0]})"] and ml.pruned_bytes > 0
    assert sorted(builds.pruned) == ["f" * 64] and builds.pruned_bytes == 5000
    assert sorted(frames.pruned) == ["0" * 64, "0" * 64 + "-old"] and frames.pruned_bytes == 1000
    assert all(a.total_bytes >= a.pruned_bytes for a in dry.areas)
    assert all(mc.list_artifacts(rid, ARTIFACT_PATH) for rid in run_ids)  # a dry run deletes nothing
    assert (paths.build_cache / ("f" * 64)).is_dir()

    done = collect_garbage(params, dry_run=False)
    assert [a.pruned for a in done.areas] == [a.pruned for a in dry.areas]
    assert mc.list_artifacts(run_ids[0], ARTIFACT_PATH) == []
    assert all(mc.list_artifacts(rid, ARTIFACT_PATH) for rid in run_ids[1:])  # previous and champion
    assert sorted(p.name for p in (paths.frame_cache / "entries").iterdir()) == in_use_frames
    assert sorted(p.name for p in paths.build_cache.iterdir()) == in_use_builds
    assert collect_garbage(params, dry_run=True).pruned_bytes == 0  # nothing left to prune

    # the pruned bytes built again: a new version (the pruned one's run no longer holds them), and a later rebuild of
    # the same bytes reuses it; gc keeps the run that holds them although its rebuild is neither latest nor aliased
    again = log_rebuild(params, [copies[0]], {fp32.name: {"map50_95": 0.5}}, {"frames_hash": "h3"})
    fresh = again.candidates[fp32.name]
    assert int(fresh.version) > int(runs[2].candidates[fp32.name].version)
    latest = log_rebuild(params, [copies[0]], {fp32.name: {"map50_95": 0.5}}, {"frames_hash": "h4"})
    assert latest.candidates[fp32.name].version == fresh.version
    assert collect_garbage(params, dry_run=False).pruned_bytes == 0
    assert mc.list_artifacts(fresh.run_id, ARTIFACT_PATH)


def test_gc_keeps_the_validation_reports_of_kept_rebuilds_only(store: Params, built: tuple, tmp_path: Path) -> None:
    """A validation report is in use while a kept rebuild (the latest, or one holding an aliased version) names it on
    its parent run; the reports of pruned rebuilds, and reports no rebuild recorded, go."""
    from tasks.operations.gc import collect_garbage

    session, candidates = built
    fp32 = next(c for c in candidates if c.name == session.build.reference)
    caches = {"frame_cache": tmp_path / "frames", "build_cache": tmp_path / "build", "validation_cache": tmp_path / "v"}
    params = store.model_copy(update={"paths": store.paths.model_copy(update=caches)})
    copies = [another_build(fp32, tmp_path / "builds") for _ in range(3)]
    runs = [
        log_rebuild(params, [b], {b.name: {"map50_95": 0.5}}, {"frames_hash": f"h{i}"}) for i, b in enumerate(copies)
    ]
    mc = client(params.tracking)
    set_alias(mc, params.tracking.registered_model, CHAMPION, runs[1].candidates[fp32.name].version)
    reports = validation_store(params.paths.validation_cache)
    for i, run in enumerate(runs):  # what each rebuild's validation step recorded (`log_rebuild` tags the report's)
        reports.put_bytes(str(i) * 64, b"report" * 10)
        mc.set_tag(run.parent_run_id, CACHE_KEY, f"{'stored' if i < 2 else 'hit'} {str(i) * 64}")
    reports.put_bytes("e" * 64, b"x" * 300)  # stored by a rebuild that failed before MLflow recorded it

    dry = collect_garbage(params, dry_run=True)
    validation = next(a for a in dry.areas if a.name == "validation cache")
    assert sorted(validation.pruned) == ["0" * 64 + ".pickle", "e" * 64 + ".pickle"] and validation.kept == 2
    assert validation.pruned_bytes == 360 and len(reports.keys()) == 4  # a dry run deletes nothing

    collect_garbage(params, dry_run=False)
    assert reports.keys() == {"1" * 64, "2" * 64}  # the champion's rebuild, and the latest


def test_gc_with_an_empty_videos_folder_prunes_nothing(tmp_path: Path, make_params) -> None:
    """Issue item 7: with the videos folder empty (an unmounted share leaves its empty mount point) gc would prune
    the whole frame cache. The watcher's rule: empty while the cache holds entries of videos is the folder missing,
    an error, raised before any area is pruned; once the share is back, gc keeps every entry of its videos."""
    from tasks.operations.gc import collect_garbage
    from tasks.pipeline.extract import extract_frames
    from tasks.support.videos import VideosFolderMissing

    small = SynthConfig(width=160, height=120, fps=10)
    params = make_params(tmp_path, extract={"interval_s": 0.5, "max_frames_per_video": 2, "holdout_fraction": 0.0})
    p = params.paths
    for i in range(2):
        encode_clip(p.videos / f"v{i}.mp4", scene_frames(i, 10, small), small.fps)
    extract_frames(p.videos, p.calibration, p.calibration_yaml, params.extract, params.model.names, None, p.frame_cache)
    cache = sorted(str(f.relative_to(p.frame_cache)) for f in p.frame_cache.rglob("*"))
    assert len(list((p.frame_cache / "entries").iterdir())) == 2

    share = tmp_path / "share"
    p.videos.rename(share)  # unmounted: the mount point stays, empty
    p.videos.mkdir()
    for dry_run in (True, False):
        with pytest.raises(VideosFolderMissing, match=r"holds no video, but the frame cache .* holds 4 entries"):
            collect_garbage(params, dry_run=dry_run)
    assert sorted(str(f.relative_to(p.frame_cache)) for f in p.frame_cache.rglob("*")) == cache

    p.videos.rmdir()
    share.rename(p.videos)  # the share is back
    frames = collect_garbage(params, dry_run=False).areas[0]
    assert frames.pruned == [] and frames.kept == 4
    assert sorted(str(f.relative_to(p.frame_cache)) for f in p.frame_cache.rglob("*")) == cache
