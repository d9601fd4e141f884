import shutil
from pathlib import Path

import pytest

from tasks.support.fsutil import atomic_dir, atomic_write_text, check_output_folder


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


# Output folders (issue item 2): a setting pointed at an existing folder never wipes it; only folders this project
# made (marked, empty, or recognisably its own) are replaced.
def _frames():
    from tasks.pipeline.extract import CALIBRATION_OUTPUT

    return CALIBRATION_OUTPUT


def test_a_folder_of_someone_elses_files_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    from tasks.support.errors import Remedy
    from tasks.support.fsutil import NotOurFolder

    target = tmp_path / "frames"
    target.mkdir()
    (target / "important.txt").write_text("keep me")
    refused = r"frames \(paths\.calibration\) holds files.*important\.txt"
    with pytest.raises(NotOurFolder, match=refused) as e, atomic_dir(target, _frames()) as tmp:
        (tmp / "manifest.csv").write_text("x")
    assert e.value.remedy is Remedy.OUTPUT_FOLDER and e.value.facts["setting"] == "paths.calibration"
    assert sorted(p.name for p in target.iterdir()) == ["important.txt"]
    assert (target / "important.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"], "temp folder left behind"
    # a frame set's own names beside someone's file are not enough, nor its images without a manifest
    for names in (["images", "manifest.csv", "notes.txt"], ["images"]):
        other = tmp_path / "other"
        shutil.rmtree(other, ignore_errors=True)
        other.mkdir()
        for name in names:
            (other / name).mkdir() if name == "images" else (other / name).write_text("x")
        with pytest.raises(NotOurFolder):
            check_output_folder(other, _frames())
    (tmp_path / "file").write_text("x")  # a file where the folder should be is not replaced either
    with pytest.raises(NotOurFolder, match="is a file"):
        check_output_folder(tmp_path / "file", _frames())


def test_ours_absent_empty_marked_or_written_before_the_marker(tmp_path: Path) -> None:
    """Absent, empty (DVC's .gitignore, a killed run's temp names aside), marked: replaced. A frame set an older
    version wrote (manifest.csv beside images/ and report.json only, no marker) is adopted: replaced and marked."""
    from tasks.support.fsutil import MARKER_TEXT, OUTPUT_MARKER

    cases = {"absent": [], "empty": ["<dir>"], "dvc-repro-left": [".gitignore", ".images.0123456789ab.tmp"]}
    cases |= {"marked": [OUTPUT_MARKER, "notes.txt"], "old": ["images/", "manifest.csv", "report.json", ".gitignore"]}
    for name, entries in cases.items():
        target = tmp_path / name
        for entry in entries:
            target.mkdir(exist_ok=True)
            if entry.endswith("/"):
                (target / entry).mkdir()
            elif entry != "<dir>":
                (target / entry).write_text("x")
        check_output_folder(target, _frames())
        with atomic_dir(target, _frames()) as tmp:
            (tmp / "manifest.csv").write_text("new")
        assert sorted(p.name for p in target.iterdir()) == [OUTPUT_MARKER, "manifest.csv"], name
        assert (target / OUTPUT_MARKER).read_text() == MARKER_TEXT


def test_a_folder_of_output_folders_is_adopted_member_by_member(tmp_path: Path) -> None:
    """`paths.candidates` as an older version left it (candidate folders, each with its candidate.json) is adopted
    and marked; a member folder is ours by its candidate.json (and gets no marker: it is copied whole elsewhere)."""
    from tasks.pipeline.build import CANDIDATE_OUTPUT, CANDIDATES_OUTPUT
    from tasks.support.fsutil import OUTPUT_MARKER, NotOurFolder, claim_output_folder

    root = tmp_path / "candidates"
    for name in ("fp32", "int8"):
        (root / name).mkdir(parents=True)
        (root / name / "candidate.json").write_text("{}")
        (root / name / "model.onnx").write_bytes(b"w")
    (root / ".int8-0123456789ab-tmp").mkdir()  # a killed build's temp folder
    claim_output_folder(root, CANDIDATES_OUTPUT)
    assert (root / OUTPUT_MARKER).is_file()
    with atomic_dir(root / "fp32", CANDIDATE_OUTPUT) as tmp:
        (tmp / "candidate.json").write_text("{}")
    assert sorted(p.name for p in (root / "fp32").iterdir()) == ["candidate.json"]

    (root / "int8" / "candidate.json").unlink()  # a member that is not a candidate's folder: refused by name
    with pytest.raises(NotOurFolder, match=r"int8 \(paths\.candidates\) holds files.*model\.onnx"):
        check_output_folder(root / "int8", CANDIDATE_OUTPUT)
    other = tmp_path / "models"  # an unmarked folder holding anything but candidate folders is not adopted
    (other / "fp32").mkdir(parents=True)
    (other / "fp32" / "candidate.json").write_text("{}")
    (other / "important.txt").write_text("keep me")
    with pytest.raises(NotOurFolder, match=r"important\.txt"):
        claim_output_folder(other, CANDIDATES_OUTPUT)
    assert not (other / OUTPUT_MARKER).exists()
