"""Promotion against a real sqlite MLflow store, real artifacts and a real gate folder: gates, champion comparison,
smoke test, rollback, the Prefect flow, and kill -9 of the promote process at several checkpoints."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import another_build

from tasks.operations.promote import promote
from tasks.operations.rollback import RollbackError, rollback
from tasks.operations.smoke import SmokeTestError
from tasks.operations.status import status
from tasks.pipeline.lineage import lineage
from tasks.pipeline.track import latest_rebuild, log_rebuild
from tasks.runtime.releases import MANIFEST, current_release, gate_id, release_is_complete
from tasks.support.config import Params
from tasks.support.faults import KILL_ENV
from tasks.support.registry import CHALLENGER, CHAMPION, PREVIOUS, aliases_for, version_by_alias
from tasks.support.tracking import client

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
REF = "fp32"  # tests promote the FP32 candidate only: the cheapest to load, and always within the FP32 gates


def store_in(folder: Path, built: tuple) -> Params:
    """The session's built project with an MLflow store and gate folder in `folder`, and gates any FP32 passes."""
    params, _ = built
    tracking = params.tracking.model_copy(
        update={"uri": f"sqlite:///{folder / 'mlflow.db'}", "artifacts": folder / "mlartifacts"}
    )
    # min_speedup: the ONNX Runtime FP32 is slower than the speed reference (the same model on OpenVINO).
    # max_slowdown: these tests promote builds of one FP32 model over each other; timing each pair together (a model
    # process, ~7 s) is tested where it decides something (test_pending_decision.py), not in every promotion here
    gates = {"gate_dir": folder / "gate", "min_agreement": 0.5, "max_p95_ms": 10_000.0, "min_speedup": 0.01}
    gates["max_slowdown"] = None
    return params.model_copy(update={"tracking": tracking, "promote": params.promote.model_copy(update=gates)})


@pytest.fixture
def store(tmp_path: Path, built: tuple) -> Params:
    """The session's built project with its own MLflow store and gate folder, and gates any FP32 passes."""
    return store_in(tmp_path, built)


def log(store: Params, cands: list, metrics: dict):
    """Log a rebuild of `cands` with `metrics` and its lineage; returns its record."""
    tags = lineage(ROOT, cands[0].frames_hash, store.model.sha256, store.paths.videos.with_suffix(".dvc"))
    return log_rebuild(store, cands, metrics, tags)


def rebuild(store: Params, built: tuple, validated: dict, **changes: float):
    """Log a rebuild of the FP32 candidate (with metrics `changes` applied) and return its record and metrics. Each
    is another build (other bytes: `another_build`), so each registers a version of its own."""
    _, candidates = built
    cand = another_build(next(c for c in candidates if c.name == REF), store.promote.gate_dir.parent / "builds")
    metrics = {REF: {**validated[REF], **changes}}
    return log(store, [cand], metrics), metrics


def run_promote(store: Params, record, metrics):
    return promote(record, metrics, store.promote, store.tracking, store.paths.holdout, store.validate_)


def alias(store: Params, name: str) -> str | None:
    """The version holding the gate folder's own alias `name` (champion, previous, challenger), or None."""
    gid = gate_id(store.promote.gate_dir)
    if gid is None:
        return None
    scoped = dataclasses.asdict(aliases_for(gid))[name]
    mv = version_by_alias(client(store.tracking), store.tracking.registered_model, scoped)
    return None if mv is None else str(mv.version)


def deployed_version(store: Params) -> str | None:
    release = current_release(store.promote.gate_dir)
    if release is None:
        return None
    assert release_is_complete(release), f"current points at an incomplete release {release}"
    return json.loads((release / MANIFEST).read_text())["version"]


