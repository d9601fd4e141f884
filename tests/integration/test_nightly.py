"""The nightly regression check against a real INT8 champion, a real MLflow store and real Prefect: an unchanged
champion passes, much darker newest videos fail the run with a clear message, no champion is a clear error."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tasks.operations import regression as reg
from tasks.operations.regression import RegressionError, RegressionReport, find_champion
from tasks.pipeline.lineage import lineage
from tasks.pipeline.track import log_rebuild
from tasks.support.config import ExtractConfig, NightlyConfig, Params, TrackingConfig, ValidateConfig
from tasks.support.errors import Remedy
from tasks.support.tracking import KIND_TAG, client

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CHAMPION = "ov-int8"  # a real INT8 champion (Ultralytics' OpenVINO export), checked against the FP32 reference
GEOMETRY = "fp32@192x320"  # FP32 at the champion's geometry: what validation and the nightly compare it with
DARK_GAIN = 0.25  # "much darker": every pixel at a quarter of its value (night without IR lighting)


def darken(src: Path, dst: Path, gain: float) -> Path:
    """Re-encode a video with every pixel scaled by `gain` (PyAV decode, tasks/demo/synth.py's encoder)."""
    import av

    from testkit.clips import encode_clip

    with av.open(str(src)) as c:
        fps = round(float(c.streams.video[0].average_rate))
        frames = [
            np.clip(f.to_ndarray(format="bgr24").astype(np.float32) * gain, 0, 255).astype(np.uint8)
            for f in c.decode(video=0)
        ]
    return encode_clip(dst, frames, fps)


def with_nightly(params: Params, **changes) -> Params:
    return params.model_copy(update={"nightly": params.nightly.model_copy(update=changes)})


@pytest.fixture
def harness(prefect_api: str) -> str:
    """The session's Prefect server (tests/conftest.py) runs the flows."""
    return prefect_api


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory, built: tuple, validated: dict) -> Params:
    """A project with its own videos, frame cache, MLflow store and gate folder, whose deployed champion is the
    INT8 candidate of a logged rebuild that also logged the FP32 reference (module-scoped: the tests only read it)."""
    from tasks.demo.synth import SynthConfig, write_videos
    from tasks.operations.promote import promote
    from tasks.pipeline.extract import extract_frames

    params, candidates = built
    root = tmp_path_factory.mktemp("nightly")
    # the session's 3 s videos show almost no plate in their holdout split: 6 s ones of another seed show some
    s = params.sample
    write_videos(root / "videos", 3, 6.0, 5, SynthConfig(width=s.width, height=s.height, fps=s.fps))
    paths = params.paths.model_copy(update={"videos": root / "videos", "frame_cache": root / "frames"})
    extract = params.extract.model_copy(update={"max_frames_per_video": 10})
    tracking = params.tracking.model_copy(
        update={"uri": f"sqlite:///{root / 'mlflow.db'}", "artifacts": root / "mlartifacts"}
    )
    # test-sized footage gives few plates: gates any real INT8 export of this detector passes at imgsz 320
    gates = {"gate_dir": root / "gate", "max_map_drop": 0.2, "min_agreement": 0.5, "max_p95_ms": 10_000.0}
    gates |= {"min_speedup": 0.01, "max_quant_drop": 0.2}
    # agreement on ~10 frames moves by several points from one box: the drop gate is widened to test-sized data
    nightly = params.nightly.model_copy(update={"max_agreement_drop": 0.15, "min_agreement": 0.5})
    store = params.model_copy(
        update={
            "paths": paths,
            "extract": extract,
            "tracking": tracking,
            "promote": params.promote.model_copy(update=gates),
            "nightly": nightly,
        }
    )
    # the rebuild's extraction filled the frame cache (the nightly check reuses it, never writes into it)
    data = root / "data"
    names = store.model.names
    extract_frames(paths.videos, data / "cal", data / "c.yaml", extract, names, data / "hf", paths.frame_cache)
    logged = [c for c in candidates if c.name in ("fp32", GEOMETRY, CHAMPION)]  # FP32 square and at its geometry
    tags = lineage(ROOT, logged[0].frames_hash, store.model.sha256, paths.videos.with_suffix(".dvc"), paths.videos)
    record = log_rebuild(store, logged, {c.name: validated[c.name] for c in logged}, tags)
    # the decision is restricted to the INT8 candidate, so the champion is INT8 whatever the latencies today
    result = promote(
        record, {CHAMPION: validated[CHAMPION]}, store.promote, store.tracking, store.paths.holdout, store.validate_
    )
    assert result.decision.winner == CHAMPION, result.decision.explain()
    return store


