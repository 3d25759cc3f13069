"""Helpers shared by the test modules (imported as ``helpers``; conftest modules are per folder)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class BadInput:
    """One row of the bad-input table: what the user does, and what the one message must say.

    ``args`` builds whatever files the case needs under the test's folder and returns the CLI arguments;
    ``says`` are fragments (case-insensitive) the message must contain, naming what is wrong and where.
    """

    id: str
    args: Callable[[Path], list[str]]
    says: tuple[str, ...]
    code: int = 2


def check_bad_input(tlapp, tmp_path: Path, row: BadInput) -> str:
    """Run the row's command; assert exit code, one ``error:`` message with a fix, and no traceback."""
    code, out, err = tlapp(*row.args(tmp_path))
    assert code == row.code, f"{row.id}: exit {code}, expected {row.code}\nstdout: {out[-2000:]}\nstderr: {err[-2000:]}"
    assert "Traceback" not in err + out, f"{row.id}: traceback shown\n{err}"
    assert "weights_only" not in err, f"{row.id}: torch's unsafe-loading hint leaked\n{err}"
    assert err.count("error:") == 1, f"{row.id}: expected one error message\n{err}"
    message = err[err.index("error:"):]
    assert "fix:" in message, f"{row.id}: the message says no fix\n{message}"
    for fragment in row.says:
        assert fragment.lower() in message.lower(), f"{row.id}: {fragment!r} not in\n{message}"
    return message


def registered_pipelines(plugin: str) -> dict[str, Callable]:
    """Every augmentation pipeline ``plugin`` registers (name -> factory), so that a new one is checked too."""
    from tlcore.plugins import load_plugins

    registry = load_plugins(plugin).registry
    found = {name: entry.factory for name, entry in registry.augmentations.items() if entry.plugin == plugin}
    assert found, f"plugin {plugin!r} registers no augmentation pipeline"
    return found


def cli_exit_code(*args: str) -> int:
    """``tlapp ARGS`` in this process, for module-scoped fixtures (the ``tlapp`` fixture is per test): its exit
    code."""
    from tlcore.cli import main

    try:
        main(list(args))
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


def interrupted_and_resumed(tlapp, monkeypatch, args: tuple[str, ...], after: int = 1) -> tuple[dict, dict]:
    """Run the toy job ``args`` straight into ``straight/``, and interrupted after epoch ``after`` then resumed
    into ``broken/``; both runs' ``last.pt`` checkpoints, to compare."""
    import torch

    assert tlapp(*args, "--output", "straight")[0] == 0
    monkeypatch.setenv("TLAPP_TOY_INTERRUPT_AFTER", str(after))
    assert tlapp(*args, "--output", "broken")[0] == 130
    monkeypatch.delenv("TLAPP_TOY_INTERRUPT_AFTER")
    code, _, err = tlapp(*args, "--output", "broken", "--resume")
    assert code == 0, err
    return (torch.load("straight/checkpoints/last.pt", weights_only=True),
            torch.load("broken/checkpoints/last.pt", weights_only=True))
