"""Validation results, content-addressed like the build cache (tasks/support/cache.py).

A report's key hashes everything its numbers depend on: each candidate's artifact (sha256, name, backend,
precision, method, geometry), the labelled holdout's and the agreement frames' contents, the validation settings
(the bootstrap's resamples and level among them; its seed is code), the
names of the accuracy and speed references, the hardware (CPU model and cores, GPUs) and the code and toolchain
that measured it. A rebuild whose artifacts, frames and settings did not change reuses the report instead of
measuring again for minutes; any change is a new key. A candidate whose engine the gate builds is cached as
validation left it (`gate: pending`): the gate step measures it after.

An entry is one pickle (the report holds numpy arrays), written through a temp file and a rename. An entry that
exists but cannot be read is an error naming the file and the fix (delete it), never a silent miss: a damaged
cache is a fact the operator should see, and deleting the file is all it takes.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tasks.pipeline.validate import ValidationReport, run_validation
from tasks.support import fingerprint, machine
from tasks.support.cache import CacheStore
from tasks.support.candidate import Candidate
from tasks.support.config import ValidateConfig
from tasks.support.errors import AlprError
from tasks.support.hashing import content_key
from tasks.support.images import frames_folder
from tasks.support.shape import geometry_of

log = logging.getLogger(__name__)

ENTRY_SUFFIX = ".pickle"
FORMAT = 1  # bumped when the entry's layout changes (a new key: old entries are never read)
CACHE_KEY = "validation_cache"  # in `ValidationReport.extra`: "hit <key>" or "stored <key>", recorded on the parent run


class ValidationCacheError(AlprError):
    """A validation cache entry exists but cannot be read; the message names the file to delete."""


def validation_key(
    candidates: Sequence[Candidate],
    holdout_dir: Path,
    reference: str,
    cfg: ValidateConfig,
    frames_dir: Path | None,
    speed_reference: str | None = None,
) -> str:
    """sha256 over every input that shapes a validation report (canonical JSON, sorted keys)."""
    doc: dict[str, Any] = {
        "format": FORMAT,
        "candidates": sorted((_identity(c) for c in candidates), key=lambda d: str(d["name"])),
        "holdout": fingerprint.folder_hash(holdout_dir),
        # the images validation reads (`agreement_images`): not the manifest beside them
        "agreement_frames": fingerprint.folder_hash(frames_folder(frames_dir) if frames_dir is not None else None),
        "validate": cfg.model_dump(mode="json"),
        "reference": reference,
        "speed_reference": speed_reference or reference,  # every speed-up divides its p50
        "hardware": machine.hardware(),
        "code": fingerprint.code_version(),
        "toolchain": fingerprint.toolchain(),
    }
    return content_key(doc)


def _identity(c: Candidate) -> dict[str, str | bool]:
    """What a candidate's numbers depend on: its exact artifact bytes, and what it is (its row's labels), its
    geometry among them (which FP32 model it is compared with follows from it: `validate.geometry_references`)."""
    return {"name": c.name, "backend": c.backend, "precision": c.precision, "method": c.method, "sha256": c.sha256,
            "gate_built": c.gate_built, "geometry": geometry_of(c).text}  # fmt: skip


def validation_store(cache_dir: Path) -> CacheStore:
    """The validation cache: one pickled report per `validation_key`."""
    return CacheStore(cache_dir, suffix=ENTRY_SUFFIX)


def entry_path(cache_dir: Path, key: str) -> Path:
    return validation_store(cache_dir).path(key)


def recorded_key(tag: str) -> str | None:
    """The key in what a rebuild recorded under `CACHE_KEY` ("hit <key>" or "stored <key>"); None otherwise."""
    verb, _, key = tag.partition(" ")
    return key if verb in ("hit", "stored") and key else None


def lookup(cache_dir: Path, key: str) -> ValidationReport | None:
    """The stored report for `key`; None only when no entry exists. An entry that cannot be read, or holds
    something else than the report of this key, raises `ValidationCacheError` naming it."""
    path = entry_path(cache_dir, key)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ValidationCacheError(_unreadable(path, f"{type(e).__name__}: {e}"), path=str(path)) from e
    try:
        doc = pickle.loads(data)  # written by this project (`store`), into its own cache
    except Exception as e:  # truncated, overwritten, or pickled by code that no longer has its classes
        raise ValidationCacheError(_unreadable(path, f"{type(e).__name__}: {e}"), path=str(path)) from e
    if not isinstance(doc, dict) or doc.get("key") != key or not isinstance(doc.get("report"), ValidationReport):
        raise ValidationCacheError(_unreadable(path, "it does not hold the report of this key"), path=str(path))
    return doc["report"]


def _unreadable(path: Path, why: str) -> str:
    return (
        f"{path}: this validation cache entry cannot be read ({why}). Delete the file and run again: validation "
        "then measures the candidates afresh and stores a new entry."
    )


def store(cache_dir: Path, key: str, report: ValidationReport) -> Path:
    """Store `report` under `key`, atomically (a crash leaves no partial entry)."""
    return validation_store(cache_dir).put_bytes(key, pickle.dumps({"key": key, "report": report}))


def cached_validation(
    candidates: list[Candidate],
    holdout_dir: Path,
    reference: str,
    cfg: ValidateConfig,
    frames_dir: Path | None = None,
    cache_dir: Path | None = None,
    speed_reference: str | None = None,
) -> ValidationReport:
    """`run_validation`, or the stored report of the same inputs (`validation_key`). Without `cache_dir` it
    always measures. The report's `extra[CACHE_KEY]` says which it was."""
    if cache_dir is None:
        return run_validation(candidates, holdout_dir, reference, cfg, frames_dir, speed_reference)
    key = validation_key(candidates, holdout_dir, reference, cfg, frames_dir, speed_reference)
    found = lookup(cache_dir, key)
    if found is not None:
        log.info("validation: reusing the report of the same artifacts, frames, settings, code and hardware (%s)",
                 entry_path(cache_dir, key))  # fmt: skip
        return _marked(found, f"hit {key}")
    report = run_validation(candidates, holdout_dir, reference, cfg, frames_dir, speed_reference)
    store(cache_dir, key, report)
    log.info("validation: stored the report as %s", entry_path(cache_dir, key))
    return _marked(report, f"stored {key}")


def _marked(report: ValidationReport, note: str) -> ValidationReport:
    import dataclasses

    return dataclasses.replace(report, extra={**report.extra, CACHE_KEY: note})
