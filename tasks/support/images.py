"""Image folders: which files count as images, how a frames folder is laid out, and the dataset YAML that points
Ultralytics at one. Every module that lists images or writes a dataset YAML uses these. Also what an import takes
from a folder somebody else made (a label export, a folder of videos): regular files inside it, images that decode.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from tasks.support.fsutil import atomic_write_text

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp"})
MIN_IMAGE_SIDE = 10  # pixels; Ultralytics' dataset check drops a smaller image from validation without failing
# a camera frame is at most 8K (33 MP); a larger image is no frame, and decoding it would take w * h * 3 bytes
MAX_IMAGE_PIXELS = 50_000_000


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


def file_kind(mode: int) -> str:
    """What a non-regular file is, for a message."""
    kinds = {stat.S_ISDIR: "a folder", stat.S_ISFIFO: "a FIFO", stat.S_ISSOCK: "a socket", stat.S_ISCHR: "a device",
             stat.S_ISBLK: "a device"}  # fmt: skip
    return next((kind for test, kind in kinds.items() if test(mode)), "not a regular file")


def imported_file_problem(path: Path, root: Path) -> str | None:
    """Why `path`, an entry of the folder `root` being imported, may not be taken (None: it may). Only regular files
    inside `root` are: a symlink (or a symlinked folder) leading elsewhere would copy a file from outside into the
    project's data, a device or FIFO would be read without end, and a dead symlink is a file that is not there."""
    try:
        st = path.lstat()
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    target = Path(os.path.realpath(path))
    if stat.S_ISLNK(st.st_mode):
        try:
            st = target.stat()
        except OSError:
            return f"a broken symlink (to {os.readlink(path)}): the file it names does not exist"
    if not target.is_relative_to(os.path.realpath(root)):
        return f"leads to {target}, outside {root}: only files inside the folder are imported (copy the file in)"
    if not stat.S_ISREG(st.st_mode):
        return f"not a regular file ({file_kind(st.st_mode)})"
    return None


def image_problem(path: Path) -> str | None:
    """Why the image file `path` would not be validated as it is (None: it would). Validation reads an image twice:
    Ultralytics' dataset check opens it with PIL (an image it cannot open, or under MIN_IMAGE_SIDE pixels, is left
    out of the metrics without failing; a JPEG without its end marker is rewritten in place) and its loader decodes
    it with OpenCV (an image it cannot decode crashes the run). Reads the whole file: one decode per image."""
    import cv2
    from PIL import Image

    kind = None
    try:
        with path.open("rb") as f:
            head = f.read(8)
            if not head:
                return "an empty file (0 bytes), not an image"
            # sniffed first: PIL's open, which Ultralytics patches, would try to install a HEIF plugin on a non-image
            kind = next((k for k, magic in _MAGIC.items() if head.startswith(magic)), None)
            if kind is None:
                return f"not a JPEG, PNG or BMP image (it starts with {head!r})"
            f.seek(-2, os.SEEK_END)
            if kind == "JPEG" and f.read() != b"\xff\xd9":
                return "a truncated JPEG (it does not end with the end-of-image marker)"
        with Image.open(path) as im:  # the header only
            w, h = im.size
            if w * h > MAX_IMAGE_PIXELS:
                return f"{w}x{h} pixels, more than an image may have ({MAX_IMAGE_PIXELS:,} pixels, MAX_IMAGE_PIXELS)"
            im.verify()
    except Image.DecompressionBombError as e:  # PIL's own bound, above MAX_IMAGE_PIXELS
        return f"more pixels than an image may have ({MAX_IMAGE_PIXELS:,} pixels, MAX_IMAGE_PIXELS): {e}"
    except (OSError, SyntaxError, ValueError, ImportError) as e:  # verify: SyntaxError; Ultralytics' patch: ImportError
        return f"a broken {kind} image ({e})" if kind else f"cannot be read ({e})"
    if min(w, h) < MIN_IMAGE_SIDE:
        return f"{w}x{h} pixels: an image needs at least {MIN_IMAGE_SIDE} pixels a side"
    if cv2.imread(str(path), cv2.IMREAD_COLOR) is None:
        return f"a broken {kind} image (OpenCV decodes nothing from it)"
    return None


_MAGIC = {"JPEG": b"\xff\xd8\xff", "PNG": b"\x89PNG\r\n\x1a\n", "BMP": b"BM"}