def test_passing_candidate_becomes_champion_with_verdicts_and_manifest(
    store: Params, built, validated, tmp_path: Path
) -> None:
    """The winner is deployed with its manifest and its verdicts; promoting the bytes the gate runs again (a rebuild
    of the same bytes, which reuses their versions) is a no-op that leaves the live release in place; another build
    of it is promoted, and the old champion becomes `previous`."""
    _, candidates = built
    ref = another_build(next(c for c in candidates if c.name == REF), tmp_path / "builds")
    other = next(c for c in candidates if c.name == "ort-int8")  # fails a gate: logged, never promoted
    metrics = {REF: validated[REF], other.name: {**validated[other.name], "map_drop": 0.5}}
    record = log(store, [ref, other], metrics)
    result = run_promote(store, record, metrics)
    version = record.candidates[REF].version
    assert result.decision.winner == REF and result.version == version
    assert alias(store, CHAMPION) == version and alias(store, CHALLENGER) == version and alias(store, PREVIOUS) is None
    gate = store.promote.gate_dir
    assert current_release(gate) == (gate / "releases" / f"v{version}").resolve()
    assert deployed_version(store) == version
    manifest = json.loads((gate / "current" / MANIFEST).read_text())
    assert manifest["run_id"] == record.candidates[REF].run_id and manifest["version"] == version
    assert manifest["registered_model"] == store.tracking.registered_model
    assert manifest["metrics"]["map50_95"] == pytest.approx(validated[REF]["map50_95"])
    assert manifest["toolchain"]["ultralytics"] and manifest["target_hardware"]["cpu"]
    assert manifest["target_hardware"]["backend"] == "onnxruntime"
    smoke = manifest["smoke_test"]
    assert abs(smoke["map50_95"] - validated[REF]["map50_95"]) <= store.promote.smoke_tolerance
    meta = json.loads((gate / "current" / "candidate.json").read_text())
    assert manifest["sha256"] == meta["sha256"]
    assert manifest["input_shape"] == meta["input_shape"] == list(ref.input_shape)
    assert manifest["crop"] == meta["crop"] == list(ref.crop) and manifest["frame_shape"] == list(ref.frame_shape)
    # every gate's verdict, with its numbers, on the candidate's run: tags and a JSON artifact
    mc = client(store.tracking)
    tags = mc.get_run(record.candidates[REF].run_id).data.tags
    assert tags["gate.passed"] == "true" and tags["gate.smoke_test"] == "pass"
    for check in ("map_drop", "agreement", "p95_ms", "speedup"):
        assert tags[f"gate.{check}"].startswith("pass: ")
    assert "gate.quant_map_drop" not in tags, "an FP32 winner has no quantization to judge (INT8 rows only)"
    assert "gate.vs_champion" not in tags, "there was no champion to compare with"
    local = mc.download_artifacts(record.candidates[REF].run_id, "promotion/verdict.json", str(store.promote.gate_dir))
    doc = json.loads(Path(local).read_text())
    assert {c["gate"] for c in doc["checks"]} == {"map_drop", "agreement", "p95_ms", "speedup"}
    assert doc["winner"] == REF

    # a second rebuild of the same bytes registers nothing (each version reused, keeping its own run), and promoting
    # the bytes the gate runs is a no-op that says so: no new release, the live one not replaced, no alias moved
    name = store.tracking.registered_model
    versions = {mv.version for mv in mc.search_model_versions(f"name = '{name}'")}
    record2 = log(store, [ref, other], metrics)
    assert {n: t.version for n, t in record2.candidates.items()} == {n: t.version for n, t in record.candidates.items()}
    assert {mv.version for mv in mc.search_model_versions(f"name = '{name}'")} == versions
    reused = mc.get_model_version(name, version)
    assert reused.run_id == record.candidates[REF].run_id and record2.candidates[REF].run_id != reused.run_id
    latest, _ = latest_rebuild(store.tracking)  # what `alpr-ops promote` reads back: the reused versions, their bytes
    assert latest.parent_run_id == record2.parent_run_id
    assert {n: (t.version, t.source) for n, t in latest.candidates.items()} == {
        n: (t.version, record.candidates[n].source) for n, t in record2.candidates.items()
    }
    inode = result.release.stat().st_ino
    again = run_promote(store, record2, metrics)
    assert again.version == version and "already runs these exact bytes" in again.unchanged
    assert again.release == result.release and again.release.stat().st_ino == inode, "live release was replaced"
    assert current_release(gate) == (gate / "releases" / f"v{version}").resolve()
    assert sorted(p.name for p in (gate / "releases").iterdir()) == [f"v{version}"]
    assert (alias(store, CHAMPION), alias(store, PREVIOUS)) == (version, None)
    # the gate runtime may run as another user: releases are readable like ordinary files
    assert stat.S_IMODE(result.release.stat().st_mode) & 0o005 == 0o005
    assert stat.S_IMODE((result.release / MANIFEST).stat().st_mode) & 0o004

    # another build of the winner (other bytes) is promoted: `previous` keeps the old champion
    third, rows = rebuild(store, built, validated)
    result3 = run_promote(store, third, rows)
    assert result3.version not in versions and not result3.unchanged
    assert (alias(store, CHAMPION), alias(store, PREVIOUS)) == (result3.version, version)
    info = status(store.tracking, store.promote)
    assert info["champion"]["version"] == info["deployed"]["version"] == result3.version
    assert {c["name"] for c in info["candidates"]} == {REF}, "status lists the latest rebuild's candidates"


