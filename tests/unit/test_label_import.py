"""`alpr-ops label import`: a YOLO export from another tool becomes the holdout, checked first, with the videos of
the proposal it came from and how its boxes differ from the pre-labels."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from tasks.operations.holdout import import_holdout
from tasks.pipeline.labels import LabelError, read_holdout_info
from tasks.support.config import Params
from tasks.support.errors import Remedy


def proposal(folder: Path, labels: dict[str, str]) -> Path:
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    for stem, text in labels.items():
        cv2.imwrite(str(folder / "images" / f"{stem}.jpg"), np.full((36, 64, 3), 80, np.uint8))
        (folder / "labels" / f"{stem}.txt").write_text(text)
    videos = [{"name": "cam_a.mp4", "sha256": "0" * 64}, {"name": "cam_b.mp4", "sha256": "1" * 64}]
    (folder / "proposal.json").write_text(json.dumps({"videos": videos}))
    return folder


def params_at(root: Path) -> Params:
    from tasks.support.config import load_params

    (root / "params.yaml").write_text((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    return load_params(root / "params.yaml")


def test_an_export_of_the_proposal_becomes_the_holdout(tmp_path: Path) -> None:
    params = params_at(tmp_path)
    pre = proposal(params.paths.label_proposal, {"a": "0 0.5 0.5 0.2 0.1\n", "b": "0 0.3 0.3 0.1 0.1\n", "c": ""})
    export = tmp_path / "export"
    shutil.copytree(pre / "images", export / "images")
    (export / "labels").mkdir()
    (export / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.1\n")  # kept
    (export / "labels" / "b.txt").write_text("")  # a false box removed
    (export / "labels" / "c.txt").write_text("0 0.7 0.7 0.1 0.05\n")  # a missed plate added
    (export / "classes.txt").write_text("License_Plate\n")
    done = import_holdout(export, params)
    assert done.boxes == 2 and len(done.images) == 3
    info = read_holdout_info(params.paths.holdout)
    assert info["source"] == "yolo-import" and info["videos"] == ["cam_a.mp4", "cam_b.mp4"]
    assert (info["review"]["kept"], info["review"]["removed"], info["review"]["added"]) == (1, 1, 1)


def test_a_broken_export_changes_nothing_and_unknown_videos_are_refused(tmp_path: Path) -> None:
    params = params_at(tmp_path)
    export = proposal(tmp_path / "export", {"a": "0 0.5 0.5 0.2\n"})
    with pytest.raises(LabelError, match=r"labels/a.txt:1"):
        import_holdout(export, params)
    assert not params.paths.holdout.exists()
    (export / "proposal.json").unlink()
    (export / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.1\n")
    with pytest.raises(LabelError, match="which videos are these frames from"):
        import_holdout(export, params)
    params.paths.videos.mkdir(parents=True)
    (params.paths.videos / "cam_c.mp4").write_bytes(b"a video")  # a named video must be one of paths.videos
    assert import_holdout(export, params, ("cam_c.mp4",)).boxes == 1
    assert read_holdout_info(params.paths.holdout)["videos"] == ["cam_c.mp4"]


PLAIN = "not a plain file name; name a video of paths.videos by its file name"


@pytest.mark.parametrize(
    ("name", "what"),
    [
        ("gate_0000_O4.mp4", "gate_0000_O4.mp4: no such video in paths.videos (did you mean gate_0000_04.mp4?)"),
        ("../x.mp4", "'../x.mp4': " + PLAIN),
        ("sub/gate_0000_04.mp4", "'sub/gate_0000_04.mp4': " + PLAIN),
        ("", "'': " + PLAIN),
    ],
    ids=["typo", "parent", "subfolder", "empty"],
)
def test_a_video_not_in_paths_videos_is_refused_and_the_holdout_kept(tmp_path: Path, name: str, what: str) -> None:
    """The holdout's videos are kept out of calibration by name: a name matching no video reserves nothing."""
    params = params_at(tmp_path)
    p = params.paths
    p.videos.mkdir(parents=True)
    for video in ("gate_0000_04.mp4", "gate_0001_04.mp4", "sub/gate_0000_04.mp4"):
        (p.videos / video).parent.mkdir(exist_ok=True)
        (p.videos / video).write_bytes(b"a video")
    (tmp_path / "data" / "x.mp4").write_bytes(b"a video beside paths.videos")
    export = proposal(tmp_path / "export", {"a": "0 0.5 0.5 0.2 0.1\n"})
    import_holdout(export, params, ("gate_0001_04.mp4",))
    before = {f: f.read_bytes() for f in sorted(p.holdout.rglob("*")) if f.is_file()}
    with pytest.raises(LabelError) as e:
        import_holdout(export, params, ("gate_0000_04.mp4", name))
    assert e.value.problems == (what,)
    assert f"paths.videos ({p.videos}: 2 videos)" in str(e.value) and what in str(e.value)
    assert e.value.remedy is Remedy.PARAMS
    assert {f: f.read_bytes() for f in sorted(p.holdout.rglob("*")) if f.is_file()} == before
    assert read_holdout_info(p.holdout)["videos"] == ["gate_0001_04.mp4"]


def test_named_videos_need_a_videos_folder(tmp_path: Path) -> None:
    params = params_at(tmp_path)
    export = proposal(tmp_path / "export", {"a": "0 0.5 0.5 0.2 0.1\n"})
    with pytest.raises(LabelError, match=r"paths\.videos \(.*: does not exist\)") as e:
        import_holdout(export, params, ("cam_a.mp4",))
    assert e.value.problems == ("cam_a.mp4: no such video in paths.videos",)
    assert not params.paths.holdout.exists()


@pytest.mark.timeout(60)
def test_a_proposal_json_that_is_no_regular_file_is_named(tmp_path: Path) -> None:
    params = params_at(tmp_path)
    export = proposal(tmp_path / "export", {"a": "0 0.5 0.5 0.2 0.1\n"})
    (export / "proposal.json").unlink()
    (export / "proposal.json").symlink_to("/dev/zero")  # read whole: memory exhausted
    with pytest.raises(LabelError, match=r"proposal\.json: not a regular file \(a device\)"):
        import_holdout(export, params)
    (export / "proposal.json").unlink()
    (export / "proposal.json").symlink_to(export / "gone.json")  # not taken for "no proposal.json here"
    with pytest.raises(LabelError, match=r"proposal\.json: cannot be read \(No such file or directory\)"):
        import_holdout(export, params)
    (export / "proposal.json").unlink()
    (export / "proposal.json").write_text("[]")
    with pytest.raises(LabelError, match="expected a JSON object, got list"):
        import_holdout(export, params)
    assert not params.paths.holdout.exists()
