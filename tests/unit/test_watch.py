"""The video watcher: a slow copy in chunks starts one rebuild after the copy ends, a burst of files makes one."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
from conftest import copy_slowly

from tasks.operations.watch import Burst, Landing, Watcher, load_state
from tasks.support.config import WatchConfig

FAST = WatchConfig(poll_s=0.1, settle_s=0.8, debounce_s=0.6)


class Recorder:
    """The trigger: records when and for what it was called (the real one queues a Prefect deployment run)."""

    def __init__(self, fail_first: int = 0) -> None:
        self.calls: list[tuple[float, Burst]] = []
        self.fail_first = fail_first

    def __call__(self, burst: Burst) -> None:
        if self.fail_first > 0:
            self.fail_first -= 1
            raise ConnectionError("Prefect API not reachable")
        self.calls.append((time.monotonic(), burst))


class PollClock:
    """The watcher's clock, which it reads once per poll: the test waits for the watcher's polls, not for wall time,
    so a busy machine that delays the watcher's thread cannot make "nothing happened" pass without a look."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._reads = 0
        self._last = float("-inf")

    def __call__(self) -> float:
        now = time.monotonic()
        with self._cond:
            self._reads, self._last = self._reads + 1, now
            self._cond.notify_all()
        return now

    def wait_polled_past(self, t: float, timeout: float = 30.0) -> None:
        """Return once the watcher has finished a poll that started at monotonic time `t` or later."""
        deadline = time.monotonic() + timeout
        with self._cond:
            assert self._cond.wait_for(lambda: self._last >= t, timeout), "the watcher stopped polling"
            started = self._reads
            # the next poll starts only after that one (and any trigger it called) returned
            assert self._cond.wait_for(lambda: self._reads > started, deadline - time.monotonic()), "poll hung"


@pytest.fixture
def videos(sample_data: Path) -> list[Path]:
    return sorted((sample_data / "videos").iterdir())


def start(folder: Path, state: Path, trigger: Recorder) -> tuple[PollClock, threading.Event, threading.Thread]:
    clock = PollClock()
    watcher = Watcher(folder, FAST, state, trigger, clock=clock)
    watcher.start()  # here, not in the thread: what is there now counts as already rebuilt, whatever the load
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    thread.start()
    return clock, stop, thread


def quiet_time() -> float:
    """After the last change in the folder, the time within which any rebuild it causes has started (with margin)."""
    return FAST.settle_s + FAST.debounce_s + 1.0