def check_champion(
    gate_dir: Path,
    tracking: TrackingConfig,
    reference: str,
    videos_dir: Path,
    holdout_dir: Path,
    frame_cache: Path,
    extract_cfg: ExtractConfig,
    names: tuple[str, ...],
    vcfg: ValidateConfig,
    cfg: NightlyConfig,
) -> RegressionReport:
    """The whole check as plain calls, the steps the `nightly-regression` flow runs as Prefect tasks."""
    champion = reg.find_champion(gate_dir, tracking)
    with tempfile.TemporaryDirectory(prefix="alpr-nightly-") as tmp:
        work = Path(tmp)
        ref = reg.fetch_reference(tracking, champion, reference, work)
        baseline = reg.baseline_videos(tracking, champion)
        sample = reg.sample_frames(videos_dir, extract_cfg, names, frame_cache, cfg.newest_videos, baseline, work)
        metrics = reg.measure(champion, ref, sample, holdout_dir, vcfg, work)
    return reg.log_nightly(tracking, reg.make_report(champion, ref, sample, metrics, cfg))


def failing_run(params: Params) -> reg.RegressionFailed:
    """Run the `nightly-regression` flow, which must fail with a regression verdict; the error, with its report."""
    from flows.nightly import nightly_regression

    state = nightly_regression(params=params, return_state=True)
    assert state.is_failed()
    with pytest.raises(reg.RegressionFailed) as e:
        state.result()
    print(e.value.report.explain(), e.value.report.metrics)
    return e.value


def nightly_runs(params: Params) -> list:
    mc = client(params.tracking)
    exp = mc.get_experiment_by_name(params.tracking.experiment)
    return mc.search_runs([exp.experiment_id], filter_string=f"tags.`{KIND_TAG}` = 'nightly'")


def test_unchanged_champion_passes_and_is_logged(champion: Params, harness, tmp_path: Path, cli) -> None:
    from flows.nightly import nightly_regression

    entries = sorted(p.name for p in (champion.paths.frame_cache / "entries").iterdir())
    state = nightly_regression(params=champion, return_state=True)
    assert state.is_completed(), state.message
    report = state.result()
    print(report.explain(), report.metrics)
    assert report.passed and report.champion_candidate == CHAMPION
    assert report.reference_note.startswith(f"'{GEOMETRY}' (FP32 at the champion's geometry)"), report.reference_note
    gates = {"agreement", "agreement_drop", "brightness_change", "reference_boxes", "roi"}
    assert {c.gate for c in report.checks} == gates
    assert report.roi_crop == () and report.metrics["roi_frames_outside"] == 0  # a full-frame champion: nothing outside
    assert report.metrics["agreement_map50_95"] >= champion.nightly.min_agreement
    # the newest videos are the champion's own footage: their holdout video is about as bright as all three
    assert abs(report.metrics["brightness_change"]) < champion.nightly.max_brightness_change
    assert report.metrics["newest_boxes_reference"] >= 1
    assert (report.metrics["videos_cached"], report.metrics["videos_decoded"]) == (3, 0)
    assert sorted(p.name for p in (champion.paths.frame_cache / "entries").iterdir()) == entries
    assert report.frames > 0 and "holdout-split" in report.frames_source
    run = client(champion.tracking).get_run(report.mlflow_run_id)
    assert run.data.tags[KIND_TAG] == "nightly" and run.data.tags["nightly.passed"] == "true"
    assert run.data.tags["champion_version"] == report.champion_version
    assert run.data.metrics["agreement_map50_95"] == pytest.approx(report.metrics["agreement_map50_95"])
    files = {f.path for f in client(champion.tracking).list_artifacts(report.mlflow_run_id, "nightly")}
    assert files == {"nightly/verdict.json"}
    # the CLI, from a project whose params.yaml names the same store, gate folder and videos
    project = tmp_path / "project"
    project.mkdir()
    (project / "params.yaml").write_text(champion.model_dump_json(by_alias=True))  # YAML is a superset of JSON
    done = cli(project, "nightly")
    assert "agreement_drop" in done.stdout and "FAIL" not in done.stdout
    assert len(nightly_runs(champion)) == 2