def test_nothing_passes_leaves_champion_and_current_untouched(store: Params, built, validated) -> None:
    """A challenger worse than the champion (re-measured on this holdout), or a rebuild whose candidates fail a gate
    against FP32, promotes nothing: `current` and the aliases stay, and the verdict on the run says which gate."""
    first, metrics = rebuild(store, built, validated)
    run_promote(store, first, metrics)
    before = os.readlink(store.promote.gate_dir / "current")
    # a challenger that passes every FP32 gate but claims a mAP well below the champion's (re-measured here)
    second, worse = rebuild(store, built, validated, map50_95=validated[REF]["map50_95"] - 0.05)
    result = run_promote(store, second, worse)
    assert result.decision.winner is None and result.version is None
    assert result.decision.champion is not None and result.decision.champion.version == first.candidates[REF].version
    assert result.decision.champion.map50_95 == pytest.approx(validated[REF]["map50_95"], abs=0.01)
    assert os.readlink(store.promote.gate_dir / "current") == before
    assert alias(store, CHAMPION) == first.candidates[REF].version
    tags = client(store.tracking).get_run(second.candidates[REF].run_id).data.tags
    assert tags["gate.passed"] == "false" and tags["gate.vs_champion"].startswith("fail: ")
    assert tags["gate.map_drop"].startswith("pass: ")
    # the champion's own rebuild judged again on numbers that fail the mAP drop gate: its verdict is replaced
    result = run_promote(store, first, {REF: {**metrics[REF], "map_drop": 0.5}})
    assert result.decision.winner is None and result.version is None
    assert os.readlink(store.promote.gate_dir / "current") == before
    assert alias(store, CHAMPION) == first.candidates[REF].version
    tags = client(store.tracking).get_run(first.candidates[REF].run_id).data.tags
    assert tags["gate.passed"] == "false" and tags["gate.map_drop"].startswith("fail: ")
    assert "gate.smoke_test" not in tags, "the earlier decision's smoke test verdict was left on the run"


def broken_build(cand, folder: Path):  # (Candidate, Path) -> Candidate
    """A copy of `cand` whose artifact is not a model at all, with `candidate.json` (and so the store's record)
    naming those bytes: it passes verification and fails to load."""
    from tasks.support.hashing import path_sha256

    shutil.copytree(cand.folder, folder)
    (folder / cand.artifact).write_bytes(b"not an onnx model")
    meta = json.loads((folder / "candidate.json").read_text())
    meta["sha256"] = path_sha256(folder / cand.artifact)
    (folder / "candidate.json").write_text(json.dumps(meta))
    return dataclasses.replace(cand, folder=folder, sha256=meta["sha256"])


@pytest.mark.parametrize(
    ("fault", "error"),
    [("does not reproduce its validation", "differs from the validated"), ("does not load", "failed to load or run")],
)
def test_artifact_that_fails_its_smoke_test_is_not_deployed(
    store: Params, built, validated, tmp_path: Path, fault: str, error: str
) -> None:
    if fault == "does not load":
        broken = broken_build(next(c for c in built[1] if c.name == REF), tmp_path / "broken")
        metrics = {REF: validated[REF]}
        record = log(store, [broken], metrics)
    else:
        record, metrics = rebuild(store, built, validated, map50_95=min(1.0, validated[REF]["map50_95"] + 0.2))
    with pytest.raises(SmokeTestError, match=error):
        run_promote(store, record, metrics)
    gate = store.promote.gate_dir
    assert current_release(gate) is None
    assert list((gate / "releases").iterdir()) == [], "a release that failed its smoke test was left in releases/"
    assert alias(store, CHAMPION) is None and alias(store, CHALLENGER) is None
    tags = client(store.tracking).get_run(record.candidates[REF].run_id).data.tags
    assert tags["gate.smoke_test"].startswith("fail: ")


def test_rollback_restores_previous_release_and_alias(store: Params, built, validated) -> None:
    cfg = store.promote.model_copy(update={"keep_releases": 1})  # v1's folder is pruned: rollback re-deploys it
    store = store.model_copy(update={"promote": cfg})
    with pytest.raises(RollbackError, match="nothing to roll back to"):
        rollback(store.promote, store.tracking, store.paths.holdout, store.validate_)
    first, metrics = rebuild(store, built, validated)
    run_promote(store, first, metrics)
    second, metrics2 = rebuild(store, built, validated)
    run_promote(store, second, metrics2)
    v1, v2 = first.candidates[REF].version, second.candidates[REF].version
    assert deployed_version(store) == v2 and alias(store, PREVIOUS) == v1
    assert not (store.promote.gate_dir / "releases" / f"v{v1}").exists()

    result = rollback(store.promote, store.tracking, store.paths.holdout, store.validate_)
    assert (result.from_version, result.to_version) == (v2, v1)
    assert deployed_version(store) == v1 and alias(store, CHAMPION) == v1 and alias(store, PREVIOUS) is None
    event = client(store.tracking).get_run(result.mlflow_run_id).data.tags
    assert event["alpr.kind"] == "rollback" and (event["from_version"], event["to_version"]) == (v2, v1)
    with pytest.raises(RollbackError, match="nothing to roll back to"):
        rollback(store.promote, store.tracking, store.paths.holdout, store.validate_)


