"""Fetch the pretrained plate detector from its PyPI package, pinned by sha256.

No model hub is reachable from gate build machines; PyPI is. The weights ship inside `fastanpr` (AGPL-3.0, like
Ultralytics), whose own dependencies are heavy and unneeded, so only the wheel is downloaded (`--no-deps`).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from tasks.support.errors import AlprError, Remedy
from tasks.support.hashing import sha256_file

log = logging.getLogger(__name__)


class ModelError(AlprError):
    """The base model is missing or is not the pinned file."""

    remedy = Remedy.FETCH_MODEL


def verify_model(path: Path, sha256: str) -> Path:
    """Fail fast unless `path` is the pinned model."""
    if not path.is_file():
        raise ModelError(f"{path}: model not found")
    actual = sha256_file(path)
    if actual != sha256:
        raise ModelError(
            f"{path}: sha256 {actual} does not match the pinned {sha256}: the file is corrupt or a different model"
        )
    return path


def fetch_model(dest: Path, package: str, member: str, sha256: str) -> Path:
    """Download `package`'s wheel, extract `member` to `dest` after checking its sha256; no-op if already there."""
    if dest.is_file():
        return verify_model(dest, sha256)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fetch-", dir=dest.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", tmp, package]
        log.info("downloading %s from the package index", package)
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ModelError(
                f"`{' '.join(cmd)}` failed (is the package index reachable?):\n{done.stderr.strip()}", transient=True
            )
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise ModelError(f"pip download {package} produced no wheel in {tmp}")
        staged = Path(tmp) / "model.part"
        with zipfile.ZipFile(wheels[0]) as wheel:
            if member not in wheel.namelist():
                raise ModelError(f"{wheels[0].name} has no {member} (model.member)", remedy=Remedy.PARAMS)
            with wheel.open(member) as src, staged.open("wb") as out:
                while block := src.read(1 << 20):
                    out.write(block)
        verify_model(staged, sha256)
        staged.replace(dest)
    log.info("model %s verified (sha256 %s)", dest, sha256[:12])
    return dest
