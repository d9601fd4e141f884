"""The unchanged rebuild: same inputs as the last successful rebuild, so nothing to build, measure or register.

A rebuild's inputs are the videos (content hashes, memoised by path/size/mtime/inode in the frame cache as
extraction does), the labelled holdout (contents), the videos reserved for it, every parameter, the code (package
version and source hash), the toolchain and the hardware (`tasks/support/fingerprint.py`). The region of interest
the INT8 engines are cropped to is covered too: it is learned from the calibration videos by the base model under
the `build.roi*` parameters, all of them inputs here (the region itself is learned after this check). Their
fingerprint is recorded on the parent run of every rebuild that finished, promotion included (`record_fingerprint`,
the flow's last step). A rebuild whose fingerprint equals the one of the newest finished rebuild stops at its first
step: it registers nothing, promotes nothing, and logs one small MLflow run (kind `rebuild-unchanged`) that names the
rebuild it matched, so every rebuild still leaves a record. `alpr-ops rebuild --force` rebuilds anyway.

The newest finished rebuild is the one compared with: after inputs A, then B, then A again, the third is a real
rebuild (the champion is B's). A rebuild that failed (or older code's) has no fingerprint, so the next one rebuilds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from tasks.pipeline.extract import reserved_videos
from tasks.pipeline.track import newest_rebuild_run
from tasks.support import fingerprint, machine
from tasks.support.config import Params, TrackingConfig
from tasks.support.errors import Remedy
from tasks.support.hashing import content_key
from tasks.support.tracking import client, small_run
from tasks.support.videos import list_videos, snapshot_videos

log = logging.getLogger(__name__)

FINGERPRINT_TAG = "alpr.inputs_fingerprint"  # on a rebuild's parent run, once the whole rebuild finished
UNCHANGED_KIND = "rebuild-unchanged"  # `alpr.kind` of the small run an unchanged rebuild logs
MATCHED_TAG = "alpr.matched_rebuild"  # on that run: the parent run id of the rebuild it matched
REMEDY_TAG = "alpr.remedy"  # on that run: what rebuilds anyway (the CLI words it: `cli/advice.py`)
UNCHANGED_REMEDY = Remedy.FORCE_REBUILD


@dataclass(frozen=True)
class Fingerprint:
    """The digest of a rebuild's inputs, and the parts it was made from (what a reader compares to see why)."""

    digest: str
    parts: dict[str, Any]


@dataclass(frozen=True)
class InputsCheck:
    """This rebuild's inputs and, when they equal the newest finished rebuild's, that rebuild's parent run id."""

    fingerprint: Fingerprint
    matched_run_id: str | None = None
    forced: bool = False


def inputs_fingerprint(params: Params) -> Fingerprint:
    """The fingerprint of a rebuild's inputs (see the module docstring). Reads the videos' hashes from the frame
    cache's memo where their path, size, mtime and inode are unchanged, so demo-size footage takes milliseconds."""
    p = params.paths
    videos, _ = list_videos(p.videos)
    skipped: dict[str, str] = {}
    snapshot = snapshot_videos(videos, p.frame_cache, skipped)
    parts: dict[str, Any] = {
        "videos": sorted((v.name, v.size_bytes, v.sha256) for v in snapshot),
        "unreadable_videos": sorted(skipped),
        "reserved_videos": list(reserved_videos(p.videos, p.holdout, p.label_proposal, params.label)),
        "holdout": fingerprint.folder_hash(p.holdout),
        "params": params.model_dump(mode="json", by_alias=True),
        "code": fingerprint.code_version(),
        "toolchain": fingerprint.toolchain(),
        "hardware": machine.hardware(),
    }
    return Fingerprint(content_key(parts), parts)


def last_rebuild(tracking: TrackingConfig) -> tuple[str, str | None] | None:
    """(parent run id, its recorded fingerprint or None) of the newest finished rebuild; None when there is none."""
    run = newest_rebuild_run(client(tracking), tracking)
    if run is None:
        return None
    return run.info.run_id, run.data.tags.get(FINGERPRINT_TAG)


def check_inputs(params: Params, force: bool = False) -> InputsCheck:
    """This rebuild's fingerprint, and the rebuild it matches (the newest finished one, if its fingerprint is the
    same); with `force`, never a match."""
    fp = inputs_fingerprint(params)
    if force:
        log.info("rebuild forced: inputs fingerprint %s not compared", fp.digest[:12])
        return InputsCheck(fp, None, forced=True)
    last = last_rebuild(params.tracking)
    if last is None:
        log.info("no finished rebuild in %s: rebuilding", params.tracking.shown_uri)
        return InputsCheck(fp)
    run_id, recorded = last
    if recorded != fp.digest:
        why = "it recorded no inputs fingerprint" if recorded is None else "its inputs differ"
        log.info("inputs changed since rebuild %s (%s): rebuilding", run_id, why)
        return InputsCheck(fp)
    log.info("inputs unchanged since rebuild %s (fingerprint %s)", run_id, fp.digest[:12])
    return InputsCheck(fp, run_id)


def log_unchanged(tracking: TrackingConfig, check: InputsCheck) -> str:
    """The small run an unchanged rebuild leaves: it names the rebuild it matched and the fingerprint; returns its
    id. Nothing is registered or promoted."""
    if check.matched_run_id is None:
        raise ValueError("log_unchanged: the inputs did not match a finished rebuild")
    tags = {
        MATCHED_TAG: check.matched_run_id,
        FINGERPRINT_TAG: check.fingerprint.digest,
        "mlflow.note.content": (
            f"Inputs (videos, holdout, params, code, toolchain, hardware) unchanged since rebuild "
            f"{check.matched_run_id}: nothing rebuilt, registered or promoted; a forced rebuild rebuilds anyway."
        ),
        REMEDY_TAG: str(UNCHANGED_REMEDY),
    }
    mc = client(tracking)
    with small_run(mc, tracking, UNCHANGED_KIND, f"unchanged-{check.matched_run_id[:8]}", tags) as run:
        pass
    log.info("unchanged rebuild logged as run %s (matched rebuild %s); nothing registered", run.info.run_id,
             check.matched_run_id)  # fmt: skip
    return run.info.run_id


def record_fingerprint(tracking: TrackingConfig, parent_run_id: str, check: InputsCheck) -> None:
    """Record the inputs fingerprint on a rebuild's parent run: called last, once the whole rebuild succeeded."""
    client(tracking).set_tag(parent_run_id, FINGERPRINT_TAG, check.fingerprint.digest)
