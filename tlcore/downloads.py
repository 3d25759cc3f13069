"""Pretrained weights for every plugin's loaders: the cached copy, else a download that fails fast offline.

Hub clients retry for most of a minute before giving up offline; ``fetch_pretrained`` asks
``unreachable(url)`` before downloading and fails at once with a message that says how to get the weights.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TypeVar
from collections.abc import Callable, Sequence

import torch

from .errors import TlappError

T = TypeVar("T")

OFFLINE_FLAGS = ("TLAPP_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TORCH_HUB_OFFLINE")
PROBE_TIMEOUT_S = 3.0


def offline_flag() -> str | None:
    """The environment variable that forbids downloads, if one is set to a true value."""
    for flag in OFFLINE_FLAGS:
        if (os.environ.get(flag) or "").strip().lower() in ("1", "true", "yes", "on"):
            return flag
    return None


def unreachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when ``url`` can be downloaded from (its server, or its proxy, answers a TCP connection
    within ``timeout``); otherwise the reason, e.g. an offline flag or the connection error.

    The connection runs in a daemon thread so that a stuck name lookup cannot hold the caller longer.
    """
    flag = offline_flag()
    if flag:
        return f"downloads are switched off ({flag}={os.environ[flag]})"
    parts = urllib.parse.urlsplit(url)
    host, port, via = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80), ""
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        p = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port, via = p.hostname or "", p.port or (443 if p.scheme == "https" else 80), " (proxy)"
    result: dict[str, object] = {}

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result["ok"] = True
        except OSError as exc:
            result["error"] = exc

    thread = threading.Thread(target=connect, name="tlapp-download-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if result.get("ok"):
        return None
    if "error" in result:
        return f"offline? cannot reach {host}:{port}{via}: {result['error']}"
    return f"offline? no answer from {host}:{port}{via} within {timeout:g} s"


def torch_hub_checkpoint(url: str) -> Path:
    """Where ``torch.hub`` keeps the file downloaded from ``url`` (whether or not it is there yet)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urllib.parse.urlsplit(url).path)


def huggingface_url(repo_id: str = "") -> str:
    """The Hugging Face hub's address (``HF_ENDPOINT`` honoured), or that of the repository ``repo_id``."""
    try:
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT.rstrip("/")
    except Exception:  # noqa: BLE001 - without the client, its default address
        endpoint = "https://huggingface.co"
    return f"{endpoint}/{repo_id}" if repo_id else endpoint


def cache_locations(caches: Sequence[str]) -> str:
    """``caches`` ("huggingface", "torch hub") named with their folders, for messages."""
    places = []
    for cache in caches:
        if cache == "huggingface":
            try:
                from huggingface_hub import constants

                folder = constants.HF_HUB_CACHE
            except Exception:  # noqa: BLE001
                folder = "~/.cache/huggingface/hub"
            places.append(f"Hugging Face cache {folder}")
        elif cache == "torch hub":
            places.append(f"torch hub cache {Path(torch.hub.get_dir()) / 'checkpoints'}")
        else:
            raise ValueError(f"unknown cache {cache!r}: use 'huggingface' or 'torch hub'")
    return ", ".join(places)


def fetch_pretrained(what: str, url: str, *, cached: Callable[[], T | None], download: Callable[[], T],
                     caches: Sequence[str] = ("torch hub",), otherwise: str = "", where: str | None = None) -> T:
    """``what`` (e.g. "the ImageNet weights of backbone 'resnet18'"): the cached copy, else downloaded from ``url``.

    ``cached()`` returns the cached copy, or None when there is none; ``download()`` fetches it
    (and caches it for later, offline, runs). Before downloading, ``unreachable(url)`` is asked, so
    offline, or with an offline flag set, this fails within seconds. Every failure is a ``TlappError``
    whose fix says how to get the weights: once online into ``caches``, or ``otherwise`` (the
    plugin's offline alternatives). ``where`` replaces ``url`` as the place named in the error.
    """
    try:
        found = cached()
    except TlappError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the reader raises, the cached copy is unusable
        raise TlappError(f"cannot read the cached copy of {what}: {_one_line(exc)}",
                         where=f"{where or url}, cached in the {cache_locations(caches)}",
                         fix="delete the cached file so that the next run with network access downloads it again"
                         ) from exc
    if found is not None:
        return found
    reason = unreachable(url)
    if reason:
        raise _unavailable(what, reason, where or url, caches, otherwise)
    try:
        return download()
    except TlappError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the hub client raises, the weights are unavailable
        raise _unavailable(what, _one_line(exc), where or url, caches, otherwise) from exc


def fetch_state_dict(url: str, what: str, *, otherwise: str = "", where: str | None = None) -> dict[str, torch.Tensor]:
    """The state dict published at ``url`` (torchvision's weights, for one) through the torch hub cache."""
    path = torch_hub_checkpoint(url)

    def cached() -> dict[str, torch.Tensor] | None:
        return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None

    def download() -> dict[str, torch.Tensor]:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=True, check_hash=True,
                                                  weights_only=True)

    return fetch_pretrained(what, url, cached=cached, download=download, caches=("torch hub",),
                            otherwise=otherwise, where=where)


def _unavailable(what: str, reason: str, where: str, caches: Sequence[str], otherwise: str) -> TlappError:
    fix = (f"run once with network access so that they are downloaded into the {cache_locations(caches)}; "
           f"later runs use the cached copy offline")
    return TlappError(f"cannot get {what}: {reason}", where=where, fix=f"{fix}. Or {otherwise}" if otherwise else fix)


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:300] if lines else ''}".rstrip(": ")
