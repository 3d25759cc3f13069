"""DecodedCache: decode once, key on file bytes + settings, atomic writes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from tlapp_medical import cache as cache_module
from tlapp_medical.cache import DecodedCache
from tlapp_medical.pixels import PixelSettings, read_dicom
from tlapp_medical.task import CachedDecoder
from tlcore import DataError

SOURCE = Path(pydicom.data.__file__).parent / "test_files" / "rtdose.dcm"  # 15 frames


class CountingDecoder:
    def __init__(self):
        self.calls = 0

    def __call__(self, path, settings):
        self.calls += 1
        return read_dicom(path, settings)


@pytest.fixture
def dicom(tmp_path) -> Path:
    path = tmp_path / "data" / "dose.dcm"
    path.parent.mkdir()
    shutil.copyfile(SOURCE, path)
    return path


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_second_call_is_a_hit(tmp_path, dicom):
    cache = DecodedCache(tmp_path / "cache")
    decode = CountingDecoder()
    settings = PixelSettings(frames="each", size=16)
    first = cache.get_or_decode(dicom, settings, decode)
    second = cache.get_or_decode(dicom, settings, decode)
    assert decode.calls == 1
    assert len(first) == len(second) == 15
    direct = read_dicom(dicom, settings)
    for a, b, c in zip(first, second, direct, strict=True):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, c)
        assert b.dtype == np.float32 and b.shape == (3, 16, 16)
    # served from a read-only memory map (shared through the page cache)
    assert isinstance(second[0].base, np.memmap) or isinstance(second[0], np.memmap)
    assert not second[0].flags.writeable
    assert [p.suffix for p in _files(tmp_path / "cache")] == [".npy"]


def test_hit_survives_a_new_cache_object(tmp_path, dicom):
    settings = PixelSettings(size=16)
    decode = CountingDecoder()
    DecodedCache(tmp_path / "cache").get_or_decode(dicom, settings, decode)
    DecodedCache(tmp_path / "cache").get_or_decode(dicom, settings, decode)
    assert decode.calls == 1


def test_changed_file_bytes_miss(tmp_path, dicom):
    cache = DecodedCache(tmp_path / "cache")
    decode = CountingDecoder()
    settings = PixelSettings(size=16, window="minmax")
    before = cache.get_or_decode(dicom, settings, decode)
    ds = pydicom.dcmread(dicom)
    arr = ds.pixel_array.copy()
    arr[7] = arr[7].max() - arr[7]  # change the middle frame
    ds.PixelData = arr.tobytes()
    ds.save_as(dicom)
    after = cache.get_or_decode(dicom, settings, decode)
    assert decode.calls == 2
    assert not np.array_equal(before[0], after[0])
    np.testing.assert_array_equal(after[0], read_dicom(dicom, settings)[0])


def test_same_bytes_elsewhere_hit(tmp_path, dicom):
    cache = DecodedCache(tmp_path / "cache")
    decode = CountingDecoder()
    settings = PixelSettings(size=16)
    cache.get_or_decode(dicom, settings, decode)
    moved = tmp_path / "moved.dcm"
    shutil.copyfile(dicom, moved)
    cache.get_or_decode(moved, settings, decode)
    assert decode.calls == 1


def test_changed_settings_miss(tmp_path, dicom):
    cache = DecodedCache(tmp_path / "cache")
    decode = CountingDecoder()
    a = cache.get_or_decode(dicom, PixelSettings(size=16), decode)
    b = cache.get_or_decode(dicom, PixelSettings(size=16, window="1000,500"), decode)
    c = cache.get_or_decode(dicom, PixelSettings(size=8), decode)
    assert decode.calls == 3
    assert not np.array_equal(a[0], b[0]) and c[0].shape == (3, 8, 8)
    assert len(_files(tmp_path / "cache")) == 3


def test_content_key_is_the_sha256_of_the_bytes(tmp_path, dicom):
    import hashlib

    assert DecodedCache.content_key(dicom) == hashlib.sha256(dicom.read_bytes()).hexdigest()


def test_precomputed_content_key_is_used(tmp_path, dicom, monkeypatch):
    cache = DecodedCache(tmp_path / "cache")
    key = DecodedCache.content_key(dicom)

    def no_hashing(path):
        raise AssertionError("content_key recomputed")

    monkeypatch.setattr(DecodedCache, "content_key", staticmethod(no_hashing))
    decode = CountingDecoder()
    cache.get_or_decode(dicom, PixelSettings(size=16), decode, content_key=key)
    cache.get_or_decode(dicom, PixelSettings(size=16), decode, content_key=key)
    assert decode.calls == 1


def test_failed_write_leaves_no_file(tmp_path, dicom, monkeypatch):
    cache = DecodedCache(tmp_path / "cache")
    real_save = np.save

    def save_half_then_fail(f, arr, **kwargs):
        real_save(f, arr, **kwargs)
        f.truncate(f.tell() // 2)
        raise OSError("disk full")

    monkeypatch.setattr(cache_module.np, "save", save_half_then_fail)
    decode = CountingDecoder()
    with pytest.raises(OSError, match="disk full"):
        cache.get_or_decode(dicom, PixelSettings(size=16), decode)
    assert _files(tmp_path / "cache") == []  # neither a partial entry nor a temp file
    monkeypatch.setattr(cache_module.np, "save", real_save)
    out = cache.get_or_decode(dicom, PixelSettings(size=16), decode)
    assert decode.calls == 2 and out[0].shape == (3, 16, 16)


def test_failed_rename_leaves_no_temp_file(tmp_path, dicom, monkeypatch):
    cache = DecodedCache(tmp_path / "cache")

    def fail(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(cache_module.os, "replace", fail)
    with pytest.raises(OSError, match="rename failed"):
        cache.get_or_decode(dicom, PixelSettings(size=16), CountingDecoder())
    assert _files(tmp_path / "cache") == []


def test_decode_error_caches_nothing(tmp_path):
    bad = tmp_path / "bad.dcm"
    bad.write_text("not dicom")
    cache = DecodedCache(tmp_path / "cache")
    from tlcore import DataError

    with pytest.raises(DataError):
        cache.get_or_decode(bad, PixelSettings(), read_dicom)
    assert _files(tmp_path / "cache") == []


def test_corrupt_entry_is_decoded_again(tmp_path, dicom):
    cache = DecodedCache(tmp_path / "cache")
    decode = CountingDecoder()
    settings = PixelSettings(size=16)
    cache.get_or_decode(dicom, settings, decode)
    entry = cache.entry_path(DecodedCache.content_key(dicom), settings)
    entry.write_bytes(b"garbage")
    out = cache.get_or_decode(dicom, settings, decode)
    assert decode.calls == 2
    np.testing.assert_array_equal(out[0], read_dicom(dicom, settings)[0])


def test_cached_decoder_sees_a_file_replaced_during_one_build(tmp_path, make_dicom):
    """The content key is remembered per path, but a changed size, mtime, inode or ctime means new content."""
    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 16 + 1000).astype(np.uint16)
    path = make_dicom(tmp_path / "d" / "a.dcm", pixels=ramp)
    decoder = CachedDecoder(DecodedCache(tmp_path / "cache"), PixelSettings(size=8, window="minmax"))
    first = np.array(decoder(path)[0])
    assert np.array_equal(np.array(decoder(path)[0]), first)

    # rewritten in place: same size, same inode, and the old mtime put back; only ctime tells
    before = path.stat()
    make_dicom(path, pixels=ramp[::-1].copy())
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns
    second = np.array(decoder(path)[0])
    assert not np.array_equal(second, first)
    np.testing.assert_array_equal(second, read_dicom(path, decoder.settings)[0])

    # replaced by another file (a new inode), as copying tools and editors do
    other = make_dicom(tmp_path / "other.dcm", pixels=ramp.T.copy())
    os.replace(other, path)
    np.testing.assert_array_equal(np.array(decoder(path)[0]), read_dicom(path, decoder.settings)[0])

    path.unlink()
    with pytest.raises(DataError, match="cannot read the file"):
        decoder(path)