def test_much_darker_newest_videos_fail_the_flow_and_the_cli(champion: Params, harness, tmp_path: Path, cli) -> None:
    videos = tmp_path / "videos"
    shutil.copytree(champion.paths.videos, videos)
    for i, src in enumerate(sorted(videos.glob("*.mp4"))[:2]):
        night = darken(src, videos / f"night_{i:02d}.mp4", DARK_GAIN)
        os.utime(night, (src.stat().st_mtime + 3600 + i,) * 2)  # newer than every day video
    params = champion.model_copy(update={"paths": champion.paths.model_copy(update={"videos": videos})})
    params = with_nightly(params, newest_videos=2)
    before = os.readlink(params.promote.gate_dir / "current")

    failed = failing_run(params)
    report = failed.report
    assert not report.passed and set(report.videos) == {"night_00.mp4", "night_01.mp4"}
    assert (report.metrics["videos_cached"], report.metrics["videos_decoded"]) == (3, 2)
    assert len(list((params.paths.frame_cache / "entries").iterdir())) == 3, "the shared frame cache was written"
    broken = {c.gate for c in report.broken}
    assert "brightness_change" in broken
    message = str(failed)
    assert "FAIL: brightness_change" in message and "nightly.max_brightness_change" in message
    assert "much darker" in message and "check the cameras" in message
    assert failed.remedy is Remedy.REBUILD_OR_ROLLBACK
    assert report.metrics["brightness"] < 0.5 * report.metrics["baseline_brightness"]
    run = client(params.tracking).get_run(report.mlflow_run_id)
    assert run.data.tags["nightly.passed"] == "false" and run.data.tags["gate.brightness_change"].startswith("fail")
    assert os.readlink(params.promote.gate_dir / "current") == before, "the nightly check must not touch the gate"

    project = tmp_path / "project"
    project.mkdir()
    (project / "params.yaml").write_text(params.model_dump_json(by_alias=True))
    done = cli(project, "nightly", check=False)
    assert done.returncode == 1
    assert "FAIL" in done.stdout and "brightness_change" in done.stdout
    assert "nightly.max_brightness_change" in done.stderr and "much darker" in done.stderr
    assert "alpr-ops rebuild" in done.stderr and "alpr-ops rollback" in done.stderr
    verdict = json.loads(params.paths.nightly_verdict.read_text())  # what `alpr-ops status` shows
    assert verdict["verdict"] == "fail" and "brightness_change" in verdict["broken"] and verdict["checked_at"]
    assert run.data.tags["nightly.verdict"] == "fail"


