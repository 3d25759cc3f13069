"""Every hook in the contract is documented, has an example, and is exercised by a test plugin."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

from helpers import TEST_PLUGINS, install_distribution
from tlcore import hookspecs

ROOT = Path(__file__).resolve().parents[2]
HOOKS = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
         if hasattr(fn, "tlapp_spec")]


def test_contract_has_the_promised_hooks():
    assert set(HOOKS) >= {"register_tasks", "register_dataset_formats", "register_backbones", "register_heads",
                          "register_augmentations", "register_metrics", "register_strategies",
                          "on_run_start", "on_epoch_end", "on_run_end"}


def test_every_hook_is_documented_with_an_example():
    guide = (ROOT / "docs" / "plugins.md").read_text()
    for name in HOOKS:
        doc = getattr(hookspecs, name).__doc__ or ""
        assert "Example" in doc, f"{name} has no example in its docstring"
        assert f"`{name}" in guide, f"{name} is not in docs/plugins.md"


def test_every_hook_has_an_implementation_under_test():
    sources = [p.read_text() for p in (ROOT / "tlcore").glob("*.py")]
    sources += [p.read_text() for p in (ROOT / "plugins").glob("*/plugin.py")]
    sources += [p.read_text() for p in TEST_PLUGINS.glob("*.py")]
    for name in HOOKS:
        assert any(f"def {name}(" in s and "@hookimpl" in s for s in sources), f"no implementation of {name}"


def test_lifecycle_hooks_fire_in_order(site_dir, monkeypatch, tlapp):
    install_distribution(site_dir, "tlapp-toy", {"tlapp_toy": TEST_PLUGINS / "tlapp_toy.py"}, {"toy": "tlapp_toy"})
    install_distribution(site_dir, "tlapp-recorder", {"tlapp_recorder": TEST_PLUGINS / "tlapp_recorder.py"},
                         {"recorder": "tlapp_recorder"})
    monkeypatch.setenv("TLAPP_PLUGINS", "toy,recorder")
    code, _, err = tlapp("run", "--plugin", "toy", "--epochs", "2", "--output", "r")
    assert code == 0, err
    events = sys.modules["tlapp_recorder"].EVENTS
    assert events[0] == ("start", "toy", True, "r")
    assert [e[1] for e in events if e[0] == "epoch"] == [1, 2]
    assert {"train_loss", "val", "samples_per_second"} <= set(events[1][2])
    assert events[-1] == ("end", "completed", True)
    assert Path("r/recorder-report.txt").read_text() == "4 events\n"


def test_custom_head_from_a_plugin_is_used(toy_plugin, tlapp):
    code, _, err = tlapp("run", "--plugin", "toy", "--epochs", "1", "--output", "r", "--set", "model.head=toy-head")
    assert code == 0, err
    import torch

    state = torch.load("r/checkpoints/best.pt", weights_only=True)["model"]
    assert "head.weight" in state and "head.1.weight" not in state
    code, _, err = tlapp("run", "--plugin", "toy", "--set", "model.head=toy-haed")
    assert code == 2 and "did you mean 'toy-head'" in err
