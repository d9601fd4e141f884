"""Pick the champion and deploy it to the gate runtime folder atomically, after a smoke test.

Layout of the gate folder: `releases/v<version>/` (the artifact as registered in MLflow, plus `manifest.json`) and a
`current` symlink that is switched with one rename, so the gate runtime sees the old release or the new one, never
a partial copy.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.build import CANDIDATE_JSON, path_sha256
from tasks.config import PromoteConfig, TrackingConfig
from tasks.fsutil import atomic_dir, atomic_write_text
from tasks.track import RebuildRecord, client
from tasks.validate import holdout_images

log = logging.getLogger(__name__)

CHAMPION, PREVIOUS = "champion", "previous"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Verdict:
    name: str
    passed: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Decision:
    """The winner (None when nothing passed) and why each candidate passed or failed."""

    winner: str | None
    verdicts: dict[str, Verdict] = field(default_factory=dict)

    def explain(self) -> str:
        lines = [f"{v.name}: {'PASS' if v.passed else 'FAIL'} ({'; '.join(v.reasons)})" for v in self.verdicts.values()]
        return "\n".join(lines)


@dataclass(frozen=True)
class PromoteResult:
    decision: Decision
    version: str | None = None
    release: Path | None = None


def decide(metrics: dict[str, dict[str, Any]], cfg: PromoteConfig) -> Decision:
    """The fastest candidate (median latency, any precision) whose mAP50-95 drop vs FP32 is within the gate."""
    verdicts = {}
    for name, row in metrics.items():
        drop = float(row["map_drop"])
        ok = drop <= cfg.max_map_drop
        reason = f"mAP50-95 drop {drop:+.4f} {'<=' if ok else '>'} {cfg.max_map_drop}"
        verdicts[name] = Verdict(name, ok, (reason, f"p50 {float(row['latency_p50_ms']):.2f} ms"))
    passed = [n for n, v in verdicts.items() if v.passed]
    winner = min(passed, key=lambda n: float(metrics[n]["latency_p50_ms"])) if passed else None
    return Decision(winner, verdicts)


def current_release(gate_dir: Path) -> Path | None:
    """The release `current` points at, or None before the first promotion."""
    link = gate_dir / "current"
    return (gate_dir / os.readlink(link)).resolve() if link.is_symlink() else None


def switch_current(gate_dir: Path, release: Path) -> None:
    """Point `current` at `release` with one atomic rename of a fresh symlink."""
    tmp = gate_dir / f".current.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(release.relative_to(gate_dir))
    os.replace(tmp, gate_dir / "current")


class SmokeTestError(RuntimeError):
    """The artifact does not load or run with its runtime; it is not deployed."""


def smoke_test(release: Path, frame_path: Path, imgsz: int) -> int:
    """Load the release with the runtime's own loader and run it on a holdout frame; returns the box count."""
    from ultralytics import YOLO

    meta = json.loads((release / CANDIDATE_JSON).read_text())
    try:
        model = YOLO(str(release / meta["artifact"]), task="detect")
        result = model.predict(str(frame_path), imgsz=imgsz, device="cpu", verbose=False)[0]
    except Exception as e:  # any loader or runtime failure means the gate could not run it either
        raise SmokeTestError(f"{meta['name']} ({meta['artifact']}) failed to load or run: {e}") from e
    return len(result.boxes)


def deploy(source_uri: str, gate_dir: Path, version: str, manifest: dict[str, Any], frame: Path, imgsz: int) -> Path:
    """Download the registered artifact into `releases/v<version>/`, smoke-test it, then switch `current`.

    A release already deployed with the same hash is not replaced (the gate may be running it); `current` is
    just pointed at it.
    """
    import mlflow.artifacts

    release = gate_dir / "releases" / f"v{version}"
    if (release / MANIFEST).is_file():
        existing = json.loads((release / MANIFEST).read_text())
        meta = json.loads((release / CANDIDATE_JSON).read_text())
        if existing.get("sha256") == meta["sha256"] == path_sha256(release / meta["artifact"]):
            switch_current(gate_dir, release)
            return release
    with atomic_dir(release) as tmp:
        mlflow.artifacts.download_artifacts(artifact_uri=source_uri, dst_path=str(tmp))
        downloaded = tmp / source_uri.rstrip("/").rsplit("/", 1)[-1]
        for item in downloaded.iterdir():
            item.rename(tmp / item.name)
        downloaded.rmdir()
        meta = json.loads((tmp / CANDIDATE_JSON).read_text())
        sha = path_sha256(tmp / meta["artifact"])
        if sha != meta["sha256"]:
            raise RuntimeError(f"{source_uri}: artifact sha256 {sha} differs from the built {meta['sha256']}")
        boxes = smoke_test(tmp, frame, imgsz)
        manifest = {**manifest, "sha256": sha, "toolchain": meta["toolchain"], "smoke_test_boxes": boxes}
        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))
    switch_current(gate_dir, release)
    return release


def prune_releases(gate_dir: Path, keep: int) -> None:
    """Delete the oldest releases beyond `keep`, never the one `current` points at."""
    current = current_release(gate_dir)
    releases = sorted((gate_dir / "releases").glob("v*"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in releases[keep:]:
        if old.resolve() != current:
            shutil.rmtree(old, ignore_errors=True)


def promote(
    record: RebuildRecord,
    metrics: dict[str, dict[str, Any]],
    cfg: PromoteConfig,
    tracking: TrackingConfig,
    holdout_dir: Path,
    imgsz: int,
) -> PromoteResult:
    """Decide, log each verdict to its run, deploy the winner and move the `champion` alias to it."""
    from mlflow.exceptions import MlflowException

    frame = holdout_images(holdout_dir)[0]
    decision = decide(metrics, cfg)
    mc = client(tracking)
    for name, verdict in decision.verdicts.items():
        run_id = record.candidates[name].run_id
        mc.set_tag(run_id, "gate.passed", str(verdict.passed).lower())
        mc.set_tag(run_id, "gate.reasons", "; ".join(verdict.reasons))
    if decision.winner is None:
        log.warning("no candidate passed the gates; nothing promoted:\n%s", decision.explain())
        return PromoteResult(decision)
    winner = record.candidates[decision.winner]
    row = metrics[decision.winner]
    manifest = {
        "version": winner.version,
        "registered_model": tracking.registered_model,
        "run_id": winner.run_id,
        "rebuild_run_id": record.parent_run_id,
        "candidate": decision.winner,
        "metrics": {k: v for k, v in row.items() if isinstance(v, int | float)},
        "backend": row.get("backend"),
        "precision": row.get("precision"),
        "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    release = deploy(winner.source, cfg.gate_dir, winner.version, manifest, frame, imgsz)
    name = tracking.registered_model
    try:
        old = mc.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:  # no champion yet
        old = None
    if old is not None and str(old.version) != winner.version:
        mc.set_registered_model_alias(name, PREVIOUS, old.version)
    mc.set_registered_model_alias(name, CHAMPION, winner.version)
    prune_releases(cfg.gate_dir, cfg.keep_releases)
    log.info("promoted %s (version %s) to %s", decision.winner, winner.version, release)
    return PromoteResult(decision, winner.version, release)
