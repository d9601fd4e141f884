from pathlib import Path

import pytest

from tasks.support.fsutil import atomic_dir, atomic_write_text


def test_atomic_dir_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "frames"
    target.mkdir()
    (target / "old.jpg").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "half.jpg").write_text("half")
        raise RuntimeError("killed mid-way")
    assert sorted(p.name for p in target.iterdir()) == ["old.jpg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"], "temp folder left behind"

    with atomic_dir(target) as tmp:
        (tmp / "new.jpg").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.jpg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]


def test_atomic_write_text(tmp_path: Path) -> None:
    path = atomic_write_text(tmp_path / "a" / "m.json", "{}")
    assert path.read_text() == "{}"
    assert [p.name for p in path.parent.iterdir()] == ["m.json"]


def test_results_get_ordinary_modes_not_private_temp_modes(tmp_path: Path) -> None:
    import os
    import stat

    mask = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "release") as tmp:
            (tmp / "a").write_text("x")
        path = atomic_write_text(tmp_path / "manifest.json", "{}")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "release").stat().st_mode) == 0o755
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
