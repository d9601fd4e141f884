"""The proposal's selection rule (`select_frames`) on made-up candidates: no video, no model."""

from __future__ import annotations

import random
from collections import Counter

from tasks.operations.labelling import FrameCandidate, select_frames


def cands(video: str, n: int, boxes: int = 1, stratum: int = 1, start: float = 0.0) -> list[FrameCandidate]:
    """n candidates of one video, one per second from `start`."""
    return [FrameCandidate(video, start + i, f"{video}_{i}", 100.0, stratum, boxes) for i in range(n)]


def kinds(chosen: list[FrameCandidate]) -> tuple[int, int]:
    return sum(1 for c in chosen if c.boxes), sum(1 for c in chosen if not c.boxes)


def test_a_third_empty_frames_when_both_kinds_suffice() -> None:
    pool = cands("a", 20, 1) + cands("a", 20, 0, start=100)
    assert kinds(select_frames(pool, ["a"], 9)) == (6, 3)
    assert kinds(select_frames(pool, ["a"], 10)) == (7, 3)  # n // 3 empty


def test_the_other_kind_fills_in_when_one_runs_short() -> None:
    few_plates = cands("a", 2, 1) + cands("a", 20, 0, start=100)
    assert kinds(select_frames(few_plates, ["a"], 9)) == (2, 7)
    few_empty = cands("a", 20, 1) + cands("a", 1, 0, start=100)
    assert kinds(select_frames(few_empty, ["a"], 9)) == (8, 1)
    assert kinds(select_frames(cands("a", 20, 0), ["a"], 9)) == (0, 9)


def test_all_when_fewer_than_asked() -> None:
    pool = cands("a", 3, 1) + cands("b", 2, 0)
    assert select_frames(pool, ["a", "b"], 50) == pool


def test_videos_share_evenly_and_each_is_represented() -> None:
    pool = cands("a", 30) + cands("b", 30) + cands("c", 2) + cands("d", 1, 0)
    chosen = select_frames(pool, ["a", "b", "c", "d"], 20)
    assert Counter(c.video for c in chosen) == {"a": 9, "b": 8, "c": 2, "d": 1}
    assert len(select_frames(pool, ["a", "b", "c", "d"], 4)) == 4
    assert {c.video for c in select_frames(pool, ["a", "b", "c", "d"], 4)} == {"a", "b", "c", "d"}


def test_each_video_keeps_about_two_plates_per_empty_frame() -> None:
    pool = [c for v in "ab" for c in cands(v, 20, 1) + cands(v, 20, 0, start=100)]
    chosen = select_frames(pool, ["a", "b"], 12)
    for v in "ab":
        assert kinds([c for c in chosen if c.video == v]) == (4, 2)


def test_brightness_strata_share_then_time_is_spread() -> None:
    pool = cands("a", 10, stratum=0) + cands("a", 10, stratum=1, start=20) + cands("a", 2, stratum=2, start=40)
    chosen = select_frames(pool, ["a"], 8)
    assert Counter(c.stratum for c in chosen) == {0: 3, 1: 3, 2: 2}
    # 3 of 10 in time order: the centres of 3 equal slices, indices 1, 5, 8
    assert [c.t for c in chosen if c.stratum == 0] == [1.0, 5.0, 8.0]
    assert [c.t for c in select_frames(cands("a", 10), ["a"], 1)] == [5.0]


def test_the_order_candidates_come_in_does_not_matter() -> None:
    pool = [c for v in "abc" for c in cands(v, 15, 1) + cands(v, 9, 0, start=50)]
    shuffled = pool[:]
    random.Random(1).shuffle(shuffled)
    assert select_frames(shuffled, ["a", "b", "c"], 17) == select_frames(pool, ["a", "b", "c"], 17)
