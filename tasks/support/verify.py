"""The one check every load of a built artifact passes first: promotion (challenger and champion), the smoke test,
rollback's re-download, the nightly check (FP32 reference and champion) and the gate runtime (start, hot reload).

A downloaded folder's `candidate.json` is written by the same hand as the artifact beside it, so it proves nothing
about the artifact. What does: the sha256 recorded in the MLflow store when the rebuild logged the run and registered
the version (`artifact_sha256`, tasks/pipeline/track.py), read back from the store, and, at the gate, the manifest
promotion wrote after checking that hash. The artifact must also stay inside its folder (no absolute path, no `..`,
no symlink leading out) and be its backend's own format: OpenVINO IR (.xml + .bin), ONNX, or a TensorRT engine. A
PyTorch `.pt` is a pickle that runs code when loaded, so it never reaches a loader.
"""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath
from typing import Any

from tasks.support.candidate import CANDIDATE_JSON, Candidate, read_candidate
from tasks.support.errors import AlprError
from tasks.support.hashing import path_sha256

log = logging.getLogger(__name__)

SHA_TAG = "artifact_sha256"  # on the candidate's run and its registry version (tasks/pipeline/track.py)
# the files each backend's loader reads; anything else in an artifact is refused
OPENVINO_FILES = (".xml", ".bin", ".yaml")
FILE_SUFFIXES = {"onnxruntime": (".onnx",), "tensorrt": (".engine", ".plan")}


class VerificationError(AlprError):
    """A built artifact is not the one recorded at build time, leaves its folder, or is not a deployable format;
    it is never loaded."""


def recorded_sha256(mc: Any, store: str, run_id: str, name: str | None = None, version: str | None = None) -> str:
    """The artifact sha256 the rebuild recorded in the MLflow store: on the candidate's run and (given `name` and
    `version`) on the registry version. Both must agree; at least one must exist."""
    found: dict[str, str] = {}
    run_sha = mc.get_run(run_id).data.tags.get(SHA_TAG)
    if run_sha:
        found[f"run {run_id}"] = run_sha
    if name is not None and version is not None:
        mv_sha = (mc.get_model_version(name, str(version)).tags or {}).get(SHA_TAG)
        if mv_sha:
            found[f"version {version} of '{name}'"] = mv_sha
    if not found:
        raise VerificationError(
            f"no {SHA_TAG} recorded in {store} for run {run_id}"
            + (f" / version {version}" if version else "")
            + ": its artifact cannot be verified, so it is not loaded. Rebuild to register a verifiable version."
        )
    if len(set(found.values())) > 1:
        raise VerificationError(f"the {SHA_TAG} records in {store} disagree: {found}; the artifact is not loaded")
    return next(iter(found.values()))


def _inside(folder: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def check_format(cand: Candidate) -> None:
    """The artifact is inside its folder (no absolute path, `..` or symlink leading out) and is its backend's own
    format; raises `VerificationError` otherwise."""
    where = f"{cand.folder / CANDIDATE_JSON}"
    rel = PurePosixPath(cand.artifact)
    if not cand.artifact or rel.is_absolute() or ".." in rel.parts or "\\" in cand.artifact:
        raise VerificationError(f"{where}: artifact path '{cand.artifact}' leaves the release folder; refused")
    path = cand.folder / cand.artifact
    if not path.exists() or not _inside(cand.folder, path):
        raise VerificationError(f"{where}: artifact '{cand.artifact}' is missing or leads outside {cand.folder}")
    files = [path] if path.is_file() else list(path.rglob("*"))
    for f in files:
        if f.is_symlink() or not _inside(cand.folder, f):
            raise VerificationError(f"{f}: a symlink in the artifact (it could lead outside the folder); refused")
    if cand.backend == "openvino":
        suffixes = sorted(f.suffix for f in files if f.is_file())
        bad = [f.name for f in files if f.is_file() and f.suffix not in OPENVINO_FILES]
        if not path.is_dir() or not path.name.endswith("_openvino_model") or bad or suffixes.count(".xml") != 1:
            raise VerificationError(
                f"{where}: backend openvino needs an OpenVINO IR folder '*_openvino_model/' with one .xml, its .bin "
                f"and metadata.yaml; '{cand.artifact}' is not one{f' (unexpected files: {bad})' if bad else ''}"
            )
        return
    allowed = FILE_SUFFIXES.get(cand.backend)
    if allowed is None:
        raise VerificationError(f"{where}: unknown backend '{cand.backend}'; only openvino, onnxruntime, tensorrt")
    if not path.is_file() or path.suffix not in allowed:
        raise VerificationError(
            f"{where}: backend {cand.backend} loads only {' / '.join(allowed)} files; '{cand.artifact}' is refused "
            "(a .pt is a pickle that runs code when loaded)"
        )


def verify_artifact(folder: Path, expected_sha256: str, source: str) -> Candidate:
    """The candidate in `folder`, after checking its artifact's path, format and sha256 against `expected_sha256`
    (recorded independently of the folder; `source` names where, for the message). Call before every load."""
    try:
        cand = read_candidate(folder)
    except (OSError, ValueError, TypeError) as e:
        raise VerificationError(f"{folder / CANDIDATE_JSON}: unreadable or not a candidate record: {e}") from e
    check_format(cand)
    sha = path_sha256(cand.path)
    if sha != expected_sha256:
        raise VerificationError(
            f"{cand.path}: sha256 {sha} is not the {expected_sha256} recorded in {source}; the artifact was "
            "replaced after it was built and validated, so it is not loaded"
        )
    if cand.sha256 != expected_sha256:
        raise VerificationError(f"{folder / CANDIDATE_JSON}: records sha256 {cand.sha256}, not {expected_sha256}")
    return cand
