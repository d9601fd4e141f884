"""The data tier: a project's labelled holdout through the one label checker, and the extracted frame sets against
their manifests, on the generator's sample project and on this checkout's own `data/` once a user has made it
(`make demo`, or `alpr-ops extract` on your own footage); skipped with the reason until then. No model is needed."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import cv2
import pandas as pd
import pytest
from conftest import ROOT, small_params

from tasks.pipeline.extract import COLUMNS, IMAGES_NAME, MANIFEST_NAME, check_dataset_yaml, extract_frames
from tasks.pipeline.labels import check_labels, holdout_videos, read_holdout_info
from tasks.support.config import Params, load_params

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def sample_project(tmp_path_factory: pytest.TempPathFactory, sample_data: Path) -> Params:
    """The generator's tiny sample videos and holdout in a project of their own, its frames extracted (seconds)."""
    root = tmp_path_factory.mktemp("data-tier")
    shutil.copytree(sample_data / "videos", root / "data" / "videos")
    shutil.copytree(sample_data / "holdout", root / "data" / "holdout")
    params = small_params(root)
    p = params.paths
    extract_frames(
        p.videos, p.calibration, p.calibration_yaml, params.extract, params.model.names, p.holdout_frames, p.frame_cache
    )
    return params


@pytest.fixture(params=["sample", "repository"])
def data_project(request: pytest.FixtureRequest) -> tuple[Params, bool]:
    """(params, made here): the sample project, which must have every data set, or this checkout's own, whose data
    sets exist only once a user made them."""
    if request.param == "sample":
        return request.getfixturevalue("sample_project"), True
    return load_params(ROOT / "params.yaml"), False


def present(path: Path, made_here: bool, what: str, how: str) -> Path:
    """`path` when it exists; else the sample project fails and the repository's test is skipped with the reason."""
    if not path.exists():
        if made_here:
            pytest.fail(f"the sample project has no {what} ({path})")
        pytest.skip(f"{path} does not exist: this checkout has no {what} yet ({how})")
    return path


def manifest_problems(frames_dir: Path, split: str) -> list[str]:
    """What is wrong with a frame set (`images/` + `manifest.csv`) against its manifest: columns, one row per image
    file and one file per row, each file's sha256 and size as recorded, one split, frame order in time per video."""
    table = pd.read_csv(frames_dir / MANIFEST_NAME)
    if list(table.columns) != COLUMNS:
        return [f"columns {list(table.columns)}, expected {COLUMNS}"]
    problems = [f"{img}: listed {n} times" for img, n in table["image"].value_counts().items() if n > 1]
    on_disk = {f"{IMAGES_NAME}/{p.name}" for p in (frames_dir / IMAGES_NAME).iterdir()}
    problems += [f"{img}: in images/ but not in the manifest" for img in sorted(on_disk - set(table["image"]))]
    problems += [f"{img}: in the manifest but not in images/" for img in sorted(set(table["image"]) - on_disk)]
    for row in table.itertuples():
        path = frames_dir / row.image
        if not path.is_file():
            continue
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != row.sha256:
            problems.append(f"{row.image}: sha256 differs from the manifest's")
        image = cv2.imread(str(path))
        if image is None:
            problems.append(f"{row.image}: not a readable image")
        elif image.shape[:2] != (row.height, row.width):
            problems.append(
                f"{row.image}: {image.shape[1]}x{image.shape[0]}, the manifest says {row.width}x{row.height}"
            )
        if row.split != split:
            problems.append(f"{row.image}: split {row.split!r} in the {split} frames")
    for video, rows in table.groupby("video"):
        if rows["video_sha256"].nunique() != 1:
            problems.append(f"{video}: more than one video_sha256")
        ordered = rows.sort_values("frame_index")
        if ordered["frame_index"].duplicated().any() or not ordered["timestamp_s"].is_monotonic_increasing:
            problems.append(f"{video}: frames repeated or out of time order")
    return problems


def test_the_labelled_holdout_passes_the_label_checker(data_project: tuple[Params, bool]) -> None:
    """Every image has its label file and every line is a valid box of a known class; validation needs boxes, and
    every image must decode."""
    params, made_here = data_project
    holdout = present(params.paths.holdout, made_here, "labelled holdout", "`make demo` or `alpr-ops label`")
    labels = check_labels(holdout, list(params.model.names))
    assert labels.images and labels.boxes > 0, f"{holdout}: {len(labels.images)} images, {labels.boxes} boxes"
    unreadable = [item.image.name for item in labels.images if cv2.imread(str(item.image)) is None]
    assert not unreadable, f"images that do not decode: {unreadable}"


@pytest.mark.parametrize("which", ["calibration", "holdout_frames"])
def test_each_extracted_frame_set_matches_its_manifest(data_project: tuple[Params, bool], which: str) -> None:
    params, made_here = data_project
    what = "extracted calibration frames" if which == "calibration" else "extracted frames of the held-out videos"
    frames = present(getattr(params.paths, which), made_here, what, "`alpr-ops extract`")
    split = "calibration" if which == "calibration" else "holdout"
    assert not manifest_problems(frames, split), manifest_problems(frames, split)[:20]
    assert len(pd.read_csv(frames / MANIFEST_NAME)) > 0, f"{frames}: no frames"
    if which == "calibration":  # what Ultralytics calibrates on is this frame set
        check_dataset_yaml(params.paths.calibration_yaml, frames)


def test_no_video_feeds_both_calibration_and_a_held_out_set(data_project: tuple[Params, bool]) -> None:
    """Agreement and labelled accuracy are measured on videos the INT8 calibration never saw."""
    params, made_here = data_project
    p = params.paths
    calibration = present(p.calibration, made_here, "extracted calibration frames", "`alpr-ops extract`")
    seen = set(pd.read_csv(calibration / MANIFEST_NAME)["video"])
    if p.holdout_frames.exists():
        held = set(pd.read_csv(p.holdout_frames / MANIFEST_NAME)["video"])
        assert not seen & held, f"videos in both the calibration and the held-out frames: {sorted(seen & held)}"
    info = read_holdout_info(p.holdout) if p.holdout.exists() else None
    labelled = set(holdout_videos(info)) if info else set()
    assert not seen & labelled, f"the labelled holdout's videos are calibration videos too: {sorted(seen & labelled)}"


def test_the_manifest_check_names_what_is_wrong(sample_project: Params, tmp_path: Path) -> None:
    """The check above can fail: a copy of the sample's frames with a frame changed, one unlisted and one missing."""
    frames = shutil.copytree(sample_project.paths.calibration, tmp_path / "calibration", copy_function=shutil.copyfile)
    images = sorted((frames / IMAGES_NAME).iterdir())
    assert len(images) >= 2, images
    image = cv2.imread(str(images[0]))
    cv2.imwrite(str(images[0]), 255 - image)
    images[1].unlink()
    shutil.copyfile(images[0], frames / IMAGES_NAME / "stray.jpg")
    problems = manifest_problems(frames, "calibration")
    assert f"{IMAGES_NAME}/{images[0].name}: sha256 differs from the manifest's" in problems, problems
    assert f"{IMAGES_NAME}/{images[1].name}: in the manifest but not in images/" in problems, problems
    assert f"{IMAGES_NAME}/stray.jpg: in images/ but not in the manifest" in problems, problems
    assert manifest_problems(frames, "holdout"), "a calibration frame set passed as held-out frames"
