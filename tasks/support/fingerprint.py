"""What a result depends on besides its data: the code that made it, the toolchain, and folders' contents.

The validation cache (tasks/pipeline/validation_cache.py) and the unchanged-rebuild check
(tasks/pipeline/unchanged.py) key on these and on the machine (tasks/support/machine.py), so a change of code,
toolchain or hardware is a new key: numbers measured by other code or on another CPU are never reused as this run's.
"""

from __future__ import annotations

import functools
import importlib.metadata
from pathlib import Path

from tasks.support.hashing import files_sha256, path_sha256

PACKAGE = "alpr-ops"
CODE_DIRS = ("tasks", "flows", "cli")  # the project's code (what a clone runs; `tests/conftest.py` PROJECT_CODE)
# packages whose version shapes an artifact (the build records them on each one and keys its cache on them)
ARTIFACT_TOOLCHAIN = ("ultralytics", "torch", "onnx", "onnxruntime", "openvino", "nncf", "tensorrt")
# and a measurement or a record (the fingerprints): those plus the tracking stack
TOOLCHAIN = (*ARTIFACT_TOOLCHAIN, "mlflow", "prefect")


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, str]:
    """The package version and a hash of every source file of the code that runs (`tasks/`, `flows/`, `cli/`).

    The source hash, not the git commit: it also holds outside git (an installed copy, a deployment's clone) and
    it sees uncommitted edits, which a commit id marked "-dirty" does not tell apart."""
    root = Path(__file__).resolve().parents[2]
    sources = [f for name in CODE_DIRS for f in sorted((root / name).rglob("*.py"))]
    try:
        version = importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        version = "not installed"
    return {"package": PACKAGE, "version": version, "source_sha256": files_sha256(sources, root)}


def installed_versions(names: tuple[str, ...]) -> dict[str, str]:
    """The installed version of each package of `names` (absent ones left out): the one reader of the toolchain the
    build records on its artifacts and the fingerprints record on runs."""
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def toolchain() -> dict[str, str]:
    """Installed versions of the packages that shape artifacts and measurements (absent ones left out)."""
    return installed_versions(TOOLCHAIN)


def folder_hash(folder: Path | None) -> str:
    """Content hash of a folder (relative names and contents), or a marker saying it is absent: an absent folder
    and an empty one are different inputs."""
    if folder is None:
        return "none"
    if not folder.exists():
        return "absent"
    return path_sha256(folder)
