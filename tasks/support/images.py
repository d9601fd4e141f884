"""Image folders: which files count as images, how a frames folder is laid out, and the dataset YAML that points
Ultralytics at one. Every module that lists images or writes a dataset YAML uses these."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from tasks.support.fsutil import atomic_write_text

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp"})


def list_images(folder: Path) -> list[Path]:
    """The images directly in `folder`, sorted by name. A missing folder raises (FileNotFoundError): the caller
    decides whether that is optional."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def frames_folder(folder: Path) -> Path | None:
    """Where a frames folder keeps its images: `folder/images` (extract's layout) or `folder` itself; None when
    neither exists."""
    for where in (folder / "images", folder):
        if where.is_dir():
            return where
    return None


def write_dataset_yaml(
    path: Path, images_dir: Path, names: Mapping[int, str] | Sequence[str], comment: str = ""
) -> Path:
    """An Ultralytics dataset YAML whose `train` and `val` are `images_dir`, relative to the YAML's folder (labels:
    the sibling `labels/` folder, Ultralytics' convention). Written atomically."""
    rel = Path(os.path.relpath(images_dir, path.parent)).as_posix()
    named = dict(names) if isinstance(names, Mapping) else dict(enumerate(names))
    doc = {"train": rel, "val": rel, "names": named}
    header = "".join(f"# {line}\n" for line in comment.splitlines())
    return atomic_write_text(path, header + yaml.safe_dump(doc, sort_keys=False))
