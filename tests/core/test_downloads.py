"""The shared download probe: quick answers online and offline, offline flags honoured."""

from __future__ import annotations

import socket
import time

import pytest

from tlcore import TlappError, downloads, unreachable


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


# --- fetch_pretrained: cache, then probe, then download ------------------------------------------

def _must_not_run(*args, **kwargs):
    pytest.fail("called although the cached copy, or the probe, should have answered")


def test_the_cached_copy_is_used_without_probing_or_downloading(monkeypatch):
    monkeypatch.setattr(downloads, "unreachable", _must_not_run)
    got = downloads.fetch_pretrained("the weights of x", "https://example.invalid/x.pth",
                                     cached=lambda: {"w": 1}, download=_must_not_run)
    assert got == {"w": 1}


def test_offline_it_fails_before_downloading_and_says_how_to_get_the_weights(monkeypatch):
    monkeypatch.setenv("TLAPP_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(TlappError) as info:
        downloads.fetch_pretrained("the weights of x", "https://example.invalid/x.pth", cached=lambda: None,
                                   download=_must_not_run, caches=("huggingface", "torch hub"),
                                   otherwise="use --init none")
    assert time.monotonic() - start < 1
    error = info.value
    assert error.what == "cannot get the weights of x: downloads are switched off (TLAPP_OFFLINE=1)"
    assert error.where == "https://example.invalid/x.pth"
    assert "run once with network access" in error.fix and "Hugging Face cache" in error.fix
    assert "torch hub cache" in error.fix and error.fix.endswith("Or use --init none")


def test_a_failed_download_is_a_tlapp_error_with_its_cause(monkeypatch):
    monkeypatch.setattr(downloads, "unreachable", lambda url: None)

    def broken():
        raise ConnectionError("connection reset\nmore detail")

    with pytest.raises(TlappError) as info:
        downloads.fetch_pretrained("the weights of x", "https://example.invalid/x.pth", cached=lambda: None,
                                   download=broken, where="backbone 'x'")
    assert info.value.what == "cannot get the weights of x: ConnectionError: connection reset"
    assert isinstance(info.value.__cause__, ConnectionError) and info.value.where == "backbone 'x'"

    def refuses():
        raise TlappError("the download is not a state dict")

    with pytest.raises(TlappError, match="^the download is not a state dict"):
        downloads.fetch_pretrained("the weights of x", "https://example.invalid/x.pth", cached=lambda: None,
                                   download=refuses)


def test_an_unreadable_cached_copy_says_to_delete_it(monkeypatch):
    def corrupt():
        raise RuntimeError("PytorchStreamReader failed reading zip archive")

    with pytest.raises(TlappError, match="cannot read the cached copy of the weights of x") as info:
        downloads.fetch_pretrained("the weights of x", "https://example.invalid/x.pth", cached=corrupt,
                                   download=_must_not_run)
    assert "delete the cached file" in info.value.fix


def test_state_dicts_come_from_the_torch_hub_cache(monkeypatch, tmp_path):
    import torch

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = "https://download.example.invalid/models/tiny-0123abcd.pth"
    path = downloads.torch_hub_checkpoint(url)
    assert path == tmp_path / "hub" / "checkpoints" / "tiny-0123abcd.pth"
    path.parent.mkdir(parents=True)
    torch.save({"w": torch.ones(2)}, path)
    monkeypatch.setattr(downloads, "unreachable", _must_not_run)
    assert torch.equal(downloads.fetch_state_dict(url, "the weights of tiny")["w"], torch.ones(2))

    path.unlink()
    monkeypatch.setenv("TORCH_HUB_OFFLINE", "1")
    monkeypatch.setattr(downloads, "unreachable", unreachable)
    monkeypatch.setattr(downloads.torch.hub, "load_state_dict_from_url", _must_not_run)
    with pytest.raises(TlappError, match="downloads are switched off") as info:
        downloads.fetch_state_dict(url, "the weights of tiny", otherwise="use --init none")
    assert str(tmp_path / "hub" / "checkpoints") in info.value.fix


def test_huggingface_url_follows_the_configured_endpoint(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "https://mirror.example/")
    assert downloads.huggingface_url() == "https://mirror.example"
    assert downloads.huggingface_url("org/model") == "https://mirror.example/org/model"
