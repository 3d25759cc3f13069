"""Every hook in the contract is documented, has an example, and is exercised by a test plugin."""

from __future__ import annotations

import inspect
import re
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


# an @hookimpl function, as code or as plugin source a test writes (a string, maybe with "\\n" escapes)
IMPLEMENTATION = re.compile(r"@hookimpl(?:\([^)]*\))?(?:\s|\\n)+def\s+(\w+)\s*\(")


def sources_of_tests() -> dict[str, str]:
    """Every test module and test plugin but this file. Neither tlcore/hookspecs.py, whose docstring
    examples implement hooks, nor this file's synthetic inputs count as tests."""
    here = Path(__file__).resolve()
    return {p.relative_to(ROOT).as_posix(): p.read_text() for p in sorted((ROOT / "tests").rglob("*.py"))
            if p.resolve() != here}


def untested_hooks(hooks: list[str], sources: dict[str, str]) -> list[str]:
    """Hooks that no test implements: no ``@hookimpl def HOOK(`` in a test plugin or in a test's plugin source."""
    implemented = {name for text in sources.values() for name in IMPLEMENTATION.findall(text)}
    return [name for name in hooks if name not in implemented]


def undocumented_hooks(hooks: list[str], guide: str) -> list[str]:
    """Hooks the plugin guide does not name as code (`` `HOOK(...)` `` or `` `HOOK` ``)."""
    return [name for name in hooks if not re.search(rf"`{name}[`(]", guide)]


def test_every_hook_is_documented_with_an_example():
    for name in HOOKS:
        doc = getattr(hookspecs, name).__doc__ or ""
        assert "Example" in doc, f"{name} has no example in its docstring"
    assert undocumented_hooks(HOOKS, (ROOT / "docs" / "plugins.md").read_text()) == [], "not in docs/plugins.md"


def test_every_hook_is_exercised_by_a_test():
    sources = sources_of_tests()
    assert "tests/plugins_for_tests/tlapp_toy.py" in sources and not any(p.startswith("tlcore/") for p in sources)
    assert untested_hooks(HOOKS, sources) == [], "no test installs a plugin implementing these hooks"


def test_the_coverage_checks_fail_for_an_untested_or_undocumented_hook():
    sources = {
        "tests/plugins_for_tests/p.py": "@hookimpl(tryfirst=True)\ndef on_run_end(run, metrics):\n    pass\n",
        "tests/core/test_x.py": ('SOURCE = "from tlcore import hookimpl\\n\\n@hookimpl\\ndef register_heads(r):\\n"\n'
                                 "# register_tasks is only mentioned here, and this is no hookimpl:\n"
                                 "def register_metrics(register):\n    pass\n"),
    }
    hooks = ["register_heads", "on_run_end", "register_tasks", "register_metrics"]
    assert untested_hooks(hooks, sources) == ["register_tasks", "register_metrics"]
    assert untested_hooks(hooks, {}) == hooks
    guide = "| `register_heads(register)` | ... |\nthen `on_run_end` is called; register_tasks unquoted\n"
    assert undocumented_hooks(hooks, guide) == ["register_tasks", "register_metrics"]


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
