"""Shared fixtures: installing test plugins as real distributions, running the CLI in-process."""

from __future__ import annotations

import sys

import pytest
import torch

from helpers import TEST_PLUGINS, install_distribution


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Small CPU batches run faster on one thread, and far faster when other jobs share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def site_dir(tmp_path, monkeypatch):
    """A fresh folder on sys.path for test distributions; modules imported from it are forgotten after."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    before = set(sys.modules)
    yield site
    for name in set(sys.modules) - before:
        if getattr(sys.modules[name], "__file__", "") and str(site) in (sys.modules[name].__file__ or ""):
            del sys.modules[name]


@pytest.fixture
def toy_plugin(site_dir, monkeypatch):
    """The toy plugin installed as the distribution ``tlapp-toy`` with entry point ``toy``."""
    install_distribution(site_dir, "tlapp-toy", {"tlapp_toy": TEST_PLUGINS / "tlapp_toy.py"}, {"toy": "tlapp_toy"})
    monkeypatch.setenv("TLAPP_PLUGINS", "toy")
    return site_dir


@pytest.fixture
def tlapp(capsys, monkeypatch, tmp_path):
    """Run the tlapp CLI in-process: returns (exit code, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)
    from tlcore.cli import main

    def invoke(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err

    return invoke
