"""Deciding quickly whether pretrained weights can be downloaded, for every plugin's loaders.

Hub clients retry for most of a minute before giving up offline; a loader calls
``unreachable(url)`` first and fails at once with a message that says how to get the weights.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.parse
import urllib.request

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
