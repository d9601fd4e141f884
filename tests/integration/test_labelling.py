"""The holdout proposal on real synthetic gate videos and the real pinned detector: what a reviewer gets to correct.

Two 4 s videos at 640x360, 10 fps, sampled every 0.25 s (16 samples each) with a dedup threshold of 0.01 leave about
20 candidates; 9 are proposed at imgsz 320. The synthetic cars approach from far away, so early frames show a plate
too small for the detector: both frames with and without a pre-label exist (asserted, not assumed).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tasks.demo.synth import SynthConfig, write_videos
from tasks.operations.labelling import IMAGES, LABELS, PROPOSAL_JSON, Proposal, ProposalError, propose
from tasks.pipeline.labels import read_label_file
from tasks.support.config import ExtractConfig, LabelConfig

pytestmark = pytest.mark.integration

CFG = LabelConfig(frames=9, prelabel_conf=0.1)
EXTRACT = ExtractConfig(interval_s=0.25, dedup_threshold=0.01)
IMGSZ = 320


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_videos(tmp_path_factory.mktemp("videos"), 2, 4, 0, SynthConfig(width=640, height=360, fps=10))


@pytest.fixture(scope="module")
def proposal(tmp_path_factory: pytest.TempPathFactory, videos: list[Path], plate_model: Path) -> Proposal:
    return propose(videos, tmp_path_factory.mktemp("p") / "proposal", plate_model, CFG, EXTRACT, IMGSZ)


def doc_of(p: Proposal) -> dict:
    return json.loads((p.out_dir / PROPOSAL_JSON).read_text())


def names(folder: Path) -> list[str]:
    return sorted(f.name for f in folder.iterdir())


def test_proposes_exactly_the_frames_asked_each_with_a_label_file(proposal: Proposal) -> None:
    doc = doc_of(proposal)
    assert doc["counts"]["candidates"] > CFG.frames, "the test must ask for fewer frames than there are candidates"
    images = names(proposal.out_dir / IMAGES)
    assert proposal.frames == len(images) == CFG.frames
    assert names(proposal.out_dir / LABELS) == sorted(Path(i).with_suffix(".txt").name for i in images)
    assert names(proposal.out_dir) == [IMAGES, LABELS, PROPOSAL_JSON]  # the candidates' scratch folder is gone
    assert [f["image"] for f in doc["frames"]] == images
    assert doc["counts"] | {"candidates": 0, "candidates_with_plate": 0} == {
        "candidates": 0, "candidates_with_plate": 0, "frames": CFG.frames, "with_plate": proposal.with_plate,
        "without_plate": proposal.without_plate, "prelabel_boxes": proposal.boxes,
    }  # fmt: skip
    for f in doc["frames"]:
        lines = (proposal.out_dir / LABELS / f["image"]).with_suffix(".txt").read_text().splitlines()
        assert len(lines) == f["prelabels"]
        assert f["image"] == f"{Path(f['video']).stem}_{round(f['time_s'] * 1000):08d}.jpg"
    assert (doc["prelabel_conf"], doc["imgsz"], doc["model"]["name"]) == (CFG.prelabel_conf, IMGSZ, "best.pt")


def test_every_video_is_represented(proposal: Proposal, videos: list[Path]) -> None:
    doc = doc_of(proposal)
    assert proposal.videos == tuple(v.name for v in videos)
    assert {f["video"] for f in doc["frames"]} == {v.name for v in videos}
    per_video = [v["frames"] for v in doc["videos"]]
    assert max(per_video) - min(per_video) <= 1, per_video  # shared evenly (both videos have enough candidates)


def test_both_plate_and_empty_frames_in_a_two_to_one_ratio(proposal: Proposal) -> None:
    counts = doc_of(proposal)["counts"]
    plates, empty = counts["candidates_with_plate"], counts["candidates"] - counts["candidates_with_plate"]
    assert plates >= 6 and empty >= 3, f"the synthetic videos should have both kinds: {counts}"
    # both kinds plentiful: a third (9 // 3) empty-lane frames, the rest with a plate
    assert (proposal.with_plate, proposal.without_plate) == (6, 3)
    assert proposal.boxes >= proposal.with_plate


def test_prelabels_are_what_the_detector_finds_on_the_written_images(proposal: Proposal, plate_model: Path) -> None:
    from ultralytics import YOLO

    model = YOLO(str(plate_model), task="detect")
    frames = doc_of(proposal)["frames"]
    checked = [next(f for f in frames if f["prelabels"]), next(f for f in frames if not f["prelabels"])]
    for f in checked:
        image = proposal.out_dir / IMAGES / f["image"]
        boxes = model.predict(str(image), imgsz=IMGSZ, conf=CFG.prelabel_conf, device="cpu", verbose=False)[0].boxes
        found = np.array([[c, *b] for c, b in zip(boxes.cls.numpy(), boxes.xywhn.numpy(), strict=True)]).reshape(-1, 5)
        # read as every pre-label is read (push, pull, import): by the holdout's own label reader, without a problem
        read, problems = read_label_file((proposal.out_dir / LABELS / f["image"]).with_suffix(".txt"), 1, scores=True)
        assert problems == [], problems
        written = np.array([[b.cls, b.cx, b.cy, b.w, b.h] for b in read]).reshape(-1, 5)
        assert written.shape == found.shape, f["image"]
        np.testing.assert_allclose(written, found, atol=1e-3, err_msg=f["image"])


def test_same_inputs_give_the_same_selection(
    proposal: Proposal, videos: list[Path], plate_model: Path, tmp_path: Path
) -> None:
    again = propose(list(reversed(videos)), tmp_path / "again", plate_model, CFG, EXTRACT, IMGSZ)
    assert names(again.out_dir / IMAGES) == names(proposal.out_dir / IMAGES)
    for label in names(proposal.out_dir / LABELS):
        assert (again.out_dir / LABELS / label).read_bytes() == (proposal.out_dir / LABELS / label).read_bytes()


def test_dedup_keeps_the_same_frames_as_extraction(proposal: Proposal, videos: list[Path]) -> None:
    """Extraction's Selector, uncapped, on the same samples keeps as many frames as the proposal had candidates."""
    from tasks.pipeline.decode import FrameSampler
    from tasks.pipeline.extract_worker import FrameParams, Selector

    per_video = {v["name"]: v["candidates"] for v in doc_of(proposal)["videos"]}
    for video in videos:
        selector = Selector(FrameParams(EXTRACT.interval_s, 10**6, 95, EXTRACT.keyframe_tolerance_s,
                                        EXTRACT.dedup_threshold, 3))  # fmt: skip
        for sample in FrameSampler(video, EXTRACT.interval_s, EXTRACT.keyframe_tolerance_s):
            selector.offer(sample)
        assert selector.dropped["duplicate"] > 0, "the threshold must drop some frames for this test to mean much"
        assert sum(len(b) for b in selector.bins) == per_video[video.name]


