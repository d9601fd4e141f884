import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tasks.pipeline.extract import ExtractError, extract_frames, frames_hash
from tasks.support.config import ExtractConfig
from tasks.support.errors import Remedy
from tasks.support.videos import VideosMissing

NAMES = ("License_Plate",)


@pytest.fixture
def videos(tmp_path: Path, sample_data: Path) -> Path:
    out = tmp_path / "videos"
    shutil.copytree(sample_data / "videos", out)
    return out


# sampling alone: params.yaml (the defaults) turns on dedup, brightness strata and the holdout, tested elsewhere
PLAIN = {"dedup_threshold": 0.0, "brightness_bins": 1, "holdout_fraction": 0.0}


def run(videos: Path, tmp_path: Path, **cfg: float) -> object:
    cfg = {**PLAIN, **cfg}
    return extract_frames(videos, tmp_path / "calib", tmp_path / "calibration.yaml", ExtractConfig(**cfg), NAMES)


def test_samples_by_time_and_writes_manifest_and_dataset_yaml(videos: Path, tmp_path: Path) -> None:
    # sample videos: 3 s at 10 fps -> frames at 0, 1, 2 s with a 1 s interval
    result = run(videos, tmp_path, interval_s=1.0, max_frames_per_video=50)
    n_videos = len(list(videos.glob("*.mp4")))
    assert result.frames == 3 * n_videos
    table = pd.read_csv(result.manifest)
    assert list(table.columns) == [
        "image", "video", "frame_index", "timestamp_s", "width", "height", "sha256", "video_sha256", "brightness",
        "split",
    ]  # fmt: skip
    for _, group in table.groupby("video"):
        assert list(group["frame_index"]) == [0, 10, 20]
        assert list(group["timestamp_s"]) == pytest.approx([0.0, 1.0, 2.0], abs=0.06)
    assert all((tmp_path / "calib" / img).is_file() for img in table["image"])
    assert result.frames_hash == frames_hash(table)

    doc = yaml.safe_load((tmp_path / "calibration.yaml").read_text())
    assert doc["val"] == "calib/images" and doc["train"] == "calib/images"
    assert doc["names"] == {0: "License_Plate"}


def test_calibration_yaml_is_what_ultralytics_reads(videos: Path, tmp_path: Path) -> None:
    from ultralytics.data.utils import check_det_dataset

    run(videos, tmp_path, interval_s=1.0)
    data = check_det_dataset(str(tmp_path / "calibration.yaml"))
    assert Path(data["val"]) == (tmp_path / "calib" / "images").resolve()
    assert data["nc"] == 1


def test_cap_per_video(videos: Path, tmp_path: Path) -> None:
    result = run(videos, tmp_path, interval_s=0.1, max_frames_per_video=4)
    assert set(result.per_video.values()) == {4}


def test_bad_files_are_reported_by_name_and_skipped(videos: Path, tmp_path: Path) -> None:
    (videos / "empty.mp4").write_bytes(b"")
    (videos / "notes.mp4").write_text("this is not a video")
    (videos / "readme.txt").write_text("hello")
    good = len(list(videos.glob("gate_*.mp4")))
    result = run(videos, tmp_path, interval_s=1.0)
    assert set(result.skipped) == {"empty.mp4", "notes.mp4", "readme.txt"}
    assert "not a video file" in result.skipped["readme.txt"]
    assert len(result.per_video) == good


def test_no_frames_at_all_stops_with_a_clear_message_and_keeps_old_frames(videos: Path, tmp_path: Path) -> None:
    first = run(videos, tmp_path, interval_s=1.0)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(ExtractError, match=r"no frames could be extracted.*broken\.mp4") as e:
        run(bad, tmp_path, interval_s=1.0)
    assert e.value.remedy is Remedy.SAMPLE_VIDEOS
    # the earlier frame set is untouched and no temp folder is left behind
    assert pd.read_csv(first.manifest).shape[0] == first.frames
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "calib", "calibration.yaml", "videos"]


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(VideosMissing, match="no such folder"):
        run(tmp_path / "nope", tmp_path)


def test_dataset_yaml_check_resolves_relative_paths(
    videos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks.pipeline.extract import check_dataset_yaml

    run(videos, tmp_path, interval_s=1.0)
    (tmp_path / "conf").mkdir()
    shutil.move(tmp_path / "calibration.yaml", tmp_path / "conf" / "calibration.yaml")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ExtractError, match="not the frames"):  # train/val are relative to the root, not conf/
        check_dataset_yaml(Path("conf/calibration.yaml"), Path("calib"))
    extract_frames(videos, Path("calib"), Path("conf/calibration.yaml"), ExtractConfig(), NAMES)
    assert check_dataset_yaml(Path("conf/calibration.yaml"), Path("calib")) == Path("conf/calibration.yaml")
    with pytest.raises(ExtractError, match="not the frames"):
        check_dataset_yaml(Path("conf/calibration.yaml"), Path("elsewhere"))


