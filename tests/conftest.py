"""Shared fixtures: installing test plugins as real distributions, running the CLI in-process."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
TEST_PLUGINS = HERE / "plugins_for_tests"


def install_distribution(site: Path, dist_name: str, modules: dict[str, str | Path], entry_points: dict[str, str],
                         version: str = "0.0.1") -> None:
    """Write modules plus a ``.dist-info`` with ``entry_points.txt`` into ``site``: an installed
    distribution as importlib.metadata sees it, the way pip leaves one."""
    site.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        target = site / f"{module}.py"
        if isinstance(source, Path):
            shutil.copy(source, target)
        else:
            target.write_text(source)
    info = site / f"{dist_name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: {version}\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[tlapp.plugins]\n{lines}\n")


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


def read_metrics(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "metrics.json").read_text())
