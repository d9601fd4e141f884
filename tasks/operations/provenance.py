"""What the MLflow store recorded about a registered artifact when its rebuild logged it (its sha256), and the
download verified against that record before anything loads it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.support.candidate import Candidate
from tasks.support.config import TrackingConfig
from tasks.support.registry import download_version, redact_uri
from tasks.support.verify import recorded_sha256, verify_artifact


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