@pytest.mark.parametrize("setting", ["paths.calibration", "paths.holdout_frames"])
def test_an_output_setting_pointed_at_a_folder_of_files_refuses_and_wipes_nothing(
    videos: Path, tmp_path: Path, setting: str
) -> None:
    """Issue item 2: `paths.calibration` (or `paths.holdout_frames`) set to an existing folder deleted what it held
    without a word. Refused before any video is read, naming the folder and the setting; nothing in it changes."""
    from tasks.support.fsutil import NotOurFolder

    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "important.txt").write_text("keep me")
    (mine / "sub" / "more.txt").write_text("and me")
    calib, held = (mine, tmp_path / "held") if setting == "paths.calibration" else (tmp_path / "calib", mine)
    cache = tmp_path / "cache"
    with pytest.raises(NotOurFolder, match=rf"{mine} \({setting}\) holds files.*important\.txt") as e:
        extract_frames(videos, calib, tmp_path / "c.yaml", ExtractConfig(**PLAIN), NAMES, held, cache)
    assert e.value.remedy is Remedy.OUTPUT_FOLDER
    assert (mine / "important.txt").read_text() == "keep me" and (mine / "sub" / "more.txt").read_text() == "and me"
    assert sorted(p.name for p in mine.iterdir()) == ["important.txt", "sub"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "videos"], "something was written or decoded"


def test_a_frame_set_made_before_the_marker_is_adopted(videos: Path, tmp_path: Path) -> None:
    """A project of an older version (frame sets without the marker) keeps working: its frame sets are replaced and
    marked; after `dvc repro` deleted a stage's outputs, the `.gitignore` DVC leaves does not block the stage."""
    from tasks.support.fsutil import OUTPUT_MARKER

    cfg = ExtractConfig(**{**PLAIN, "holdout_fraction": 0.5, "interval_s": 1.0})
    calib, held = tmp_path / "calib", tmp_path / "held"
    first = extract_frames(videos, calib, tmp_path / "c.yaml", cfg, NAMES, held)
    assert (calib / OUTPUT_MARKER).is_file() and (held / OUTPUT_MARKER).is_file()
    for folder in (calib, held):
        (folder / OUTPUT_MARKER).unlink()  # as an older version wrote them
    (calib / ".gitignore").write_text("/images\n/manifest.csv\n")
    again = extract_frames(videos, calib, tmp_path / "c.yaml", cfg, NAMES, held)
    assert again.frames_hash == first.frames_hash and (calib / OUTPUT_MARKER).is_file()
    assert sorted(p.name for p in held.iterdir()) == [OUTPUT_MARKER, "images", "manifest.csv"]
    shutil.rmtree(held)
    for name in ("images", "manifest.csv", "report.json", OUTPUT_MARKER):  # what `dvc repro extract` deletes first
        shutil.rmtree(calib / name) if name == "images" else (calib / name).unlink()
    (calib / ".gitignore").write_text("/images\n/manifest.csv\n")
    assert extract_frames(videos, calib, tmp_path / "c.yaml", cfg, NAMES, held).frames_hash == first.frames_hash


@pytest.mark.parametrize("blocked", ["cache", "hashes", "entries"])
def test_an_unwritable_frame_cache_is_a_cache_error_not_unreadable_videos(
    videos: Path, tmp_path: Path, blocked: str
) -> None:
    """Issue item 5: with the frame cache not writable, a new video was "cannot be read: Permission denied:
    .cache/frames/hashes/...tmp" and skipped (every video, in a copied project: advice "sample-videos"), exit 0.

    The tests run as root, whom permission bits do not stop, so the cache is made unwritable in a way that stops
    root too: a regular file where the cache (or its hashes/ or entries/ folder) must be a folder. Creating a file
    beneath it fails (ENOTDIR / EEXIST) at the very writes that fail with EACCES for a user without write
    permission, both are OSErrors, and the code treats any OSError writing the cache alike."""
    from cli.advice import explain
    from tasks.support.cache import CacheUnwritable

    cache = tmp_path / "cache"
    first = extract_frames(videos, tmp_path / "calib", tmp_path / "c.yaml", ExtractConfig(**PLAIN), NAMES, None, cache)
    shutil.copy(next(videos.glob("*.mp4")), videos / "new_arrival.mp4")  # a new video lands
    where = cache if blocked == "cache" else cache / blocked
    shutil.rmtree(where)
    where.write_text("not a folder")
    with pytest.raises(CacheUnwritable, match=rf"the cache {cache}\S* \(paths\.frame_cache\) cannot be written") as e:
        extract_frames(videos, tmp_path / "calib", tmp_path / "c.yaml", ExtractConfig(**PLAIN), NAMES, None, cache)
    assert e.value.remedy is Remedy.CACHE and "sample-videos" not in explain(e.value)
    assert "writable" in explain(e.value)
    assert pd.read_csv(first.manifest).shape[0] == first.frames  # the frames already made are left as they were
