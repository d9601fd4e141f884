"""The gate folder: `current` switched with one rename, old releases pruned, a killed run's leftovers cleared."""

import os
from pathlib import Path

from tasks.runtime.releases import current_release, prune_releases, recover, switch_current


def test_switch_current_is_a_symlink_rename(tmp_path: Path) -> None:
    for v in ("v1", "v2"):
        (tmp_path / "releases" / v).mkdir(parents=True)
    assert current_release(tmp_path) is None
    switch_current(tmp_path, tmp_path / "releases" / "v1")
    assert current_release(tmp_path) == (tmp_path / "releases" / "v1").resolve()
    switch_current(tmp_path, tmp_path / "releases" / "v2")
    assert os.readlink(tmp_path / "current") == "releases/v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "releases"]


def test_prune_keeps_current_and_newest(tmp_path: Path) -> None:
    for i in range(1, 5):
        (tmp_path / "releases" / f"v{i}").mkdir(parents=True)
        os.utime(tmp_path / "releases" / f"v{i}", (i, i))
    switch_current(tmp_path, tmp_path / "releases" / "v1")
    prune_releases(tmp_path, keep=2)
    assert sorted(p.name for p in (tmp_path / "releases").iterdir()) == ["v1", "v3", "v4"]


def test_recover_clears_leftovers_and_restores_a_moved_aside_release(tmp_path: Path) -> None:
    releases = tmp_path / "releases"
    (releases / ".v3-abc-tmp").mkdir(parents=True)  # a half-downloaded release
    (releases / ".v2-def-old" / "v2").mkdir(parents=True)  # killed between atomic_dir's two renames
    (releases / ".v2-def-old" / "v2" / "manifest.json").write_text("{}")
    (tmp_path / ".current.123.tmp").symlink_to("releases/v2")
    recover(tmp_path)
    assert sorted(p.name for p in releases.iterdir()) == ["v2"]
    assert (releases / "v2" / "manifest.json").is_file()
    assert not (tmp_path / ".current.123.tmp").is_symlink()
