"""The gate folder: `current` switched with one rename and kept inside `releases/`, old releases pruned, a killed
run's leftovers cleared, a lost `gate.json` recovered."""

import json
import os
from pathlib import Path

import pytest

from tasks.runtime.releases import (
    GATE_ID_FILE,
    GATE_ID_KEY,
    MANIFEST,
    GateFolderError,
    current_release,
    ensure_gate_id,
    gate_id,
    prune_releases,
    recover,
    switch_current,
)


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


def test_current_must_resolve_to_a_release_of_this_gate_folder(tmp_path: Path) -> None:
    """Issue item 6: `current` leading outside `releases/` (an absolute symlink elsewhere, `..`, a temp folder, a
    plain folder) is refused with the link, its target and the fix named; an absolute link inside is a release."""
    gate = tmp_path / "gate"
    (gate / "releases" / "v1").mkdir(parents=True)
    (gate / "releases" / ".v2-abc-tmp").mkdir()
    elsewhere = tmp_path / "elsewhere" / "releases" / "v1"
    elsewhere.mkdir(parents=True)
    (gate / "current").symlink_to(gate / "releases" / "v1")  # absolute, but inside: a release of this folder
    assert current_release(gate) == (gate / "releases" / "v1").resolve()
    for target in (elsewhere, Path("../elsewhere/releases/v1"), Path("releases/.v2-abc-tmp"), Path("releases")):
        (gate / "current").unlink()
        (gate / "current").symlink_to(target)
        with pytest.raises(GateFolderError, match="not a release in") as e:
            current_release(gate)
        assert str(gate / "current") in str(e.value) and "ln -sfn releases/v<version>" in str(e.value)
    (gate / "current").unlink()
    (gate / "current").mkdir()  # a copied folder instead of the symlink
    with pytest.raises(GateFolderError, match="not a symlink"):
        current_release(gate)


def test_a_lost_gate_json_is_recovered_from_the_manifests_before_a_new_id_is_made(tmp_path: Path) -> None:
    """Issue item 6: the gate id is recovered (and `gate.json` rewritten) from the releases' manifests, else from the
    registry lookup it is given; only when neither knows it is a new id made. Manifests recording different ids are
    refused, naming `gate.json` and the fix."""
    gate = tmp_path / "gate"
    for version, gid in (("1", "old-id"), ("2", "old-id"), ("3", None)):
        (gate / "releases" / f"v{version}").mkdir(parents=True)
        doc = {"version": version} | ({GATE_ID_KEY: gid} if gid else {})
        (gate / "releases" / f"v{version}" / MANIFEST).write_text(json.dumps(doc))
    assert gate_id(gate) == "old-id"  # read-only callers (status, the nightly check) see it at once
    assert ensure_gate_id(gate, lambda: "from-registry") == ("old-id", False)
    assert json.loads((gate / GATE_ID_FILE).read_text()) == {"id": "old-id"}

    (gate / GATE_ID_FILE).unlink()
    (gate / "releases" / "v3" / MANIFEST).write_text(json.dumps({"version": "3", GATE_ID_KEY: "another"}))
    with pytest.raises(GateFolderError, match="different gate ids") as e:
        ensure_gate_id(gate)
    assert str(gate / GATE_ID_FILE) in str(e.value) and not (gate / GATE_ID_FILE).exists()

    bare = tmp_path / "bare"
    (bare / "releases" / "v1").mkdir(parents=True)
    (bare / "releases" / "v1" / MANIFEST).write_text(json.dumps({"version": "1"}))  # made before manifests had ids
    assert ensure_gate_id(bare, lambda: "from-registry") == ("from-registry", False)
    (bare / GATE_ID_FILE).unlink()
    new, created = ensure_gate_id(bare, lambda: None)
    assert created and new.startswith("bare-") and gate_id(bare) == new
