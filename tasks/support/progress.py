"""One progress bar per step, so Ultralytics' and OpenVINO's per-image bars are not needed to see work advance."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from rich.progress import track

T = TypeVar("T")


def steps(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate `items` under a single rich progress bar (plain output when not on a terminal)."""
    yield from track(items, description=description, total=total, transient=False)


class VideoBars:
    """An overall bar (videos done) and one bar per video being decoded (seconds of video), fed from any worker.

    A finished video's bar is removed, so the display stays a few lines high however many videos there are.
    """

    def __init__(self, total: int, description: str) -> None:
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(), transient=False
        )
        self._overall = self._progress.add_task(description, total=total)
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> VideoBars:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(self, name: str, done_s: float, total_s: float) -> None:
        """`name` has been decoded up to `done_s` of its `total_s` seconds."""
        if name not in self._tasks:
            self._tasks[name] = self._progress.add_task(f"  {name}", total=max(total_s, 1e-3))
        self._progress.update(self._tasks[name], completed=done_s, total=max(total_s, done_s, 1e-3))

    def finish(self, name: str) -> None:
        """`name` is done: drop its bar and advance the overall one."""
        task = self._tasks.pop(name, None)
        if task is not None:
            self._progress.remove_task(task)
        self._progress.advance(self._overall)
