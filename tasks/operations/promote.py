"""Gate the candidates, deploy the winner to the gate runtime folder atomically after a smoke test, roll back.

Layout of the gate folder: `releases/v<version>/` (the artifact as registered in MLflow, its `candidate.json`, and
`manifest.json`) and a `current` symlink switched with one rename, so the gate runtime sees the old release or the
new one, never a partial copy. One promotion or rollback at a time holds `.promote.lock` (an `flock`, released by
the kernel when the process dies), and the next one first clears what a killed one left behind.

Fault injection (tests only, `tasks/support/faults.py`): `ALPR_KILL_AT=<checkpoint>` SIGKILLs the process at that
checkpoint, `ALPR_PAUSE_AT` pauses it there until the test resumes it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.pipeline.track import KIND_TAG, RebuildRecord, client, experiment_id, latest_rebuild
from tasks.pipeline.validate import GATE_KEY, GATE_MEASURED, NO_HOLDOUT, agreement_map50_95, holdout_map50_95
from tasks.runtime.releases import (
    MANIFEST,
    VERIFIED_KEY,
    current_release,
    ensure_gate_id,
    gate_paths,
    promotion_lock,
    prune_releases,
    read_manifest,
    release_is_complete,
    switch_current,
)
from tasks.runtime.tensorrt import ensure_runnable
from tasks.support.candidate import Candidate
from tasks.support.config import PromoteConfig, TrackingConfig, ValidateConfig
from tasks.support.errors import AlprError, Remedy
from tasks.support.faults import CHECKPOINTS, KILL_ENV, PAUSE_ENV, checkpoint
from tasks.support.fsutil import atomic_dir, atomic_write_text
from tasks.support.images import frames_folder, list_images
from tasks.support.registry import (
    CHALLENGER,
    CHAMPION,
    LEGACY,
    PREVIOUS,
    Aliases,
    aliases_for,
    crown,
    delete_alias,
    download_version,
    redact_uri,
    set_alias,
    version_by_alias,
)
from tasks.support.verify import VerificationError, recorded_sha256, verify_artifact

log = logging.getLogger(__name__)

# re-exported for callers that know aliases and the fault-injection hooks through this module
__all__ = ["CHALLENGER", "CHAMPION", "CHECKPOINTS", "KILL_ENV", "PAUSE_ENV", "PREVIOUS", "checkpoint"]

# --- the policy ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateCheck:
    """One gate applied to one candidate: the measured value, the threshold and the comparison."""

    gate: str
    passed: bool
    value: float
    threshold: float
    op: str  # "<=" or ">="
    note: str = ""  # why, when the numbers alone do not say (a gate-built engine's failure)

    def __str__(self) -> str:
        shown = self.op if self.passed else {"<=": ">", ">=": "<"}[self.op]
        return f"{self.gate} {self.value:.4g} {shown} {self.threshold:.4g}" + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True)
class Verdict:
    name: str
    passed: bool
    checks: tuple[GateCheck, ...]
    latency_p50_ms: float

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(str(c) for c in self.checks)


@dataclass(frozen=True)
class ChampionScore:
    """The deployed champion re-evaluated on this run's holdout, so challenger and champion compare like for like."""

    version: str
    candidate: str
    map50_95: float
    basis: str = ""  # how `map50_95` was obtained when not re-evaluated on this holdout (a gate-built engine's)


@dataclass(frozen=True)
class Decision:
    """The winner (None when nothing passed), why each candidate passed or failed, and how the winner was chosen
    among those that passed (`policy`)."""

    winner: str | None
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    champion: ChampionScore | None = None
    policy: str = ""

    def explain(self) -> str:
        lines = [f"{v.name}: {'PASS' if v.passed else 'FAIL'} ({'; '.join(v.reasons)})" for v in self.verdicts.values()]
        return "\n".join([*lines, *([f"choice: {self.policy}"] if self.policy else [])])


class MetricsMissing(AlprError):
    """A candidate's metrics lack a number a gate needs."""


class NoRebuild(AlprError):
    """MLflow holds no finished rebuild to promote."""


def _num(row: dict[str, Any], key: str, name: str) -> float:
    if key not in row or row[key] in (None, ""):
        raise MetricsMissing(
            f"candidate '{name}' has no '{key}' metric (validated by older code)", remedy=Remedy.VALIDATE
        )
    return float(row[key])


