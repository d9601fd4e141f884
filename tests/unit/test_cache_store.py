"""A cache store that cannot be written raises `CacheUnwritable` naming its folder, at the write that fails: never
an OSError its caller could take for its input's (issue item 5). Root may write anywhere, so the store's folder is
put beneath a regular file: creating anything there fails for root too, as EACCES does for another user."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.support.cache import CacheStore, CacheUnwritable
from tasks.support.errors import Remedy
from tasks.support.videos import file_sha256


def test_every_write_of_an_unwritable_store_is_a_cache_error(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file, not a folder")
    store = CacheStore(tmp_path / "blocker" / "entries", setting="paths.frame_cache")
    where = rf"the cache {store.root} \(paths\.frame_cache\) cannot be written"
    with pytest.raises(CacheUnwritable, match=where) as e:
        store.check_writable()
    assert e.value.remedy is Remedy.CACHE and e.value.facts["path"] == str(store.root)
    with pytest.raises(CacheUnwritable, match=where):
        store.put_bytes("k", b"x")
    with pytest.raises(CacheUnwritable, match=where), store.put("k") as entry:
        (entry / "f.jpg").write_bytes(b"x")


def test_a_video_hash_whose_memo_cannot_be_written_is_a_cache_error(tmp_path: Path) -> None:
    video = tmp_path / "a.mp4"
    video.write_bytes(b"not really a video, but readable")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "hashes").write_text("a file where the memos go")
    with pytest.raises(CacheUnwritable, match=r"cache/hashes \(paths\.frame_cache\)"):
        file_sha256(video, tmp_path / "cache")
    (tmp_path / "cache" / "hashes").unlink()
    assert len(file_sha256(video, tmp_path / "cache")) == 64  # writable again: hashed and memoised


def test_errors_of_the_block_itself_are_not_the_caches(tmp_path: Path) -> None:
    store = CacheStore(tmp_path / "entries")
    with pytest.raises(ValueError, match="not a cache error"), store.put("k"):
        raise ValueError("not a cache error")
    assert store.keys() == set() and not any(store.root.iterdir())
