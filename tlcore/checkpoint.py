"""Checkpoints written atomically and read back with ``weights_only=True``.

A checkpoint holds everything ``--resume`` needs to continue exactly: model,
optimizer, scheduler, scaler, epoch and step, strategy phase, RNG states, the
sampler seed and the early-stopping state.
"""

from __future__ import annotations

import errno
import os
import pickle
import random
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from .errors import TlappError

FORMAT = "tlapp-checkpoint-1"


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Have ``write`` fill a temporary file beside ``path``, flush it to disk, then rename it over ``path``:
    ``path`` is the old or the new content, never half of one. A failed write (disk full, read-only, no
    permission) is a TlappError naming ``path``, and leaves the old content and no temporary file."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise write_error(path, exc) from None
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def write_error(path: Path, exc: OSError) -> TlappError:
    """The message for a file tlapp could not write, with the fix its cause calls for."""
    fixes = {
        errno.ENOSPC: f"free disk space on the drive holding {path.parent}, or write the output elsewhere",
        errno.EDQUOT: f"free space within your disk quota for {path.parent}, or write the output elsewhere",
        errno.EROFS: f"{path.parent} is on a read-only file system: write the output elsewhere",
        errno.EACCES: f"check the permissions of {path.parent}, or write the output elsewhere",
        errno.EPERM: f"check the permissions of {path.parent}, or write the output elsewhere",
    }
    fix = fixes.get(exc.errno or 0, f"check that {path.parent} is a writable folder with free space")
    return TlappError(f"cannot write {path}: {exc.strerror or exc}", where=str(path), fix=fix)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def save(path: Path, state: dict[str, Any]) -> None:
    """A checkpoint, written atomically (:func:`atomic_write`)."""
    atomic_write(path, lambda f: torch.save({"format": FORMAT, **state}, f))


def load(path: Path, *, what: str = "weights file", where: str | None = None, fix: str | None = None,
         mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint or weight file safely (tensors and plain containers only), or fail with one message.

    ``what`` names the file in that message (``weights file``, ``checkpoint``); ``where`` and ``fix`` default
    to the path and to how to save a loadable file. ``mmap`` maps tensors instead of reading them, for
    callers that only look at the plain entries.
    """
    path = Path(path)
    if not path.exists():
        raise TlappError(f"{what} not found: {path}", where=where or str(path),
                         fix=fix or "check the path or run directory")
    if path.is_dir():
        problem = "it is a directory, not a file"
    elif path.stat().st_size == 0:
        problem = "the file is empty (0 bytes), e.g. left by a copy or save that did not finish"
    else:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except Exception as exc:  # torch raises KeyError, EOFError, RuntimeError... on files not its own
            problem = _load_problem(exc)
    raise TlappError(f"cannot load {what} {path}: {problem}", where=where or str(path),
                     fix=fix or "pass a state dict or tlapp checkpoint written with torch.save (e.g. "
                                "torch.save(model.state_dict(), PATH)); files holding other Python objects are "
                                "refused, because unpickling them could run code from the file")


def _load_problem(exc: Exception) -> str:
    """Why torch could not read a file, in words that never suggest loading it unsafely."""
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) and "WeightsUnpickler error" in text:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if found:
            return (f"it holds a Python object of type {found.group(1)}, not only tensors and plain containers, "
                    "and loading that could run code from the file")
        return "it is not a PyTorch weights file (or it is corrupt, or holds objects other than tensors)"
    if isinstance(exc, PermissionError):
        return "permission denied"
    # The first line of torch's message, unless it is one of its long hints; never its unsafe-loading advice.
    first = re.split(r"(?<=\.)\s", text.strip().splitlines()[0])[0] if text.strip() else ""
    if "weights_only" in first or len(first) > 160:
        first = ""
    detail = f" ({type(exc).__name__}{': ' + first if first else ''})"
    return f"it is not a PyTorch weights file, or it is truncated or corrupt{detail}"


def is_checkpoint(obj: Any) -> bool:
    """A dict written by ``save`` whose ``model`` entry is a state dict."""
    return isinstance(obj, dict) and obj.get("format") == FORMAT and isinstance(obj.get("model"), dict)


def rng_state() -> dict[str, Any]:
    np_state: Any = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# The names ``tempfile.mkstemp(prefix=f".{name}.")`` gives in atomic_write: a dot, the target's
# name, a dot and eight random characters.
_PARTIAL_WRITE = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}")


def remove_partial_writes(folder: Path) -> list[Path]:
    """Delete the temporary files that writes killed before their rename left in ``folder``; return them.

    Only a process that died mid-write leaves one (a write that fails otherwise removes its own), so at the
    start of a run nothing still writes them. The target files themselves are never touched.
    """
    removed = []
    for path in sorted(folder.glob(".*")) if folder.is_dir() else []:
        if path.is_file() and _PARTIAL_WRITE.fullmatch(path.name):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