def decide(metrics: dict[str, dict[str, Any]], cfg: PromoteConfig, champion: ChampionScore | None = None) -> Decision:
    """Every candidate through the gates (mAP drop and agreement vs FP32, p95 latency, speed-up, and, when a champion
    is deployed, mAP50-95 no worse than the champion's on the same holdout), then the winner among those that pass:
    the most faithful to FP32 within the latency of the fastest (`choose`)."""
    verdicts = {}
    for name, row in metrics.items():
        if GATE_KEY in row and row[GATE_KEY] != GATE_MEASURED:  # pending, or failed on the gate: no numbers to judge
            check = GateCheck("gate_build", False, 0.0, 1.0, ">=", str(row[GATE_KEY]))
            verdicts[name] = Verdict(name, False, (check,), float(row.get("latency_p50_ms", "nan")))
            continue
        unlabelled = row.get("holdout") == NO_HOLDOUT  # validated on agreement alone: the mAP gates do not apply
        if unlabelled:  # passes only where the operator allows it (promote.allow_unlabelled)
            first = GateCheck("labelled_holdout", cfg.allow_unlabelled, 0.0, 0.0 if cfg.allow_unlabelled else 1.0, ">=")
        else:
            v = _num(row, "map_drop", name)
            first = GateCheck("map_drop", v <= cfg.max_map_drop, v, cfg.max_map_drop, "<=")
        checks = [
            first,
            GateCheck(
                "agreement",
                (v := _num(row, "agreement_map50_95", name)) >= cfg.min_agreement,
                v,
                cfg.min_agreement,
                ">=",
            ),
            GateCheck("p95_ms", (v := _num(row, "latency_p95_ms", name)) <= cfg.max_p95_ms, v, cfg.max_p95_ms, "<="),
            GateCheck("speedup", (v := _num(row, "speedup", name)) >= cfg.min_speedup, v, cfg.min_speedup, ">="),
        ]
        if champion is not None and not unlabelled:
            floor = round(champion.map50_95 - cfg.champion_tolerance, 6)
            v = _num(row, "map50_95", name)
            checks.append(GateCheck("vs_champion", v >= floor, v, floor, ">=", champion.basis))
        p50 = _num(row, "latency_p50_ms", name)
        verdicts[name] = Verdict(name, all(c.passed for c in checks), tuple(checks), p50)
    winner, policy = choose([v for v in verdicts.values() if v.passed], metrics, cfg)
    return Decision(winner, verdicts, champion, policy)


def _speed(row: dict[str, Any]) -> float:
    """A candidate's p50 for the choice: the interleaved re-timing's where validation re-timed it (close
    candidates, timed A B B A in one process), else its own run's."""
    return float(row.get("latency_interleaved_p50_ms") or row["latency_p50_ms"])


def _slower_by(row: dict[str, Any], fastest: dict[str, Any]) -> tuple[float, float]:
    """(p50 ratio of `row` to `fastest`, its measurement noise). Both re-timed together: the mean of their per-round
    ratios and its 95% interval (`pair_ratio`); otherwise the plain p50 ratio with no noise estimate (candidates
    that were not re-timed together were more than `validate.retime_within` apart when timed)."""
    from tasks.runtime.latency import pair_ratio, rounds_of

    x, f = rounds_of(row), rounds_of(fastest)
    if x is not None and f is not None and len(x) == len(f):
        return pair_ratio(x, f)
    return _speed(row) / _speed(fastest), 0.0


def choose(passed: list[Verdict], metrics: dict[str, dict[str, Any]], cfg: PromoteConfig) -> tuple[str | None, str]:
    """Among the candidates that passed every gate, the most faithful to FP32 within the latency of the fastest.

    A candidate whose p50 is within `promote.latency_tie` of the fastest one's, or within the noise the interleaved
    re-timing measured for that pair (whichever is larger), ties with it; the tie goes to the highest agreement with
    FP32, then the lower p50, then the name (so the same numbers always give the same winner). Returns (winner, why).
    """
    if not passed:
        return None, "no candidate passed every gate"
    fastest = min(passed, key=lambda v: (_speed(metrics[v.name]), v.name))
    ties = []
    for v in passed:
        ratio, noise = _slower_by(metrics[v.name], metrics[fastest.name])
        band = max(cfg.latency_tie, noise)
        if ratio - 1.0 <= band:
            ties.append((v, ratio, band))
    agreement = {v.name: float(metrics[v.name]["agreement_map50_95"]) for v, _, _ in ties}
    best = max(ties, key=lambda t: (agreement[t[0].name], -_speed(metrics[t[0].name]), t[0].name))[0]
    fast = f"fastest passing: {fastest.name} (p50 {_speed(metrics[fastest.name]):.3g} ms)"
    if len(ties) == 1:
        why = f"{fast}; no other passing candidate within its latency"
    else:
        tied = ", ".join(
            f"{v.name} ({ratio:.3f}x, within {band:.1%}; agreement {agreement[v.name]:.4f})" for v, ratio, band in ties
        )
        why = f"{fast}; tied within measurement noise: {tied}; the most faithful to FP32 wins: {best.name}"
    if str(metrics[best.name].get("precision", "")) == "fp32":
        why += " (an FP32 model: no INT8 candidate passed every gate and was as fast)"
    return best.name, why


