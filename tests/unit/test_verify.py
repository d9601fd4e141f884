"""The artifact check every load passes first (tasks/support/verify.py): paths stay inside the folder, only the
backend's own format loads (never a pickle), and the hash is the one recorded elsewhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.support.hashing import path_sha256
from tasks.support.verify import VerificationError, verify_artifact

BASE = {
    "name": "c", "precision": "int8", "size_mb": 1.0, "base_model_sha256": "b", "frames_hash": "f", "imgsz": 64,
    "toolchain": {}, "build_seconds": 1.0, "built_at": "now",
}  # fmt: skip


def folder_with(tmp_path: Path, backend: str, artifact: str, files: dict[str, bytes]) -> tuple[Path, str]:
    folder = tmp_path / "release"
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    target = folder / artifact
    sha = path_sha256(target) if target.exists() else "0" * 64
    meta = {**BASE, "backend": backend, "artifact": artifact, "sha256": sha, "folder": "."}
    (folder / "candidate.json").write_text(json.dumps(meta))
    return folder, sha


def test_the_backends_own_formats_pass(tmp_path: Path) -> None:
    folder, sha = folder_with(tmp_path, "onnxruntime", "m.onnx", {"m.onnx": b"onnx"})
    assert verify_artifact(folder, sha, "test").artifact == "m.onnx"
    ov = {"m_openvino_model/m.xml": b"x", "m_openvino_model/m.bin": b"b", "m_openvino_model/metadata.yaml": b"y"}
    folder, sha = folder_with(tmp_path / "ov", "openvino", "m_openvino_model", ov)
    assert verify_artifact(folder, sha, "test").backend == "openvino"


@pytest.mark.parametrize(
    ("backend", "artifact", "files", "match"),
    [
        ("onnxruntime", "m.pt", {"m.pt": b"pickle"}, "refused"),  # a pickle: never loaded
        ("tensorrt", "m.pt", {"m.pt": b"pickle"}, "refused"),
        ("openvino", "m_openvino_model", {"m_openvino_model/m.xml": b"x", "m_openvino_model/m.pt": b"p"}, "m.pt"),
        ("openvino", "m.onnx", {"m.onnx": b"onnx"}, "not one"),
        ("onnxruntime", "../outside.onnx", {}, "leaves"),
        ("onnxruntime", "/etc/passwd", {}, "leaves"),
        ("pytorch", "m.onnx", {"m.onnx": b"x"}, "unknown backend"),
    ],
)
def test_paths_leaving_the_folder_and_foreign_formats_are_refused(
    tmp_path: Path, backend: str, artifact: str, files: dict, match: str
) -> None:
    folder, sha = folder_with(tmp_path, backend, artifact, files)
    with pytest.raises(VerificationError, match=match):
        verify_artifact(folder, sha, "test")


def test_a_symlink_leading_out_and_a_wrong_hash_are_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere.onnx").write_bytes(b"onnx")
    folder, _ = folder_with(tmp_path, "onnxruntime", "m.onnx", {"x": b""})
    (folder / "m.onnx").symlink_to(tmp_path / "elsewhere.onnx")
    with pytest.raises(VerificationError, match="outside"):
        verify_artifact(folder, path_sha256(tmp_path / "elsewhere.onnx"), "test")
    folder, _ = folder_with(tmp_path / "b", "onnxruntime", "m.onnx", {"m.onnx": b"onnx"})
    with pytest.raises(VerificationError, match=r"not the 1+ recorded in the store"):
        verify_artifact(folder, "1" * 64, "the store")
