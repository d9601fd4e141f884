import hashlib
from pathlib import Path

import pytest

from tasks.pipeline.fetch import ModelError, fetch_model, verify_model
from tasks.support.errors import Remedy
from tasks.support.hashing import sha256_file


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 3_000_000)
    assert sha256_file(path, chunk=1 << 16) == hashlib.sha256(b"x" * 3_000_000).hexdigest()


def test_verify_model_missing_and_wrong(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model not found") as e:
        verify_model(tmp_path / "best.pt", "0" * 64)
    assert e.value.remedy is Remedy.FETCH_MODEL
    (tmp_path / "best.pt").write_bytes(b"other model")
    with pytest.raises(ModelError, match="does not match the pinned"):
        verify_model(tmp_path / "best.pt", "0" * 64)


def test_existing_wrong_file_is_not_silently_replaced(tmp_path: Path) -> None:
    dest = tmp_path / "best.pt"
    dest.write_bytes(b"someone's fine-tuned model")
    with pytest.raises(ModelError, match="corrupt or a different model"):
        fetch_model(dest, "fastanpr==0.1.13", "fastanpr/best.pt", "0" * 64)
    assert dest.read_bytes() == b"someone's fine-tuned model"