def verdict_tags(decision: Decision) -> dict[str, dict[str, str]]:
    """The `gate.*` tags of each candidate's verdict, gate by gate with its numbers (what the trade-off chart and
    `status` read back)."""
    out = {}
    for name, verdict in decision.verdicts.items():
        tags = {
            "gate.passed": str(verdict.passed).lower(),
            "gate.reasons": "; ".join(verdict.reasons),
            "gate.winner": str(decision.winner == name).lower(),
            "gate.policy": decision.policy[:4900],  # MLflow tag values hold 5000 characters at most
        }
        for c in verdict.checks:
            shown = f"{'pass' if c.passed else 'fail'}: {c.value:.6g} {c.op} {c.threshold:.6g}"
            tags[f"gate.{c.gate}"] = (shown + (f" ({c.note})" if c.note else ""))[:4900]
        out[name] = tags
    return out


def record_verdicts(mc: Any, record: RebuildRecord, decision: Decision) -> None:
    """Each verdict, gate by gate with its numbers, on the candidate's run: tags and `promotion/verdict.json`."""
    for name, tags in verdict_tags(decision).items():
        verdict = decision.verdicts[name]
        run_id = record.candidates[name].run_id
        for key in mc.get_run(run_id).data.tags:  # an earlier decision's gates (a champion then, a smoke test)
            if key.startswith("gate.") and key not in tags:
                mc.delete_tag(run_id, key)
        for key, value in tags.items():
            mc.set_tag(run_id, key, value)
        doc = {
            "candidate": name,
            "passed": verdict.passed,
            "winner": decision.winner,
            "policy": decision.policy,
            "checks": [asdict(c) for c in verdict.checks],
            "champion": asdict(decision.champion) if decision.champion else None,
            "decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        mc.log_text(run_id, json.dumps(doc, indent=2), "promotion/verdict.json")


def target_hardware(backend: str) -> dict[str, Any]:
    """Where the smoke test ran (the machine the release was verified on): CPU model, cores, OS, backend."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    device = "cuda:0" if backend == "tensorrt" else "cpu"
    return {"cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(), "backend": backend, "device": device}


# --- smoke test and deploy ------------------------------------------------------------------------------------------


class SmokeTestError(AlprError):
    """The artifact does not load, run, or reproduce its validation numbers; it is not deployed."""


def holdout_map(candidate: Candidate, holdout_dir: Path, vcfg: ValidateConfig) -> float:
    """mAP50-95 of `candidate` on the labelled holdout, with validation's own functions and settings."""
    ensure_runnable(candidate.path)
    return holdout_map50_95(candidate, holdout_dir, vcfg)


@dataclass(frozen=True)
class AgreementCheck:
    """Without a labelled holdout, the smoke test measures agreement with the rebuild's FP32 reference instead, on
    the frames validation measured it on."""

    reference: Candidate
    frames: tuple[Path, ...]


def agreement_map(candidate: Candidate, check: AgreementCheck, vcfg: ValidateConfig) -> float:
    """Agreement mAP50-95 of `candidate` with the reference's detections, as validation measures it."""
    ensure_runnable(candidate.path)
    return agreement_map50_95(candidate, check.reference, list(check.frames), vcfg)


@dataclass(frozen=True)
class Gate:
    """Where releases go and how they are checked: the gate folder, the registry and the smoke test's holdout (or,
    without a labelled holdout, its agreement check)."""

    cfg: PromoteConfig
    tracking: TrackingConfig
    holdout_dir: Path
    vcfg: ValidateConfig
    agreement: AgreementCheck | None = None


def smoke_test(cand: Candidate, gate: Gate, validated: dict[str, Any]) -> dict[str, float]:
    """Load the verified candidate (`verify_artifact`) with its runtime's loader (Ultralytics `YOLO` on the
    artifact), run it on the labelled holdout (or, without one, on the agreement frames) and check it reproduces the
    validated number within `promote.smoke_tolerance`."""
    key = "map50_95" if gate.agreement is None else "agreement_map50_95"
    if key not in validated:
        raise SmokeTestError(f"{cand.folder.name}: no validated {key} to compare the smoke test with")
    expected, tolerance = float(validated[key]), gate.cfg.smoke_tolerance
    try:
        if gate.agreement is None:
            got = holdout_map(cand, gate.holdout_dir, gate.vcfg)
        else:
            got = agreement_map(cand, gate.agreement, gate.vcfg)
    except Exception as e:  # any loader or runtime failure means the gate could not run it either
        raise SmokeTestError(f"{cand.folder.name}: the artifact failed to load or run: {e}") from e
    diff = abs(got - expected)
    if diff > tolerance:
        raise SmokeTestError(
            f"{cand.name}: smoke-test {key} {got:.4f} differs from the validated {expected:.4f} by "
            f"{diff:.4f} > promote.smoke_tolerance {tolerance}; the artifact is not the one that was validated"
        )
    log.info("smoke test of %s: %s %.4f (validated %.4f, tolerance %s)", cand.name, key, got, expected, tolerance)
    return {key: got, f"expected_{key}": expected, "tolerance": tolerance}


@dataclass(frozen=True)
class Recorded:
    """The artifact hash the MLflow store recorded for a version when its rebuild logged it, and where."""

    sha256: str
    where: str


def recorded(mc: Any, tracking: TrackingConfig, run_id: str, version: str | None) -> Recorded:
    """The build-time sha256 of a registry version's artifact, read back from the store (run and version tags)."""
    store = redact_uri(tracking.uri)
    sha = recorded_sha256(mc, store, run_id, tracking.registered_model if version else None, version)
    where = f"{store} (run {run_id}" + (f", version {version})" if version else ")")
    return Recorded(sha, where)


def fetch_verified(
    mc: Any, tracking: TrackingConfig, source: str, run_id: str, version: str | None, dst: Path
) -> Candidate:
    """Download a registered artifact folder and verify it against the store's record before anything loads it."""
    rec = recorded(mc, tracking, run_id, version)
    return verify_artifact(download_version(source, dst, tracking.uri), rec.sha256, rec.where)


def is_gate_engine(cand: Candidate) -> bool:
    """A TensorRT engine the gate built and measured (`track.register_gate_engine`): not runnable on this host."""
    return cand.backend == "tensorrt" and cand.gate_built and cand.path.suffix == ".engine"


GATE_AT_LOAD = (
    "not run on this host (TensorRT runs only on the gate's GPU): the gate built and measured these exact bytes, and "
    "the gate runtime verifies the engine's sha256 against this manifest, and its GPU and TensorRT version against "
    "the engine header, before it loads it"
)


def gate_measured(
    cand: Candidate, tracking: TrackingConfig, manifest: dict[str, Any], rec: Recorded
) -> tuple[dict[str, Any], dict[str, Any]]:
    """In place of the host smoke test for a gate-built engine (verified against `rec` already): the gate's own
    record of the engine it built and measured (`gate_build/engine_record.json` on the candidate's run, logged by
    the gate) must name exactly these bytes (its engine sha256 is the recorded one; the plan beside it and inside
    it match), and the run must hold the numbers the gate measured on them. Returns (the manifest's `smoke_test`
    entry, its `target_hardware`); raises `SmokeTestError` otherwise, so nothing unmeasured is deployed."""
    from tasks.edge.gate_build import RESULT_PATH
    from tasks.runtime.tensorrt import ENGINE_RECORD_JSON, EngineMismatch, check_engine_record

    run_id, where = str(manifest["run_id"]), f"{RESULT_PATH}/{ENGINE_RECORD_JSON}"
    with tempfile.TemporaryDirectory(prefix="alpr-gate-record-") as tmp:
        try:
            record = json.loads(Path(client(tracking).download_artifacts(run_id, where, tmp)).read_text())
        except Exception as e:  # absent or unreadable: nothing shows the gate ran this engine
            raise SmokeTestError(
                f"{cand.path}: run {run_id} holds no readable {where} ({type(e).__name__}: {e}): nothing shows the "
                "gate built and measured this engine, so it is not deployed"
            ) from e
    if record.get("engine_sha256") != rec.sha256:
        raise SmokeTestError(
            f"{cand.path}: the engine recorded in {rec.where} (sha256 {rec.sha256}) is not the one the gate built and "
            f"measured ({where} of run {run_id}: {record.get('engine_sha256')}); it is not deployed"
        )
    try:
        check_engine_record(cand.path, record)
    except EngineMismatch as e:
        raise SmokeTestError(f"{cand.path}: {e}") from e
    numbers = manifest["metrics"]
    needed = ("gate_frames", "agreement_map50_95", "latency_p50_ms", "latency_p95_ms")
    missing = [k for k in needed if k not in numbers]
    if missing:
        raise SmokeTestError(f"{cand.path}: run {run_id} lacks the gate's measurement {missing}; it is not deployed")
    measured = {
        "run_id": run_id,
        "record": where,
        "engine_sha256": rec.sha256,
        "plan_sha256": record["plan_sha256"],
        "frames": int(numbers["gate_frames"]),
        **{k: numbers[k] for k in needed[1:]},
        **{k: numbers[k] for k in ("map50_95",) if k in numbers},
    }
    hardware = {**(record.get("device") or {}), "backend": "tensorrt", "device": "cuda:0", "measured_on": "the gate"}
    log.info("%s: the gate measured these bytes on %d frames (agreement %.4f)", cand.name, measured["frames"],
             measured["agreement_map50_95"])  # fmt: skip
    return {"host": GATE_AT_LOAD, "gate_build": measured}, hardware


def deploy(gate: Gate, source_uri: str, version: str, manifest: dict[str, Any], rec: Recorded) -> Path:
    """Download the registered artifact into `releases/v<version>/`, verify it against the hash the store recorded
    at build time (`rec`), smoke-test it, then switch `current`.

    A complete release of the same version already in place, with that hash, is not replaced (the gate may be
    running it); `current` is just pointed at it.
    """
    gate_dir = gate.cfg.gate_dir
    release = gate_paths(gate_dir).release(version)
    if release_is_complete(release, rec.sha256):
        log.info("%s is already complete; pointing current at it", release)
    else:
        with atomic_dir(release) as tmp:
            download_version(source_uri, tmp / ".download", gate.tracking.uri)
            for item in (tmp / ".download").iterdir():
                item.rename(tmp / item.name)
            (tmp / ".download").rmdir()
            checkpoint("after_download")
            cand = verify_artifact(tmp, rec.sha256, rec.where)
            if is_gate_engine(cand):  # the host cannot run it: the gate's measurement of these bytes instead
                smoke, hardware = gate_measured(cand, gate.tracking, manifest, rec)
            else:
                smoke, hardware = smoke_test(cand, gate, manifest["metrics"]), target_hardware(cand.backend)
            checkpoint("after_smoke_test")
            full = {
                **manifest,
                "sha256": rec.sha256,
                VERIFIED_KEY: rec.where,
                "artifact": cand.artifact,
                "imgsz": cand.imgsz,
                "input_shape": list(cand.input_shape),  # (height, width) the gate feeds it
                "toolchain": cand.toolchain,
                "target_hardware": hardware,
                "smoke_test": smoke,
            }
            atomic_write_text(tmp / MANIFEST, json.dumps(full, indent=2, sort_keys=True))
        checkpoint("after_release_written")
    checkpoint("before_switch")
    switch_current(gate_dir, release)
    checkpoint("after_switch")
    return release


def manifest_for(
    tracking: TrackingConfig, version: str, run_id: str, candidate: str, row: dict[str, Any], rebuild_run_id: str
) -> dict[str, Any]:
    """What a release records about where it came from; deploy adds the hash, toolchain, hardware, smoke test."""
    return {
        "version": str(version),
        "registered_model": tracking.registered_model,
        "run_id": run_id,
        "rebuild_run_id": rebuild_run_id,
        "candidate": candidate,
        "metrics": {k: v for k, v in row.items() if isinstance(v, int | float)},
        "backend": row.get("backend"),
        "precision": row.get("precision"),
        "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def evaluate_champion(
    mc: Any, tracking: TrackingConfig, holdout_dir: Path, vcfg: ValidateConfig, names: Aliases
) -> ChampionScore | None:
    """Download the gate's champion version from the registry, verify it, and measure its mAP50-95 on this
    holdout (None: no champion yet)."""
    mv = version_by_alias(mc, tracking.registered_model, names.champion)
    if mv is None:
        return None
    with tempfile.TemporaryDirectory(prefix="alpr-champion-") as tmp:
        cand = fetch_verified(mc, tracking, mv.source, mv.run_id, str(mv.version), Path(tmp) / "champion")
        checkpoint("after_champion_download")
        if is_gate_engine(cand):  # the host cannot run it; the gate's detections were scored on the holdout then
            recorded_map = mc.get_run(mv.run_id).data.metrics.get("map50_95")
            if recorded_map is None:
                raise RuntimeError(
                    f"champion version {mv.version} ({cand.name}) is an engine built on the gate and its run has no "
                    "map50_95 (no labelled holdout then): challengers cannot be compared with it here"
                )
            basis = (
                f"champion {mv.version} is a gate-built engine the host cannot run: its mAP50-95 as scored from the "
                "gate's detections on the labelled holdout of its own rebuild"
            )
            log.warning("champion version %s (%s): %s", mv.version, cand.name, basis)
            return ChampionScore(str(mv.version), cand.name, float(recorded_map), basis)
        try:
            score = holdout_map(cand, holdout_dir, vcfg)
        except Exception as e:  # e.g. a TensorRT champion on a machine without its GPU
            raise RuntimeError(
                f"champion version {mv.version} ({cand.name}, {cand.backend}) cannot be evaluated on this machine, so "
                f"challengers cannot be compared with it: {e}. Promote on the machine the champion runs on."
            ) from e
    log.info("champion version %s (%s): mAP50-95 %.4f on this holdout", mv.version, cand.name, score)
    return ChampionScore(str(mv.version), cand.name, score)


def _log_event(mc: Any, tracking: TrackingConfig, kind: str, tags: dict[str, str]) -> str:
    """A small MLflow run recording a promotion or rollback (kind tag `promotion` / `rollback`)."""
    exp = experiment_id(mc, tracking)
    run = mc.create_run(exp, tags={KIND_TAG: kind, "mlflow.runName": f"{kind}-v{tags.get('to_version', '')}", **tags})
    mc.set_terminated(run.info.run_id)
    return run.info.run_id


def reconcile(mc: Any, tracking: TrackingConfig, gate_dir: Path, names: Aliases) -> tuple[str, ...]:
    """Make the aliases agree with what the gate runs; returns (and logs) each repair. Called under the promotion
    lock only (outside it, it would "repair" a promotion in progress).

    The deployed manifest (`current`) is the truth: promotion and rollback switch `current` first and move the
    aliases after, so a killed run leaves the aliases behind, never ahead. A `previous` equal to the deployed
    version means a rollback to it was interrupted (its champion moves, `previous` is cleared); any other
    disagreement is an interrupted promotion (`crown` the deployed version: the old champion becomes `previous`).
    """
    release = current_release(gate_dir)
    if release is None:
        return ()
    deployed = str(read_manifest(release)["version"])
    name = tracking.registered_model
    champ, prev = (version_by_alias(mc, name, a) for a in (names.champion, names.previous))
    c, p = (None if mv is None else str(mv.version) for mv in (champ, prev))
    repairs: list[str] = []
    if c != deployed and p == deployed:
        set_alias(mc, name, names.champion, deployed)
        delete_alias(mc, name, names.previous)
        repairs.append(f"champion {c} -> {deployed} and previous removed (a rollback to {deployed} was interrupted)")
    elif c != deployed:
        crown(mc, name, deployed, names)
        repairs.append(
            f"champion {c} -> {deployed}"
            + (f", previous -> {c}" if c is not None else "")
            + f" (a promotion of {deployed} was interrupted after the switch)"
        )
    elif p == deployed:
        delete_alias(mc, name, names.previous)
        repairs.append(f"previous {p} removed: it is the champion (a rollback was interrupted)")
    for repair in repairs:
        log.warning("reconciled %s with %s (the deployed release is the truth): %s", name, release, repair)
    return tuple(repairs)


def open_gate(mc: Any, tracking: TrackingConfig, gate_dir: Path) -> tuple[Aliases, tuple[str, ...]]:
    """Under the promotion lock: the gate folder's aliases (its id is created on first use) and what was adopted
    from a version before scoped aliases and verified releases. A gate folder deployed before has no id: it takes
    over the project-wide `champion`/`previous` when the project-wide champion is what it runs (otherwise its
    champion is set from its deployed release by `reconcile`), and every release without a verification record
    is checked against the hash its MLflow run and registry version recorded: adopted when it matches, left
    unverified (never loaded) when not."""
    gid, created = ensure_gate_id(gate_dir)
    names, name, done = aliases_for(gid), tracking.registered_model, []
    release = current_release(gate_dir)
    if created and release is not None:
        deployed = str(read_manifest(release)["version"])
        old_c, old_p = (version_by_alias(mc, name, a) for a in (LEGACY.champion, LEGACY.previous))
        if old_c is not None and str(old_c.version) == deployed:
            set_alias(mc, name, names.champion, deployed)
            if old_p is not None:
                set_alias(mc, name, names.previous, str(old_p.version))
            previous = "" if old_p is None else f", {LEGACY.previous} {old_p.version} as {names.previous}"
            done.append(f"upgrade: adopted the project-wide {LEGACY.champion} {deployed} as {names.champion}{previous}")
        else:
            done.append(
                f"upgrade: the project-wide {LEGACY.champion} "
                f"({'none' if old_c is None else old_c.version}) is not what {gate_dir} runs ({deployed}); not "
                f"adopted (its {names.champion} is set from the deployed release)"
            )
    done += adopt_releases(mc, tracking, gate_dir)
    for line in done:
        log.warning("%s", line)
    return names, tuple(done)


def adopt_releases(mc: Any, tracking: TrackingConfig, gate_dir: Path) -> list[str]:
    """Releases deployed before verification existed: record the hash their MLflow run and registry version
    recorded at build time when the artifact matches it; refuse (leave unverified, so never loaded) when not."""
    done = []
    for release in sorted(gate_paths(gate_dir).releases.glob("v*")):
        try:
            manifest = read_manifest(release)
        except VerificationError as e:
            done.append(f"upgrade: {release.name} not adopted: {e}")
            continue
        if manifest.get(VERIFIED_KEY):
            continue
        try:
            rec = recorded(mc, tracking, str(manifest["run_id"]), str(manifest["version"]))
            cand = verify_artifact(release, rec.sha256, rec.where)
        except (VerificationError, KeyError) as e:
            done.append(f"upgrade: {release.name} NOT adopted and will not be loaded: {e}")
            continue
        manifest.update({"sha256": rec.sha256, "artifact": cand.artifact, VERIFIED_KEY: f"{rec.where}, on upgrade"})
        atomic_write_text(release / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))
        done.append(f"upgrade: {release.name} adopted (its artifact matches {rec.where})")
    return done