def test_an_unreadable_video_is_skipped_by_name(videos: list[Path], plate_model: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00not a video" * 100)
    out = tmp_path / "proposal"
    (out / IMAGES).mkdir(parents=True)
    (out / IMAGES / "stale.jpg").write_bytes(b"old")  # an existing proposal: replaced once the new one is complete
    p = propose([*videos, broken], out, plate_model, CFG, EXTRACT, IMGSZ)
    assert p.frames == CFG.frames and "broken.mp4" not in p.videos
    assert "broken.mp4" in p.skipped and "not a readable video" in p.skipped["broken.mp4"]
    assert doc_of(p)["skipped"] == p.skipped
    assert "stale.jpg" not in names(out / IMAGES)


def test_only_unreadable_videos_fail_and_leave_the_old_proposal(plate_model: Path, tmp_path: Path) -> None:
    broken, empty = tmp_path / "broken.mp4", tmp_path / "empty.mov"
    broken.write_bytes(b"\x00not a video" * 100)
    empty.write_bytes(b"")
    out = tmp_path / "proposal"
    out.mkdir()
    (out / PROPOSAL_JSON).write_text("{}")
    with pytest.raises(ProposalError, match=r"broken\.mp4: not a readable video.*empty\.mov: empty file"):
        propose([broken, empty], out, plate_model, CFG, EXTRACT, IMGSZ)
    assert names(out) == [PROPOSAL_JSON] and (out / PROPOSAL_JSON).read_text() == "{}"
    assert names(tmp_path) == ["broken.mp4", "empty.mov", "proposal"]  # no temp folder left beside it
    with pytest.raises(ProposalError, match="no videos given"):
        propose([], out, plate_model, CFG, EXTRACT, IMGSZ)


def test_a_missing_video_is_named(plate_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ProposalError, match=r"gone\.mp4: .*No such file"):
        propose([tmp_path / "gone.mp4"], tmp_path / "proposal", plate_model, CFG, EXTRACT, IMGSZ)
    assert not (tmp_path / "proposal").exists()
