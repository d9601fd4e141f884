"""One progress bar per step, so Ultralytics' and OpenVINO's per-image bars are not needed to see work advance."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.progress import track

T = TypeVar("T")


def steps(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate `items` under a single rich progress bar (plain output when not on a terminal)."""
    yield from track(items, description=description, total=total, transient=False)