def adopt_at_gate_start(tracking: TrackingConfig, gate_dir: Path) -> tuple[str, ...]:
    """Before the gate runtime starts: when a release in `gate_dir` has no verification record (deployed before
    the upgrade), adopt what can be adopted (`open_gate`, under the promotion lock) and say what was done. A gate
    whose releases are all verified never contacts the registry here."""
    unverified = [r for r in gate_paths(gate_dir).releases.glob("v*") if not _manifest_or_empty(r).get(VERIFIED_KEY)]
    if not unverified:
        return ()
    with promotion_lock(gate_dir):
        return open_gate(client(tracking), tracking, gate_dir)[1]


def _manifest_or_empty(release: Path) -> dict[str, Any]:
    try:
        return read_manifest(release)
    except VerificationError:
        return {}


@dataclass(frozen=True)
class PromoteResult:
    decision: Decision
    version: str | None = None
    release: Path | None = None
    repairs: tuple[str, ...] = ()  # alias repairs made first (`reconcile`)
    unchanged: str = ""  # why nothing was deployed although a winner passed: the gate runs its exact bytes already


def promote(
    record: RebuildRecord,
    metrics: dict[str, dict[str, Any]],
    cfg: PromoteConfig,
    tracking: TrackingConfig,
    holdout_dir: Path,
    vcfg: ValidateConfig,
    reference: str = "fp32",
    frames_dir: Path | None = None,
) -> PromoteResult:
    """Gate every candidate (against FP32 and the champion), log each verdict to its run, mark the winner
    `challenger`, deploy it after a smoke test, then make it `champion` (the old one becomes `previous`).

    A rebuild validated without a labelled holdout (`holdout: no labelled holdout`) is judged on agreement alone:
    no mAP gate and no champion comparison (both need labels), promoted only with `promote.allow_unlabelled`, and
    smoke-tested on agreement with its own FP32 `reference` on the frames of `frames_dir`.
    """
    name = tracking.registered_model
    mc = client(tracking)
    unlabelled = any(row.get("holdout") == NO_HOLDOUT for row in metrics.values())
    with promotion_lock(cfg.gate_dir), tempfile.TemporaryDirectory(prefix="alpr-reference-") as scratch:
        names, adopted = open_gate(mc, tracking, cfg.gate_dir)
        repairs = adopted + reconcile(mc, tracking, cfg.gate_dir, names)
        checkpoint("before_champion")
        champion = None if unlabelled else evaluate_champion(mc, tracking, holdout_dir, vcfg, names)
        checkpoint("after_champion")
        decision = decide(metrics, cfg, champion)
        record_verdicts(mc, record, decision)
        if decision.winner is None:
            log.warning("no candidate passed the gates; nothing promoted:\n%s", decision.explain())
            return PromoteResult(decision, repairs=repairs)
        winner = record.candidates[decision.winner]
        if not winner.version:
            raise RuntimeError(f"candidate '{decision.winner}' (run {winner.run_id}) has no registry version")
        same = already_deployed(mc, tracking, cfg.gate_dir, winner.run_id, winner.version)
        if same is not None:
            release, why = same
            mc.set_tag(winner.run_id, "gate.promotion", f"no-op: {why}"[:4900])
            log.info("promotion of %s (version %s) is a no-op: %s", decision.winner, winner.version, why)
            return PromoteResult(decision, winner.version, release, repairs, unchanged=why)
        set_alias(mc, name, names.challenger, winner.version)
        row = metrics[decision.winner]
        manifest = manifest_for(tracking, winner.version, winner.run_id, decision.winner, row, record.parent_run_id)
        try:  # whatever refuses the winner from here on takes the challenger alias back
            check = _agreement_check(record, reference, frames_dir, tracking, Path(scratch)) if unlabelled else None
            rec = recorded(mc, tracking, winner.run_id, winner.version)
            gate = Gate(cfg, tracking, holdout_dir, vcfg, check)
            release = deploy(gate, winner.source, winner.version, manifest, rec)
        except (SmokeTestError, VerificationError) as e:
            mc.set_tag(winner.run_id, "gate.smoke_test", f"fail: {e}")
            delete_alias(mc, name, names.challenger)
            raise
        smoke = read_manifest(release).get("smoke_test") or {}
        mc.set_tag(winner.run_id, "gate.smoke_test", "pass" if "gate_build" not in smoke else f"pass: {GATE_AT_LOAD}")
        old = crown(mc, name, winner.version, names)
        checkpoint("after_aliases")
        _log_event(
            mc,
            tracking,
            "promotion",
            {"from_version": old or "", "to_version": winner.version, "candidate": decision.winner},
        )
        prune_releases(cfg.gate_dir, cfg.keep_releases)
    log.info("promoted %s (version %s) to %s", decision.winner, winner.version, release)
    return PromoteResult(decision, winner.version, release, repairs)


