"""Helpers shared by the test modules (imported as ``helpers``; conftest modules are per folder)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

TEST_PLUGINS = Path(__file__).parent / "plugins_for_tests"


def install_distribution(site: Path, dist_name: str, modules: dict[str, str | Path], entry_points: dict[str, str],
                         version: str = "0.0.1", extras: dict[str, list[str]] | None = None) -> None:
    """Write modules plus a ``.dist-info`` with ``entry_points.txt`` into ``site``: an installed
    distribution as importlib.metadata sees it, the way pip leaves one. ``extras`` ({extra: [requirement]})
    become ``Provides-Extra`` and ``Requires-Dist: REQ; extra == "EXTRA"`` lines of its METADATA."""
    site.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        target = site / f"{module}.py"
        if isinstance(source, Path):
            shutil.copy(source, target)
        else:
            target.write_text(source)
    info = site / f"{dist_name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    metadata = f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: {version}\n"
    for extra, requirements in (extras or {}).items():
        metadata += f"Provides-Extra: {extra}\n" + "".join(f'Requires-Dist: {r}; extra == "{extra}"\n'
                                                         for r in requirements)
    (info / "METADATA").write_text(metadata)
    lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[tlapp.plugins]\n{lines}\n")


def read_metrics(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "metrics.json").read_text())