def test_promote_flow_and_the_promote_and_rollback_commands(
    store: Params, built, validated, tmp_path: Path, prefect_api: str, cli
) -> None:
    from flows.promote import promote as promote_flow

    first, _ = rebuild(store, built, validated)
    result = promote_flow(params=store)  # no record given: the flow reads the latest rebuild from MLflow
    v1 = first.candidates[REF].version
    assert result.version == v1 == alias(store, CHAMPION)
    # the CLI, in a project whose params.yaml names the same store and gate folder
    project = tmp_path / "project"
    project.mkdir()
    (project / "params.yaml").write_text(store.model_dump_json(by_alias=True))  # YAML is a superset of JSON
    second, _ = rebuild(store, built, validated)
    v2 = second.candidates[REF].version
    done = cli(project, "promote")
    assert f"(version {v2})" in done.stdout and "champion:" in done.stdout  # the result, on stdout
    assert deployed_version(store) == v2 and (alias(store, CHAMPION), alias(store, PREVIOUS)) == (v2, v1)
    again = json.loads(cli(project, "promote", "--json").stdout)  # the schema `promote --help` documents
    assert (again["outcome"], again["version"], again["release"], again["pending"]) == ("unchanged", v2, None, None)
    assert again["unchanged"] and again["winner"] == REF and REF in {c["name"] for c in again["candidates"]}
    assert deployed_version(store) == v2
    done = cli(project, "rollback")
    assert f"version {v2} -> {v1}" in done.stdout
    assert deployed_version(store) == v1 and alias(store, CHAMPION) == v1
    done = cli(project, "rollback", check=False)
    assert done.returncode == 3 and "nothing to roll back to" in done.stderr


PROMOTE_SCRIPT = """
import sys
from tasks.support.config import Params
from tasks.support.offline import configure_offline
from tasks.operations.promote import promote, require_latest_rebuild

params = Params.model_validate_json(open(sys.argv[1]).read())
configure_offline(params.paths.ultralytics_config)
record, metrics = require_latest_rebuild(params.tracking)
promote(record, metrics, params.promote, params.tracking, params.paths.holdout, params.validate_)
"""


ROLLBACK_SCRIPT = """
import sys
from tasks.support.config import Params
from tasks.support.offline import configure_offline
from tasks.operations.rollback import rollback

params = Params.model_validate_json(open(sys.argv[1]).read())
configure_offline(params.paths.ultralytics_config)
rollback(params.promote, params.tracking, params.paths.holdout, params.validate_)
"""


