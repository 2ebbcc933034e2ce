"""The prediction cache's pack files (``odbench.cache``): a torn tail (a run killed mid-write)
is skipped, an entry still being written is not served until complete, a damaged entry is an
error naming its file (and a newer sound entry of the id is served), two processes write one
cache at once, and entries of the old format (one ``.npz`` each) are never read."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest

from odbench.cache import PACK_VERSION, CacheError, PredictionCache, cache_folders


def _map(i: int, shape: tuple[int, int] = (30, 40)) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 65536, shape, dtype=np.uint16)


def _fill(folder: Path, n: int) -> Path:
    cache = PredictionCache(folder)
    for i in range(n):
        cache.put(f"img{i}", _map(i), np.array([1.0, 2.0, 3.0, 4.0 + i]))
    (pack,) = folder.glob("*.pack")
    return pack


def test_entries_read_back_as_stored(tmp_path: Path) -> None:
    _fill(tmp_path, 3)
    cache = PredictionCache(tmp_path)  # a fresh reader: indexes the pack
    assert cache.ids() == ["img0", "img1", "img2"]
    pred, box = cache.get("img1")
    assert pred.dtype == np.uint16 and np.array_equal(pred, _map(1)) and pred.flags.writeable
    assert box is not None and box.tolist() == [1.0, 2.0, 3.0, 5.0]
    assert not cache.has("img3") and cache.path("img3") == tmp_path


def test_a_look_up_scanning_the_writer_s_own_pack_never_moves_where_it_writes(
    tmp_path: Path,
) -> None:
    """During a run the entries are written by the cache's thread while the main thread looks
    up others; a look-up that listed the pack just made (before it was known as ours) may note
    an older size for it.  The next entry still goes after the last one written: none is
    overwritten (one run in CI lost an entry this way)."""
    cache = PredictionCache(tmp_path)
    cache.put("a", _map(0), None)
    cache.put("b", _map(1), None)
    (pack,) = tmp_path.glob("*.pack")
    cache._scanned[pack.name] = 0  # what the concurrent scan left: the size before "a"
    cache.put("c", _map(2), None)
    fresh = PredictionCache(tmp_path)
    assert fresh.ids() == ["a", "b", "c"]
    for i, sample_id in enumerate("abc"):
        assert np.array_equal(fresh.get(sample_id)[0], _map(i))


def test_a_torn_tail_is_skipped_and_the_image_predicted_again(tmp_path: Path) -> None:
    pack = _fill(tmp_path, 3)
    size = pack.stat().st_size
    os.truncate(pack, size - 100)  # killed while writing img2: its end never reached the disk
    cache = PredictionCache(tmp_path)
    assert cache.ids() == ["img0", "img1"] and not cache.has("img2")
    cache.put("img2", _map(2), None)  # stored again (into this writer's own pack)
    again = PredictionCache(tmp_path)
    assert again.ids() == ["img0", "img1", "img2"]
    assert np.array_equal(again.get("img2")[0], _map(2))


def test_an_entry_being_written_is_served_only_once_complete(tmp_path: Path) -> None:
    """Another process's entry becomes visible part by part (the file grows as its pages are
    copied): a reader that looks in between never serves the part it saw."""
    pack = _fill(tmp_path / "a", 1)
    record = pack.read_bytes()
    (tmp_path / "b").mkdir()
    growing = tmp_path / "b" / "other-1-0.pack"
    reader = PredictionCache(tmp_path / "b")
    for cut in (10, 24, 100, len(record) - 1):
        growing.write_bytes(record[:cut])
        assert not reader.has("img0")
    growing.write_bytes(record)
    assert reader.has("img0") and np.array_equal(reader.get("img0")[0], _map(0))


def test_a_damaged_entry_is_an_error_naming_its_file_until_stored_again(tmp_path: Path) -> None:
    pack = _fill(tmp_path, 2)
    data = bytearray(pack.read_bytes())
    data[data.index(b'"img1"') + 400] ^= 0x01  # one bit of img1's map
    pack.write_bytes(data)
    cache = PredictionCache(tmp_path)
    with pytest.raises(CacheError, match=f"{pack}: corrupt cache entry of 'img1'.*checksum"):
        cache.get("img1")
    assert np.array_equal(cache.get("img0")[0], _map(0))  # the others are sound
    cache.put("img1", _map(1), None)
    assert np.array_equal(PredictionCache(tmp_path).get("img1")[0], _map(1))


def _writer(folder: str, start: int) -> None:
    cache = PredictionCache(Path(folder))
    for k in range(60):
        i = (start + k) % 60
        cache.put(f"img{i}", _map(i, (64, 64)), None)


def test_two_processes_write_one_cache_at_once(tmp_path: Path) -> None:
    """Each writer appends to its own pack; a reader looking while they write serves only
    complete, sound entries, and every image is readable at the end."""
    ctx = multiprocessing.get_context("fork")
    writers = [ctx.Process(target=_writer, args=(str(tmp_path), s)) for s in (0, 30)]
    for w in writers:
        w.start()
    reader = PredictionCache(tmp_path)
    while any(w.is_alive() for w in writers):
        for i in reader.ids():
            assert np.array_equal(reader.get(i)[0], _map(int(i[3:]), (64, 64)))
    for w in writers:
        w.join()
        assert w.exitcode == 0
    assert len(list(tmp_path.glob("*.pack"))) == 2
    final = PredictionCache(tmp_path)
    assert final.ids() == sorted(f"img{i}" for i in range(60))
    assert all(np.array_equal(final.get(f"img{i}")[0], _map(i, (64, 64))) for i in range(60))


def test_old_format_entries_are_not_read_and_the_key_names_the_format(tmp_path: Path) -> None:
    from odbench.cache import cache_key
    from odbench.methods.base import create_method

    _fill(tmp_path, 1)
    np.savez(tmp_path / "img7.npz", map=_map(7), id=np.array("img7"))  # format 1
    cache = PredictionCache(tmp_path)
    assert cache.ids() == ["img0"] and not cache.has("img7")
    _, key = cache_key(create_method("center-prior"), {"name": "toy"})
    assert key["format"] == PACK_VERSION == 2  # so format-1 folders are never this key's


def test_cache_info_counts_the_entries_in_packs(tmp_path: Path) -> None:
    folder = tmp_path / "center-prior" / "abc"
    _fill(folder, 3)
    (folder / "key.json").write_text("{}")
    (entry,) = cache_folders(tmp_path)
    assert (entry.method, entry.key, entry.n_entries) == ("center-prior", "abc", 3)


def test_a_missing_entry_says_when_only_an_old_format_entry_is_there(tmp_path: Path) -> None:
    cache = PredictionCache(tmp_path / "c")
    cache.put("a/1", np.zeros((3, 4), np.uint16), None)
    np.savez(tmp_path / "c" / "b.npz", map=np.zeros((3, 4), np.uint16))  # a format-1 entry
    assert not cache.has("b")
    assert "older cache format" in cache.why_missing("b")
    assert cache.why_missing("c") == "is not in the prediction cache"


def test_a_look_up_without_looking_again_reads_the_packs_once(tmp_path: Path) -> None:
    """``has(id, look_again=False)`` (before claiming an image) reads the packs on the first
    look-up only; entries stored since by another process are seen when looked up again."""
    _fill(tmp_path, 2)
    reader = PredictionCache(tmp_path)
    assert reader.has("img1", look_again=False)  # the first look-up reads the folder
    PredictionCache(tmp_path).put("img5", _map(5), None)  # another writer, another pack
    assert not reader.has("img5", look_again=False)
    assert reader.has("img5") and np.array_equal(reader.get("img5")[0], _map(5))


def test_entries_written_with_zlibs_crc_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CRC-32 is libdeflate's, whose values are zlib's: packs written with either read
    alike, and a damaged entry fails both."""
    import zlib

    import odbench.cache

    monkeypatch.setattr(odbench.cache, "_crc32", zlib.crc32)
    pack = _fill(tmp_path / "z", 2)  # written (and checked) with zlib's CRC
    monkeypatch.undo()
    assert odbench.cache._crc32 is not zlib.crc32
    cache = PredictionCache(tmp_path / "z")
    assert all(np.array_equal(cache.get(f"img{i}")[0], _map(i)) for i in range(2))
    _fill(tmp_path / "d", 1)  # and the other way round
    monkeypatch.setattr(odbench.cache, "_crc32", zlib.crc32)
    assert np.array_equal(PredictionCache(tmp_path / "d").get("img0")[0], _map(0))
    data = bytearray(pack.read_bytes())
    data[-5] ^= 0x10
    pack.write_bytes(data)
    with pytest.raises(CacheError, match="checksum"):
        PredictionCache(tmp_path / "z").get("img1")
