"""Content-addressed build cache.

A candidate's key hashes everything that shapes its artifact: the base model, the calibration frames, the
candidate's own params, the image size and the toolchain (OpenVINO/NNCF, ONNX Runtime, TensorRT, GPU name). An
unchanged rebuild reuses the artifact without exporting; any change is a new key and a fresh build, so a calibration
made on other frames can never be reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from tasks.support.fsutil import atomic_dir

log = logging.getLogger(__name__)


def cache_key(
    base_model_sha256: str, frames_hash: str, candidate: dict[str, Any], imgsz: int, toolchain: dict[str, str]
) -> str:
    """sha256 over every input that shapes a candidate's artifact (canonical JSON, sorted keys)."""
    doc = {
        "base_model_sha256": base_model_sha256,
        "frames_hash": frames_hash,
        "candidate": candidate,
        "imgsz": imgsz,
        "toolchain": toolchain,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def lookup(cache_dir: Path | None, key: str, meta_name: str) -> Path | None:
    """The cached folder for `key` when it is complete (its metadata file says the same key), else None."""
    if cache_dir is None:
        return None
    entry = cache_dir / key
    meta = entry / meta_name
    if not meta.is_file():
        return None
    try:
        if json.loads(meta.read_text()).get("cache_key") != key:
            return None
    except json.JSONDecodeError:
        return None
    return entry


def store(cache_dir: Path | None, key: str, folder: Path) -> None:
    """Copy a built candidate folder into the cache under `key` (atomically: a crash leaves no half entry)."""
    if cache_dir is None:
        return
    with atomic_dir(cache_dir / key) as tmp:
        copy_tree(folder, tmp)


def copy_tree(src: Path, dst: Path) -> None:
    """Copy the contents of `src` into the existing folder `dst`, keeping modification times."""
    for item in src.iterdir():
        if item.is_dir():
            shutil.copytree(item, dst / item.name, copy_function=shutil.copy2)
        else:
            shutil.copy2(item, dst / item.name)
