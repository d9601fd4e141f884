"""The one place hashes are made: content keys of documents, and sha256 of bytes, files and folders.

A cache key, a fingerprint or a validation key is `content_key` of a document that lists what the result depends on;
what build records, promotion checks and lineage compare is the sha256 of the bytes themselves. Runs on the gate too
(Python 3.10: no `hashlib.file_digest`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def content_key(doc: Any) -> str:
    """sha256 of `doc` as canonical JSON (sorted keys, no spaces; anything else JSON cannot hold as its `str`): the
    one way keys are made from documents here."""
    return sha256_bytes(json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str).encode())


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of bytes in memory (an encoded frame, a serialized plan)."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so large artifacts do not fill memory."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def files_sha256(files: Iterable[Path], root: Path) -> str:
    """sha256 of the files named relative to `root`, in the given order: each one's name and content hash."""
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(root).as_posix()}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def path_sha256(path: Path) -> str:
    """sha256 of a file, or of a folder's files (relative names and contents, in sorted order)."""
    if path.is_file():
        return sha256_file(path)
    return files_sha256(sorted(p for p in path.rglob("*") if p.is_file()), path)


def path_size_mb(path: Path) -> float:
    """Size on disk of a file or folder, in MB (10^6 bytes)."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return round(sum(f.stat().st_size for f in files) / 1e6, 3)
