"""Deploy a release into the gate folder atomically, after verifying and smoke-testing it.

Layout of the gate folder: `releases/v<version>/` (the artifact as registered in MLflow, its `candidate.json`, and
`manifest.json`) and a `current` symlink switched with one rename, so the gate runtime sees the old release or the
new one, never a partial copy. A promotion or rollback that moved `current` is logged as a small MLflow run.

Fault injection (tests only, `tasks/support/faults.py`): `ALPR_KILL_AT=<checkpoint>` SIGKILLs the process at that
checkpoint, `ALPR_PAUSE_AT` pauses it there until the test resumes it.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.operations.provenance import Recorded
from tasks.operations.smoke import Gate, gate_measured, is_gate_engine, smoke_test, target_hardware
from tasks.runtime.releases import (
    GATE_ID_KEY,
    MANIFEST,
    VERIFIED_KEY,
    gate_id,
    gate_paths,
    release_is_complete,
    switch_current,
)
from tasks.support.config import TrackingConfig
from tasks.support.faults import checkpoint
from tasks.support.fsutil import atomic_dir, atomic_write_text
from tasks.support.registry import download_version
from tasks.support.verify import verify_artifact

log = logging.getLogger(__name__)


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
                # the region of interest it was built for: every frame cropped to it first (x1, y1, x2, y2 pixels of
                # frame_shape (height, width) frames; [] the full frame), as its embedded metadata says
                "crop": list(cand.crop),
                "frame_shape": list(cand.frame_shape),
                "toolchain": cand.toolchain,
                "target_hardware": hardware,
                "smoke_test": smoke,
                GATE_ID_KEY: gate_id(gate_dir),  # a lost gate.json is recovered from here (`ensure_gate_id`)
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