def test_plates_outside_the_champions_region_of_interest_fail_the_flow(champion: Params, harness, tmp_path: Path):
    """A champion whose crop (written into its release's candidate.json) is the top-left corner of the frame, where
    the synthetic camera shows sky and facade: every plate FP32 finds on the newest frames lies outside it, so the
    camera's view "has changed", and the verdict names the frames."""
    gate = tmp_path / "gate"
    shutil.copytree(champion.promote.gate_dir, gate, symlinks=True)
    s = champion.sample
    crop = [0, 0, s.width // 4, s.height // 4]
    meta = json.loads((gate / "current" / "candidate.json").read_text())
    (gate / "current" / "candidate.json").write_text(
        json.dumps({**meta, "crop": crop, "frame_shape": [s.height, s.width]})
    )
    paths = champion.paths.model_copy(update={"nightly_verdict": tmp_path / "nightly.json"})
    params = champion.model_copy(
        update={"paths": paths, "promote": champion.promote.model_copy(update={"gate_dir": gate})}
    )
    failed = failing_run(params)
    report = failed.report
    assert "roi" in {c.gate for c in report.broken} and report.roi_crop == tuple(crop)
    # every FP32 plate of the newest frames is outside the crop, on more frames than the default allows
    assert report.metrics["roi_plates_outside"] == report.metrics["newest_boxes_reference"] >= 1
    frames = report.outside_roi
    assert report.metrics["roi_frames_outside"] == len(frames) > params.nightly.max_frames_outside_roi
    message = str(failed)
    assert "FAIL: roi" in message and "nightly.max_frames_outside_roi" in message
    assert "camera's view has changed" in message and "alpr-ops rebuild" in message and frames[0] in message
    verdict = json.loads(params.paths.nightly_verdict.read_text())  # what `alpr-ops status` shows
    assert verdict["broken"] == [c.gate for c in report.broken] and verdict["roi"]["frames"] == list(frames)
    run = client(params.tracking).get_run(report.mlflow_run_id)
    assert run.data.tags["gate.roi"].startswith("fail")
    assert run.data.metrics["roi_frames_outside"] == len(frames)


def test_no_champion_is_a_clear_error(champion: Params, harness, tmp_path: Path, cli) -> None:
    from flows.nightly import nightly_regression

    params = champion.model_copy(update={"promote": champion.promote.model_copy(update={"gate_dir": tmp_path / "g"})})
    state = nightly_regression(params=params, return_state=True)
    assert state.is_failed() and "no champion is deployed" in state.message
    with pytest.raises(RegressionError, match=r"no champion is deployed") as e:
        find_champion(params.promote.gate_dir, params.tracking)
    assert e.value.remedy is Remedy.PROMOTE
    with pytest.raises(RegressionError, match="no champion is deployed"):
        p = params.paths
        check_champion(
            params.promote.gate_dir, params.tracking, params.build.reference, p.videos, p.holdout, p.frame_cache,
            params.extract, params.model.names, params.validate_, params.nightly,
        )  # fmt: skip
    (tmp_path / "params.yaml").write_text(params.model_dump_json(by_alias=True))
    done = cli(tmp_path, "nightly", check=False)
    assert done.returncode == 3 and "no champion is deployed" in done.stderr and "alpr-ops rebuild" in done.stderr


def test_a_swapped_champion_or_reference_is_refused(champion: Params, built: tuple, tmp_path: Path) -> None:
    """Issue 15: the nightly check loads neither a deployed release whose artifact is not the one promotion verified,
    nor an FP32 reference whose artifact in the store is not the one its rebuild recorded."""
    import json
    from urllib.parse import unquote, urlparse

    from tasks.support.errors import AlprError
    from tasks.support.hashing import path_sha256

    def swap(folder: Path, other: Path) -> None:  # another valid model in place, candidate.json rewritten to match
        meta = json.loads((folder / "candidate.json").read_text())
        target = folder / meta["artifact"]
        shutil.rmtree(target) if target.is_dir() else target.unlink()
        (shutil.copytree if other.is_dir() else shutil.copyfile)(other, target)
        meta["sha256"] = path_sha256(target)
        (folder / "candidate.json").write_text(json.dumps(meta))

    by_name = {c.name: c for c in built[1]}
    gate = tmp_path / "gate"
    shutil.copytree(champion.promote.gate_dir, gate, symlinks=True)
    swap(gate / "current", by_name["ov-int8-mixed"].path)
    with pytest.raises(AlprError, match="sha256"):
        find_champion(gate, champion.tracking)

    found = find_champion(champion.promote.gate_dir, champion.tracking)
    run = client(champion.tracking).get_run(found.run_id)
    # the reference the check fetches: FP32 at the champion's geometry
    ref = reg._reference_run(client(champion.tracking), run.data.tags["mlflow.parentRunId"], GEOMETRY)
    folder = Path(unquote(urlparse(ref.info.artifact_uri).path)) / "artifact"
    saved = tmp_path / "saved"
    shutil.copytree(folder, saved)
    try:
        swap(folder, by_name["ort-int8"].path)
        with pytest.raises(AlprError, match="recorded in"):
            reg.fetch_reference(champion.tracking, found, "fp32", tmp_path / "work")
    finally:  # the module's store is shared with the other tests
        shutil.rmtree(folder)
        shutil.copytree(saved, folder)


def test_a_reference_whose_bytes_a_registry_version_holds_is_fetched_from_that_versions_run(
    store: Params, built: tuple, validated: dict, tmp_path: Path
) -> None:
    """A rebuild that rebuilt the INT8 candidate (other bytes) but not the FP32 reference: its reference run reuses
    the first rebuild's version and holds no artifact. The check of the champion it promoted fetches the reference
    from the run that holds those bytes."""
    from conftest import another_build

    from tasks.operations.promote import promote

    _, candidates = built
    fp32, int8 = (next(c for c in candidates if c.name == n) for n in ("fp32", CHAMPION))
    gates = {
        "max_map_drop": 0.2,
        "max_quant_drop": 0.2,
        "min_agreement": 0.5,
        "max_p95_ms": 10_000.0,
        "min_speedup": 0.01,
    }
    store = store.model_copy(update={"promote": store.promote.model_copy(update=gates)})
    first = log_rebuild(store, [fp32, int8], {c.name: validated[c.name] for c in (fp32, int8)}, {"frames_hash": "a"})
    rebuilt = another_build(int8, tmp_path / "builds")
    second = log_rebuild(
        store, [fp32, rebuilt], {c.name: validated[c.name] for c in (fp32, int8)}, {"frames_hash": "b"}
    )
    assert second.candidates["fp32"].version == first.candidates["fp32"].version  # reused: same bytes
    result = promote(second, {CHAMPION: validated[CHAMPION]}, store.promote, store.tracking, store.paths.holdout,
                     store.validate_)  # fmt: skip
    assert result.version == second.candidates[CHAMPION].version

    champ = find_champion(store.promote.gate_dir, store.tracking)
    assert champ.run_id == second.candidates[CHAMPION].run_id
    ref = reg.fetch_reference(store.tracking, champ, "fp32", tmp_path / "work")
    assert ref.run_id == first.candidates["fp32"].run_id and ref.candidate.sha256 == fp32.sha256
    # that rebuild logged no FP32 at the champion's geometry: the square reference stands in, and the note says so
    assert f"logged no '{GEOMETRY}'" in ref.note and "across two geometries" in ref.note, ref.note


def test_a_champion_of_a_region_counts_outside_plates_on_the_full_frame_reference(
    champion: Params, built: tuple, tmp_path: Path
) -> None:
    """A champion built for a region is compared with FP32 at its geometry, which is cropped to the same region and
    cannot see outside it: the plates outside are counted by the square FP32 reference on full frames
    (`Reference.full_frame`), and a cropped reference without one is refused rather than counting nothing."""
    from tasks.edge.metadata import embed_metadata, read_embedded_metadata
    from tasks.support.candidate import CANDIDATE_JSON, read_candidate
    from tasks.support.hashing import path_sha256

    _, candidates = built
    by_name = {c.name: c for c in candidates}
    s = champion.sample
    region = {"crop": [0, 0, s.width // 4, s.height // 4], "frame_shape": [s.height, s.width]}
    gate = tmp_path / "gate"
    shutil.copytree(champion.promote.gate_dir, gate, symlinks=True)
    meta = json.loads((gate / "current" / CANDIDATE_JSON).read_text())
    (gate / "current" / CANDIDATE_JSON).write_text(json.dumps({**meta, **region}))
    cropped = tmp_path / "geometry"  # FP32 at the champion's geometry, built for its region as the build does
    shutil.copytree(by_name[GEOMETRY].folder, cropped)
    geom = read_candidate(cropped)
    embed_metadata(geom.path, {**read_embedded_metadata(geom.path), **region})
    meta = json.loads((cropped / CANDIDATE_JSON).read_text())
    (cropped / CANDIDATE_JSON).write_text(json.dumps({**meta, **region, "sha256": path_sha256(geom.path)}))
    geom = read_candidate(cropped)
    full = by_name["fp32"]
    found = reg.find_champion(gate, champion.tracking)
    work = tmp_path / "work"
    work.mkdir()
    sample = reg.sample_frames(
        champion.paths.videos, champion.extract, champion.model.names, champion.paths.frame_cache,
        champion.nightly.newest_videos, None, work,
    )  # fmt: skip
    with pytest.raises(RegressionError, match="needs an FP32 reference on full frames"):
        reg.measure(found, reg.Reference(geom, "r", "cropped alone"), sample, champion.paths.holdout,
                    champion.validate_, work)  # fmt: skip
    measured = reg.measure(
        found, reg.Reference(geom, "r", "cropped", full), sample, champion.paths.holdout, champion.validate_, work
    )
    # the square reference sees every plate of the newest frames, all outside the top-left corner
    whole = reg.measure(found, reg.Reference(full, "r", "square"), sample, champion.paths.holdout, champion.validate_,
                        work)  # fmt: skip
    assert whole.metrics["roi_plates_outside"] == whole.metrics["newest_boxes_reference"] >= 1
    assert measured.metrics["roi_plates_outside"] == whole.metrics["roi_plates_outside"]
    assert measured.outside_roi == whole.outside_roi
