"""The shared download probe: quick answers online and offline, offline flags honoured."""

from __future__ import annotations

import socket
import time

import pytest

from tlcore import downloads, unreachable


@pytest.fixture(autouse=True)
def no_flags(monkeypatch):
    for flag in downloads.OFFLINE_FLAGS:
        monkeypatch.delenv(flag, raising=False)
    monkeypatch.delenv("http_proxy", raising=False)
    monkeypatch.delenv("HTTP_PROXY", raising=False)


def test_open_port_is_reachable_and_closed_port_answers_quickly():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert unreachable(f"http://127.0.0.1:{port}/x", timeout=2) is None
    start = time.monotonic()
    reason = unreachable(f"http://127.0.0.1:{port}/x", timeout=2)
    assert reason and "cannot reach 127.0.0.1" in reason
    assert time.monotonic() - start < 3


@pytest.mark.parametrize("flag", downloads.OFFLINE_FLAGS)
def test_offline_flags_answer_without_a_connection(flag, monkeypatch):
    monkeypatch.setenv(flag, "1")
    monkeypatch.setattr(downloads.socket, "create_connection", lambda *a, **k: pytest.fail("connected"))
    assert unreachable("https://example.invalid/x") == f"downloads are switched off ({flag}=1)"
    monkeypatch.setenv(flag, "0")
    assert downloads.offline_flag() is None
