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


def test_content_is_fsynced_before_the_rename_and_the_folder_after(tmp_path: Path, monkeypatch) -> None:
    """Issue 15, defect 8: a power cut after the rename must not leave a renamed file whose data never reached
    the disk (the release `current` switches to). Records the real calls' order (os.fsync and os.replace still run)."""
    import os

    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    with atomic_dir(tmp_path / "release") as tmp:
        (tmp / "model.onnx").write_bytes(b"weights")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "x.bin").write_bytes(b"x")
    switched = events.index(("replace", str(tmp_path / "release")))
    synced = {Path(p).name for kind, p in events[:switched] if kind == "fsync"}
    assert {"model.onnx", "x.bin", "sub"} <= synced  # content and folders before the rename
    assert ("fsync", str(tmp_path)) in events[switched:]  # the rename itself after it
    events.clear()
    atomic_write_text(tmp_path / "manifest.json", "{}")
    kinds = [kind for kind, _ in events]
    assert kinds == ["fsync", "replace", "fsync"] and events[-1][1] == str(tmp_path)


def test_the_umask_is_never_changed_even_for_a_moment(tmp_path: Path, monkeypatch) -> None:
    """Issue 15, defect 8: reading the umask with os.umask(0) sets it process-wide, so a file another thread creates
    at that instant is world-writable."""
    import os

    calls: list[int] = []
    real_umask = os.umask
    monkeypatch.setattr(os, "umask", lambda mask: calls.append(mask) or real_umask(mask))
    with atomic_dir(tmp_path / "release") as tmp:
        (tmp / "a").write_text("x")
    atomic_write_text(tmp_path / "manifest.json", "{}")
    assert calls == []
