"""The smoke test of a release before it is deployed: the verified artifact loads, runs and reproduces its validated
number on this host; for an engine only the gate's GPU runs, the gate's own record that it built and measured these
exact bytes stands in for it."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.edge.tensorrt import ensure_runnable
from tasks.operations.provenance import Recorded
from tasks.pipeline.validate import agreement_map50_95, holdout_map50_95
from tasks.support.candidate import Candidate
from tasks.support.config import PromoteConfig, TrackingConfig, ValidateConfig
from tasks.support.errors import AlprError
from tasks.support.tracking import client

log = logging.getLogger(__name__)


class SmokeTestError(AlprError):
    """The artifact does not load, run, or reproduce its validation numbers; it is not deployed."""


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
    """Load the verified candidate (`verify_artifact`) on its runtime through the gate's own detector path
    (`tasks/edge` `Detector`, as validation runs it), run it on the labelled holdout (or, without one, on the
    agreement frames) and check it reproduces the validated number within `promote.smoke_tolerance`."""
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
    from tasks.edge.tensorrt import ENGINE_RECORD_JSON, EngineMismatch, check_engine_record

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
