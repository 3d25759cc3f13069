"""Decode each DICOM file once: decoded arrays cached as .npy files.

The key is a hash of the file's bytes (sha256, see ``content_key``) and the
pixel settings' ``key()``, so editing a file or changing a setting simply misses
the cache; nothing is ever stale.  Entries are written to a temp file in the
same folder and moved into place with ``os.replace`` (atomic), and read back with
``np.load(mmap_mode="r")`` so DataLoader worker processes share the pages
through the OS page cache.  Returned arrays are read-only memory maps: copy them
(``np.array(a)``) before modifying or handing them to ``torch.from_numpy``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from os import PathLike
from pathlib import Path
from typing import Protocol

import numpy as np

__all__ = ["DecodedCache"]

_CHUNK = 1 << 20


class _Settings(Protocol):
    def key(self) -> str: ...


class DecodedCache:
    """Decoded-array cache under ``root`` (one ``.npy`` per file and settings)."""

    def __init__(self, root: str | PathLike[str]):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def content_key(path: str | PathLike[str]) -> str:
        """sha256 of the file's bytes; compute once per dataset build and pass it on."""
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    def entry_path(self, content_key: str, settings: _Settings) -> Path:
        key = hashlib.sha256(f"{content_key}\n{settings.key()}".encode()).hexdigest()
        return self.root / key[:2] / f"{key}.npy"

    def get_or_decode(
        self,
        path: str | PathLike[str],
        settings: _Settings,
        decode_fn: Callable[[str | PathLike[str], _Settings], Sequence[np.ndarray]],
        *,
        content_key: str | None = None,
    ) -> list[np.ndarray]:
        """The decoded arrays for ``path``: from the cache, else ``decode_fn(path, settings)``.

        ``decode_fn`` must return arrays of one shape (one per frame); they are
        stored stacked in one file.  Its errors propagate and nothing is cached.
        """
        entry = self.entry_path(content_key or self.content_key(path), settings)
        cached = self._load(entry)
        if cached is not None:
            return cached
        arrays = [np.asarray(a) for a in decode_fn(path, settings)]
        if not arrays:
            return []  # nothing to cache
        self._write(entry, np.stack(arrays))
        loaded = self._load(entry)
        return loaded if loaded is not None else arrays

    @staticmethod
    def _load(entry: Path) -> list[np.ndarray] | None:
        try:
            stacked = np.load(entry, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError):
            # Unreadable entry (disk trouble, foreign file): drop it, decode again.
            entry.unlink(missing_ok=True)
            return None
        return [stacked[i] for i in range(stacked.shape[0])]

    @staticmethod
    def _write(entry: Path, array: np.ndarray) -> None:
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{entry.stem}.", suffix=".tmp", dir=entry.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, array, allow_pickle=False)
            os.replace(tmp, entry)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