def wait_for_calls(rec: Recorder, n: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while len(rec.calls) < n:
        assert time.monotonic() < deadline, f"{n} rebuild(s) expected within {timeout} s, got {len(rec.calls)}"
        time.sleep(FAST.poll_s / 4)


def test_slow_copy_starts_exactly_one_rebuild_after_it_ends(tmp_path: Path, videos: list[Path]) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(videos[0], folder / videos[0].name)
    rec = Recorder()
    clock, stop, thread = start(folder, tmp_path / "state.json", rec)
    try:
        assert rec.calls == []  # the video already there does not start a rebuild
        done = copy_slowly(videos[1], folder / "new.mp4", chunks=6, pause_s=0.4)  # pauses < settle_s
        wait_for_calls(rec, 1)
        clock.wait_polled_past(done + quiet_time())  # and nothing more starts
    finally:
        stop.set()
        thread.join(5)
    assert len(rec.calls) == 1, [b.describe() for _, b in rec.calls]
    when, burst = rec.calls[0]
    assert when >= done + FAST.settle_s  # not before the copy finished and settled
    assert burst.added == ("new.mp4",) and not burst.changed and not burst.removed
    assert load_state(tmp_path / "state.json") == burst.snapshot  # what was triggered is remembered


def test_two_quick_drops_make_one_rebuild(tmp_path: Path, videos: list[Path]) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    rec = Recorder()
    clock, stop, thread = start(folder, tmp_path / "state.json", rec)
    try:
        shutil.copy(videos[0], folder / "a.mp4")
        time.sleep(0.5)  # paces the drops: b lands 0.5 s after a, well within a's quiet period
        shutil.copy(videos[1], folder / "b.mp4")
        wait_for_calls(rec, 1)
        clock.wait_polled_past(time.monotonic() + 2 * FAST.poll_s)  # not a second rebuild for the same burst
        assert len(rec.calls) == 1, [b.describe() for _, b in rec.calls]
        shutil.copy(videos[0], folder / "c.mkv")  # a later drop, after the burst: a second, separate rebuild
        dropped = time.monotonic()
        wait_for_calls(rec, 2)
        clock.wait_polled_past(dropped + quiet_time())  # and nothing more starts
    finally:
        stop.set()
        thread.join(5)
    assert [b.added for _, b in rec.calls] == [("a.mp4", "b.mp4"), ("c.mkv",)]
    assert rec.calls[1][0] > rec.calls[0][0]


def test_partial_and_hidden_files_wait_for_their_final_name(tmp_path: Path, videos: list[Path]) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    rec = Recorder()
    clock, stop, thread = start(folder, tmp_path / "state.json", rec)
    try:
        shutil.copy(videos[0], folder / "gate.mp4.part")
        shutil.copy(videos[0], folder / ".gate2.mp4")
        (folder / "notes.txt").write_text("not a video")
        clock.wait_polled_past(time.monotonic() + quiet_time())  # they would have landed by now: nothing starts
        assert rec.calls == []
        (folder / "gate.mp4.part").rename(folder / "gate.mp4")
        renamed = time.monotonic()
        wait_for_calls(rec, 1)
        clock.wait_polled_past(renamed + quiet_time())  # and nothing more starts
    finally:
        stop.set()
        thread.join(5)
    assert [b.added for _, b in rec.calls] == [("gate.mp4",)]


def test_restart_keeps_state_and_a_failed_trigger_is_retried(tmp_path: Path, videos: list[Path]) -> None:
    folder, state = tmp_path / "videos", tmp_path / "state.json"
    folder.mkdir()
    shutil.copy(videos[0], folder / "a.mp4")
    Watcher(folder, FAST, state, Recorder()).start()  # first run: a.mp4 is the baseline
    shutil.copy(videos[1], folder / "b.mp4")  # lands while no watcher runs
    (folder / "a.mp4").unlink()
    rec = Recorder(fail_first=2)  # the Prefect API is down for the first two attempts
    clock, stop, thread = start(folder, state, rec)
    started = time.monotonic()
    try:
        wait_for_calls(rec, 1)  # after two failed attempts
        clock.wait_polled_past(started + quiet_time() + 0.5)  # and nothing more starts
    finally:
        stop.set()
        thread.join(5)
    assert len(rec.calls) == 1
    burst = rec.calls[0][1]
    assert burst.added == ("b.mp4",) and burst.removed == ("a.mp4",)
    assert set(load_state(state) or {}) == {"b.mp4"}


def test_landing_resets_on_every_change() -> None:
    landing = Landing(known={}, settle_s=1.0, debounce_s=1.0)
    assert landing.update(0.0, {"a.mp4": (10, 1)}) is None
    assert landing.update(1.5, {"a.mp4": (20, 2)}) is None  # still growing
    assert landing.update(3.4, {"a.mp4": (20, 2)}) is None  # 1.9 s quiet < 2 s
    burst = landing.update(3.6, {"a.mp4": (20, 2)})
    assert burst is not None and burst.added == ("a.mp4",)
    landing.done(burst)
    assert landing.update(10.0, {"a.mp4": (20, 2)}) is None  # nothing new since
    # a file that appears and vanishes again within the quiet period changes nothing
    assert landing.update(11.0, {"a.mp4": (20, 2), "b.mp4": (5, 3)}) is None
    assert landing.update(20.0, {"a.mp4": (20, 2)}) is None


def test_unreadable_state_names_the_file_and_the_fix(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text("{not json")
    with pytest.raises(ValueError, match=r"state\.json.*Delete it"):
        load_state(state)


def test_a_folder_that_disappears_is_an_error_not_all_videos_removed(
    tmp_path: Path, videos: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 15, defect 8: an unmounted share read as empty queued a failing rebuild, then a full one on its return."""
    folder, state = tmp_path / "videos", tmp_path / "state.json"
    folder.mkdir()
    shutil.copy(videos[0], folder / "a.mp4")
    rec, now = Recorder(), [0.0]
    watcher = Watcher(folder, FAST, state, rec, clock=lambda: now[0])
    watcher.start()
    folder.rename(tmp_path / "unmounted")
    for t in (1.0, 5.0, 10.0):  # well past settle + debounce
        now[0] = t
        assert watcher.poll() is None
    assert rec.calls == [] and 'Not read as "all videos removed"' in caplog.text
    (tmp_path / "unmounted").rename(folder)  # the share is back, unchanged: nothing to rebuild
    for t in (11.0, 15.0, 20.0):
        now[0] = t
        assert watcher.poll() is None
    assert rec.calls == [] and set(load_state(state) or {}) == {"a.mp4"}
    from tasks.operations.watch import VideosFolderMissing, scan

    folder.rename(tmp_path / "unmounted")
    with pytest.raises(VideosFolderMissing, match="cannot be read"):
        scan(folder)
    # an unmounted share usually leaves its empty mount point: empty while it held videos is the same error
    folder.mkdir()
    for t in (21.0, 25.0, 30.0):
        now[0] = t
        assert watcher.poll() is None
    assert rec.calls == [] and "is empty but held 1 videos" in caplog.text