def already_deployed(
    mc: Any, tracking: TrackingConfig, gate_dir: Path, run_id: str, version: str
) -> tuple[Path, str] | None:
    """(the release, why) when the gate's current release holds exactly the winner's bytes (its verified sha256 is
    the one the store recorded for the winner) and is complete: promoting it again would re-deploy the same bytes
    over the champion as a new release. None otherwise (then the winner is deployed as usual)."""
    release = current_release(gate_dir)
    if release is None:
        return None
    manifest = read_manifest(release)
    rec = recorded(mc, tracking, run_id, version)
    if (
        manifest.get("sha256") != rec.sha256
        or not manifest.get(VERIFIED_KEY)
        or not release_is_complete(release, rec.sha256)
    ):
        return None
    why = (
        f"the gate already runs these exact bytes (sha256 {rec.sha256[:12]}, release {release.name}, version "
        f"{manifest.get('version')}): nothing deployed, no new release, aliases unchanged"
    )
    return release, why


def _agreement_check(
    record: RebuildRecord, reference: str, frames_dir: Path | None, tracking: TrackingConfig, scratch: Path
) -> AgreementCheck:
    """The rebuild's own FP32 reference (downloaded as registered) and the agreement frames validation used."""
    folder = frames_folder(frames_dir) if frames_dir is not None else None
    frames = list_images(folder) if folder is not None else []
    if reference not in record.candidates or not frames:
        raise SmokeTestError(
            f"no labelled holdout, and no reference '{reference}' in rebuild {record.parent_run_id} or no agreement "
            f"frames in {frames_dir}: the release cannot be smoke-tested"
        )
    ref = record.candidates[reference]
    mc = client(tracking)
    return AgreementCheck(
        fetch_verified(mc, tracking, ref.source, ref.run_id, ref.version or None, scratch / "reference"), tuple(frames)
    )


