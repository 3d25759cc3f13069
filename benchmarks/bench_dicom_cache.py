"""Decoded-pixel cache: time to produce every sample-data image from DICOM vs from the cache.

Both run side by side in this process on the bundled sample data; the result is a ratio.

    python benchmarks/bench_dicom_cache.py
"""

from __future__ import annotations

import tempfile
import time

from tlapp_medical.cache import DecodedCache
from tlapp_medical.formats import find_dicom_files
from tlapp_medical.pixels import PixelSettings, read_dicom
from tlapp_medical.task import SAMPLE_DATA

ROOT = SAMPLE_DATA


def main(repeats: int = 3) -> None:
    files = find_dicom_files(ROOT)
    settings = PixelSettings(size=128)
    with tempfile.TemporaryDirectory() as tmp:
        cache = DecodedCache(tmp)
        keys = {f: DecodedCache.content_key(f) for f in files}
        for f in files:  # fill the cache once
            cache.get_or_decode(f, settings, read_dicom, content_key=keys[f])
        decode, cached = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            for f in files:
                [a.sum() for a in read_dicom(f, settings)]
            decode.append(time.perf_counter() - t)
            t = time.perf_counter()
            for f in files:
                [a.sum() for a in cache.get_or_decode(f, settings, read_dicom, content_key=keys[f])]
            cached.append(time.perf_counter() - t)
    d, c = min(decode), min(cached)
    print(f"{len(files)} files, best of {repeats}: decode {d:.3f} s, cache {c:.3f} s, speed-up x{d / c:.1f}")


if __name__ == "__main__":
    main()