def promote_process(
    store: Params, tmp_path: Path, kill_at: str | None, script: str = PROMOTE_SCRIPT
) -> subprocess.CompletedProcess[str]:
    """`promote` of the latest rebuild (or `script`) in its own process (optionally SIGKILLed at `kill_at`)."""
    cfg = tmp_path / "params.json"
    cfg.write_text(store.model_dump_json(by_alias=True))
    env = {k: v for k, v in os.environ.items() if k != KILL_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    if kill_at:
        env[KILL_ENV] = kill_at
    args = [sys.executable, "-c", script, str(cfg)]
    return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def first_promotion(tmp_path_factory: pytest.TempPathFactory, built: tuple, validated: dict):
    """A store whose first rebuild is promoted, made once: each kill test starts from a copy of it (the store's
    database and gate folder; the artifacts stay where the database records them, and tests only add to them)."""
    folder = tmp_path_factory.mktemp("first-promotion")
    store = store_in(folder, built)
    first, metrics = rebuild(store, built, validated)
    run_promote(store, first, metrics)
    return folder, first


def copy_store(folder: Path, dst: Path, built: tuple) -> Params:
    """A copy of the store in `folder` (its database and gate folder; the artifacts stay where the database records
    them) under `dst`: a database file of its own, so no connection of an earlier test sees it."""
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(folder / "mlflow.db", dst / "mlflow.db")
    shutil.copytree(folder / "gate", dst / "gate", symlinks=True)  # `current` is a relative symlink
    return store_in(dst, built)


@pytest.fixture
def promoted(first_promotion, tmp_path: Path, built: tuple) -> tuple[Params, object]:
    """A fresh copy of `first_promotion` under tmp_path; returns the store and the first rebuild's record."""
    folder, first = first_promotion
    return copy_store(folder, tmp_path, built), first


@pytest.fixture(scope="module")
def second_promotion(first_promotion, tmp_path_factory: pytest.TempPathFactory, built: tuple, validated: dict):
    """`first_promotion` followed by a second rebuild's promotion (made once): champion v2, previous v1."""
    folder, first = first_promotion
    dst = tmp_path_factory.mktemp("second-promotion")
    store = copy_store(folder, dst, built)
    second, metrics = rebuild(store, built, validated)
    run_promote(store, second, metrics)
    return dst, first, second


@pytest.mark.parametrize(
    ("kill_at", "deployed_after_kill"),
    [
        ("after_champion_download", "old"),
        ("after_download", "old"),
        ("after_release_written", "old"),
        ("after_switch", "new"),
        ("after_aliases", "new"),
    ],
)
def test_kill_during_promotion_leaves_a_complete_release_and_a_rerun_finishes(
    promoted: tuple, built, validated, tmp_path: Path, kill_at: str, deployed_after_kill: str
) -> None:
    store, first = promoted  # a first rebuild, promoted: its champion is deployed
    assert deployed_version(store) == first.candidates[REF].version == alias(store, CHAMPION)
    second, _ = rebuild(store, built, validated)
    old, new = first.candidates[REF].version, second.candidates[REF].version

    killed = promote_process(store, tmp_path, kill_at)
    assert killed.returncode == -9, f"not killed at {kill_at}:\n{killed.stderr[-3000:]}"
    assert deployed_version(store) == {"old": old, "new": new}[deployed_after_kill]
    assert alias(store, CHAMPION) in (old, new)

    from tasks.operations.promote import require_latest_rebuild

    result = run_promote(store, *require_latest_rebuild(store.tracking))  # the rerun (in-process: cheaper)
    assert result.version == new and deployed_version(store) == new
    assert (alias(store, CHAMPION), alias(store, PREVIOUS)) == (new, old)
    gate = store.promote.gate_dir
    leftovers = [p.name for p in (gate / "releases").glob(".*")] + [p.name for p in gate.glob(".current.*")]
    assert leftovers == [], f"a killed promotion's leftovers were not cleared: {leftovers}"


# --- issue 15: every load of a built artifact is verified against the store's build-time record -------------------


def store_folder(source: str) -> Path:
    """The folder of a version's artifact in the (file) artifact store."""
    from urllib.parse import unquote, urlparse

    return Path(unquote(urlparse(source).path))


def swap_in_store(source: str, built: tuple) -> None:
    """What an attacker with write access to the artifact store does: replace a version's artifact with another
    valid model (the ONNX Runtime INT8 export) and rewrite its `candidate.json` to match."""
    from tasks.support.hashing import path_sha256

    folder = store_folder(source)
    meta = json.loads((folder / "candidate.json").read_text())
    other = next(c for c in built[1] if c.name == "ort-int8")
    shutil.copyfile(other.path, folder / meta["artifact"])
    meta["sha256"] = path_sha256(folder / meta["artifact"])
    (folder / "candidate.json").write_text(json.dumps(meta))


def test_an_artifact_swapped_in_the_store_is_refused_by_promotion_champion_check_and_rollback(
    promoted: tuple, built, validated, tmp_path: Path
) -> None:
    from tasks.support.errors import AlprError

    store, first = promoted
    v1 = first.candidates[REF].version
    gate = store.promote.gate_dir
    before = os.readlink(gate / "current")
    # a challenger whose artifact was swapped after it was built and validated
    second, metrics2 = rebuild(store, built, validated)
    swap_in_store(second.candidates[REF].source, built)
    with pytest.raises(AlprError, match="recorded in"):
        run_promote(store, second, metrics2)
    assert os.readlink(gate / "current") == before and alias(store, CHAMPION) == v1
    assert not (gate / "releases" / f"v{second.candidates[REF].version}").exists()
    # a clean third rebuild is promoted; then the old champion (now `previous`) is swapped in the store and its
    # release folder is gone: rollback's re-download refuses it
    third, metrics3 = rebuild(store, built, validated)
    v3 = run_promote(store, third, metrics3).version
    assert (alias(store, CHAMPION), alias(store, PREVIOUS)) == (v3, v1)
    shared = store_folder(first.candidates[REF].source)  # the first promotion's artifact, shared by other tests
    saved = tmp_path / "saved"
    shutil.copytree(shared, saved)
    try:
        swap_in_store(first.candidates[REF].source, built)
        shutil.rmtree(gate / "releases" / f"v{v1}")
        with pytest.raises(RollbackError, match="recorded in"):
            rollback(store.promote, store.tracking, store.paths.holdout, store.validate_)
    finally:
        shutil.rmtree(shared)
        shutil.copytree(saved, shared)
    assert deployed_version(store) == v3 and (alias(store, CHAMPION), alias(store, PREVIOUS)) == (v3, v1)
    # the champion swapped in the store: the not-worse-than-champion check refuses to load it
    swap_in_store(third.candidates[REF].source, built)
    with pytest.raises(AlprError, match="recorded in"):
        run_promote(store, second, metrics2)
    assert deployed_version(store) == v3 and alias(store, CHAMPION) == v3


def wait_for(condition, timeout: float, what: str) -> None:
    """Wait for an event (a file the pause hook wrote, a thread that ended), failing after `timeout` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_locked_registry_stops_promotion_instead_of_reading_as_no_champion(
    promoted: tuple, built, validated, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 15 defect 2: the promotion pauses just before it reads the champion; the test then holds an exclusive
    lock on mlflow.db past MLflow's 20 s busy wait. A challenger worse than the champion must not be deployed."""
    import sqlite3
    import threading

    from tasks.support.faults import PAUSE_ENV

    store, first = promoted
    # the smoke test must not be what stops the worse challenger (it reproduces its claimed mAP within 0.01)
    store = store.model_copy(update={"promote": store.promote.model_copy(update={"smoke_tolerance": 0.2})})
    v1 = first.candidates[REF].version
    gate = store.promote.gate_dir
    before = os.readlink(gate / "current")
    worse, metrics = rebuild(store, built, validated, map50_95=validated[REF]["map50_95"] - 0.05)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    monkeypatch.setenv(PAUSE_ENV, f"before_champion,after_champion:{hooks}")
    outcome: list[BaseException | object] = []

    def run() -> None:
        try:
            outcome.append(run_promote(store, worse, metrics))
        except BaseException as e:  # the test inspects it
            outcome.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_for((hooks / "before_champion.paused").exists, 120, "the promotion to reach the champion read")
    db = sqlite3.connect(tmp_path / "mlflow.db", isolation_level=None, timeout=0)
    db.execute("BEGIN EXCLUSIVE")
    try:
        (hooks / "before_champion.resume").touch()
        # the champion read fails after MLflow's busy wait: the promotion must stop there; code that took the error
        # for "no champion" goes on (and pauses after it), and then finds the store unlocked again
        wait_for(lambda: outcome or (hooks / "after_champion.paused").exists(), 120, "the champion read to end")
    finally:
        db.execute("ROLLBACK")
        db.close()
        (hooks / "after_champion.resume").touch()
    thread.join(timeout=300)
    assert outcome and isinstance(outcome[0], Exception), f"the promotion went on: {outcome}"
    message = str(outcome[0])
    assert "could not be read" in message and str(tmp_path / "mlflow.db") in message, message
    assert os.readlink(gate / "current") == before and deployed_version(store) == v1
    assert (alias(store, CHAMPION), alias(store, PREVIOUS), alias(store, CHALLENGER)) == (v1, None, v1)


@pytest.mark.parametrize(
    ("operation", "kill_at"),
    [
        ("promote", "after_switch"),
        ("promote", "after_previous"),
        ("rollback", "after_switch"),
        ("rollback", "rollback_after_champion"),
    ],
)
def test_kill_between_switch_and_last_alias_move_then_a_third_rebuild_keeps_the_live_release_for_rollback(
    request: pytest.FixtureRequest, built, validated, tmp_path: Path, operation: str, kill_at: str
) -> None:
    """Issue 15 defect 3: the deployed release is the truth. After a kill -9 between `current`'s switch and the last
    alias move, the next promotion (of another rebuild) first repairs the aliases under its lock: `previous` is then
    the release that was live, and rollback returns to it."""
    if operation == "promote":  # v1 live; a second rebuild's promotion is killed after it switched to v2
        folder, _ = request.getfixturevalue("first_promotion")
        store = copy_store(folder, tmp_path / "s", built)
        second, _ = rebuild(store, built, validated)
        live = second.candidates[REF].version
        killed = promote_process(store, tmp_path, kill_at)
    else:  # v2 live, previous v1; a rollback is killed after it switched back to v1
        folder, first, _ = request.getfixturevalue("second_promotion")
        store = copy_store(folder, tmp_path / "s", built)
        live = first.candidates[REF].version
        killed = promote_process(store, tmp_path, kill_at, ROLLBACK_SCRIPT)
    assert killed.returncode == -9, f"not killed at {kill_at}:\n{killed.stderr[-3000:]}"
    assert deployed_version(store) == live
    from tasks.operations.status import status

    assert status(store.tracking, store.promote).get("mismatch") or alias(store, PREVIOUS) == live  # only reported

    third, metrics = rebuild(store, built, validated)
    result = run_promote(store, third, metrics)
    v3 = third.candidates[REF].version
    assert (deployed_version(store), alias(store, CHAMPION), alias(store, PREVIOUS)) == (v3, v3, live)
    assert result.repairs, "the repair of the aliases left behind by the kill was not reported"
    back = rollback(store.promote, store.tracking, store.paths.holdout, store.validate_)
    assert (back.to_version, deployed_version(store), alias(store, CHAMPION)) == (live, live, live)


def test_two_gate_folders_have_their_own_aliases_and_rolling_back_one_leaves_the_other(
    second_promotion, built, validated, tmp_path: Path
) -> None:
    """Issue 15 defect 7: promote into two gate folders, roll back one: the other keeps its release, its aliases
    and its champion in status and in the nightly check."""
    from tasks.operations.regression import find_champion
    from tasks.operations.status import status

    folder, first, second = second_promotion
    a = copy_store(folder, tmp_path / "s", built)  # gate A runs v2, previous v1
    b = a.model_copy(update={"promote": a.promote.model_copy(update={"gate_dir": tmp_path / "other-gate"})})
    v1, v2 = first.candidates[REF].version, second.candidates[REF].version
    third, metrics = rebuild(b, built, validated)
    v3 = run_promote(b, third, metrics).version  # gate B: its first promotion, no champion to compare with
    assert (alias(b, CHAMPION), alias(b, PREVIOUS)) == (v3, None)
    assert (deployed_version(a), alias(a, CHAMPION), alias(a, PREVIOUS)) == (v2, v2, v1)

    back = rollback(a.promote, a.tracking, a.paths.holdout, a.validate_)
    assert (back.from_version, back.to_version) == (v2, v1)
    assert (deployed_version(a), alias(a, CHAMPION), alias(a, PREVIOUS)) == (v1, v1, None)
    assert (deployed_version(b), alias(b, CHAMPION), alias(b, PREVIOUS)) == (v3, v3, None)
    for store, version in ((a, v1), (b, v3)):
        info = status(store.tracking, store.promote)
        assert info["champion"]["version"] == info["deployed"]["version"] == version and info["mismatch"] is None
        assert find_champion(store.promote.gate_dir, store.tracking).registry_version == version


def test_upgrading_a_running_site_adopts_what_matches_the_registry_and_refuses_the_rest(
    second_promotion, built, validated, tmp_path: Path
) -> None:
    """Issue 15 defect 9: a gate folder as a version before this issue left it (project-wide aliases, manifests
    without a verification record) is adopted at the first gate start: aliases taken over, a release whose artifact
    matches its run's recorded hash adopted, one that does not refused; a rollback then restores the refused one
    from the store, verified."""
    from tasks.operations.aliases import adopt_at_gate_start
    from tasks.runtime.gate import GateRuntime
    from tasks.runtime.releases import GATE_ID_FILE, GATE_ID_KEY, VERIFIED_KEY
    from tasks.support.errors import AlprError
    from tasks.support.registry import LEGACY, delete_alias, set_alias

    folder, first, second = second_promotion
    store = copy_store(folder, tmp_path / "s", built)
    v1, v2 = first.candidates[REF].version, second.candidates[REF].version
    gate, mc, name = store.promote.gate_dir, client(store.tracking), store.tracking.registered_model
    # back to the old layout: no gate id, project-wide aliases, manifests without a verification record
    scoped = aliases_for(gate_id(gate))
    for alias_name in (scoped.champion, scoped.previous):
        delete_alias(mc, name, alias_name)
    set_alias(mc, name, LEGACY.champion, v2)
    set_alias(mc, name, LEGACY.previous, v1)
    (gate / GATE_ID_FILE).unlink()
    for manifest in (gate / "releases").glob("v*/manifest.json"):
        doc = json.loads(manifest.read_text())
        doc.pop(VERIFIED_KEY)
        doc.pop(GATE_ID_KEY)  # the old version recorded no gate id either
        manifest.write_text(json.dumps(doc))
    old = gate / "releases" / f"v{v1}"  # its artifact replaced since, candidate.json rewritten to match
    meta = json.loads((old / "candidate.json").read_text())
    other = next(c for c in built[1] if c.name == "ort-int8")
    shutil.copyfile(other.path, old / meta["artifact"])
    (old / "candidate.json").write_text(json.dumps({**meta, "sha256": other.sha256}))
    with pytest.raises(AlprError, match="no verification record"):
        GateRuntime(gate, 0.25, 0.7)  # not adopted yet: the gate runs nothing it cannot verify

    done = "\n".join(adopt_at_gate_start(store.tracking, gate))
    assert f"adopted the project-wide champion {v2}" in done and f"v{v2} adopted" in done
    assert f"v{v1} NOT adopted" in done, done
    assert (alias(store, CHAMPION), alias(store, PREVIOUS)) == (v2, v1)
    GateRuntime(gate, 0.25, 0.7).close()  # the adopted live release runs
    back = rollback(store.promote, store.tracking, store.paths.holdout, store.validate_)  # v1 re-downloaded
    assert (back.to_version, deployed_version(store), alias(store, CHAMPION)) == (v1, v1, v1)


def test_a_current_outside_releases_is_not_deployed_for_status_nor_the_truth_for_rollback(
    second_promotion, built, tmp_path: Path
) -> None:
    """Issue item 6: `current` repointed (an absolute symlink) at a complete release of another folder is not called
    deployed by `status`, and `rollback` refuses before its repair moves the aliases to it; pointed back, the
    rollback goes through."""
    from tasks.runtime.releases import GateFolderError

    folder, first, second = second_promotion
    store = copy_store(folder, tmp_path / "s", built)
    v1, v2 = first.candidates[REF].version, second.candidates[REF].version
    gate = store.promote.gate_dir
    outside = tmp_path / "elsewhere" / f"v{v1}"
    shutil.copytree(gate / "releases" / f"v{v1}", outside)  # complete and verifiable, but not in this folder
    (gate / "current").unlink()
    (gate / "current").symlink_to(outside)

    info = status(store.tracking, store.promote)
    assert info["deployed"] is None and info["champion"]["version"] == v2
    assert "not a release in" in info["mismatch"] and str(gate / "current") in info["mismatch"], info["mismatch"]
    with pytest.raises(GateFolderError, match="not a release in"):
        rollback(store.promote, store.tracking, store.paths.holdout, store.validate_)
    assert (alias(store, CHAMPION), alias(store, PREVIOUS)) == (v2, v1), "the aliases were moved to the outside one"
    assert os.readlink(gate / "current") == str(outside), "rollback changed the gate folder while refusing"

    (gate / "current").unlink()
    (gate / "current").symlink_to(f"releases/v{v2}")  # what the refusal says to do
    back = rollback(store.promote, store.tracking, store.paths.holdout, store.validate_)
    assert (back.from_version, back.to_version, deployed_version(store)) == (v2, v1, v1)


def test_a_lost_gate_json_in_a_moved_folder_is_recovered_so_rollback_still_works(
    second_promotion, built, tmp_path: Path
) -> None:
    """Issue item 6: `gate.json` deleted in a moved gate folder (so a new id would differ) is recovered from the
    releases' manifests; for releases made before manifests recorded it, from the registry's aliases, refused when
    they fit several folders. Either way `rollback` still finds the folder's `previous`."""
    from tasks.runtime.releases import GATE_ID_FILE, GATE_ID_KEY, GateFolderError
    from tasks.support.registry import delete_alias, set_alias

    folder, first, second = second_promotion
    v1, v2 = first.candidates[REF].version, second.candidates[REF].version
    old_id = json.loads((folder / "gate" / GATE_ID_FILE).read_text())["id"]

    store = copy_store(folder, tmp_path / "moved", built)  # a moved folder: a new id would hash another path
    gate = store.promote.gate_dir
    (gate / GATE_ID_FILE).unlink()
    assert status(store.tracking, store.promote)["champion"]["version"] == v2  # read from the manifests
    back = rollback(store.promote, store.tracking, store.paths.holdout, store.validate_)
    assert (back.from_version, back.to_version, deployed_version(store)) == (v2, v1, v1)
    assert json.loads((gate / GATE_ID_FILE).read_text())["id"] == old_id

    store = copy_store(folder, tmp_path / "older", built)  # releases made before manifests recorded the id
    gate, mc, name = store.promote.gate_dir, client(store.tracking), store.tracking.registered_model
    (gate / GATE_ID_FILE).unlink()
    for manifest in (gate / "releases").glob("v*/manifest.json"):
        doc = json.loads(manifest.read_text())
        doc.pop(GATE_ID_KEY)
        manifest.write_text(json.dumps(doc))
    set_alias(mc, name, "champion-another-gate", v2)  # another folder running the same version: ambiguous
    with pytest.raises(GateFolderError, match="do not single one out") as e:
        rollback(store.promote, store.tracking, store.paths.holdout, store.validate_)
    assert str(gate / GATE_ID_FILE) in str(e.value) and old_id in str(e.value) and "another-gate" in str(e.value)
    assert not (gate / GATE_ID_FILE).exists() and deployed_version(store) == v2
    delete_alias(mc, name, "champion-another-gate")
    back = rollback(store.promote, store.tracking, store.paths.holdout, store.validate_)
    assert (back.from_version, back.to_version, deployed_version(store)) == (v2, v1, v1)
    assert json.loads((gate / GATE_ID_FILE).read_text())["id"] == old_id
    for manifest in (gate / "releases").glob("v*/manifest.json"):  # recorded from now on
        assert json.loads(manifest.read_text())[GATE_ID_KEY] == old_id


def test_against_a_real_mlflow_server_only_facts_read_as_no_champion(
    first_promotion, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 15 defect 2 against a real `mlflow server` (on a copy of the first promotion's database, so no
    migration runs): no such model or an alias the model does not list is "none"; a server that cannot be reached
    is an error naming it, its credentials redacted."""
    from conftest import mlflow_server_at
    from mlflow import MlflowClient

    from tasks.support.registry import RegistryError

    folder, first = first_promotion
    shutil.copyfile(folder / "mlflow.db", tmp_path / "server.db")  # the database `mlflow_server_at` serves
    champion = aliases_for(gate_id(folder / "gate")).champion
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail at once instead of backing off for minutes
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    with mlflow_server_at(tmp_path) as url:
        secret_url = url.replace("http://", "http://alpr:s3cret-token@")
        mc = MlflowClient(tracking_uri=secret_url, registry_uri=secret_url)
        name = mc.search_registered_models()[0].name
        assert str(version_by_alias(mc, name, champion).version) == first.candidates[REF].version
        assert version_by_alias(mc, name, "champion-another-gate") is None  # the model does not list it
        assert version_by_alias(mc, "no-such-model", champion) is None
    with pytest.raises(RegistryError, match="could not be read") as e:  # the server is gone
        version_by_alias(mc, name, champion)
    message = str(e.value)
    assert url.removeprefix("http://") in message and "s3cret-token" not in message, message