def require_latest_rebuild(tracking: TrackingConfig) -> tuple[RebuildRecord, dict[str, dict[str, Any]]]:
    """The newest finished rebuild and its metrics; fails with what to run when there is none."""
    latest = latest_rebuild(tracking)
    if latest is None:
        raise NoRebuild(f"no finished rebuild in {tracking.shown_uri}", remedy=Remedy.REBUILD)
    return latest


# --- rollback -------------------------------------------------------------------------------------------------------


class RollbackError(AlprError):
    """Nothing to roll back to, or the previous release cannot be restored."""


@dataclass(frozen=True)
class RollbackResult:
    from_version: str | None
    to_version: str
    release: Path
    mlflow_run_id: str
    repairs: tuple[str, ...] = ()  # alias repairs made first (`reconcile`)


def rollback(cfg: PromoteConfig, tracking: TrackingConfig, holdout_dir: Path, vcfg: ValidateConfig) -> RollbackResult:
    """Point `current` and `champion` back at the `previous` version, in one step; logged as an MLflow run.

    The release folder is reused when it is still there and complete; if it was pruned it is downloaded and
    smoke-tested again. `current` moves first, then the aliases: a kill in between is finished by re-running.
    `previous` is then cleared: a rollback is one undo, not a walk back through history.
    """
    name = tracking.registered_model
    mc = client(tracking)
    with promotion_lock(cfg.gate_dir):
        names, adopted = open_gate(mc, tracking, cfg.gate_dir)
        repairs = adopted + reconcile(mc, tracking, cfg.gate_dir, names)
        prev = version_by_alias(mc, name, names.previous)
        if prev is None:
            raise RollbackError(
                f"nothing to roll back to: model '{name}' in {redact_uri(tracking.uri)} has no '{names.previous}' "
                f"alias for {cfg.gate_dir} "
                "(no promotion has replaced a champion yet, or the last rollback already used it)"
            )
        champ = version_by_alias(mc, name, names.champion)
        from_version = str(champ.version) if champ is not None else None
        run = mc.get_run(prev.run_id)
        row = {**run.data.metrics, "backend": run.data.tags.get("backend"), "precision": run.data.tags.get("precision")}
        if "map50_95" not in row:
            raise RollbackError(f"version {prev.version} (run {prev.run_id}) has no map50_95 metric to smoke-test")
        manifest = manifest_for(
            tracking, str(prev.version), prev.run_id, run.data.tags.get("candidate", ""), row, "rollback"
        )
        rec = recorded(mc, tracking, prev.run_id, str(prev.version))
        try:
            release = deploy(Gate(cfg, tracking, holdout_dir, vcfg), prev.source, str(prev.version), manifest, rec)
        except (SmokeTestError, VerificationError) as e:
            raise RollbackError(f"previous version {prev.version} cannot be restored: {e}") from e
        set_alias(mc, name, names.champion, str(prev.version))
        checkpoint("rollback_after_champion")
        delete_alias(mc, name, names.previous)
        run_id = _log_event(
            mc, tracking, "rollback", {"from_version": from_version or "", "to_version": str(prev.version)}
        )
    log.info("rolled back from version %s to %s (%s)", from_version, prev.version, release)
    return RollbackResult(from_version, str(prev.version), release, run_id, repairs)
