"""Plugin discovery through real entry points, contract checks, isolation of broken plugins."""

from __future__ import annotations

import json

from helpers import TEST_PLUGINS, install_distribution
from tlcore.plugins import load_plugins

BROKEN_IMPORT = "import nonexistent_module_for_tlapp_tests\n"
UNKNOWN_HOOK = '''
from tlcore import hookimpl

@hookimpl
def register_widgets(register):
    register("w")
'''
RAISES_IN_HOOK = '''
from tlcore import hookimpl

@hookimpl
def register_heads(register):
    register("half", lambda d, n: None, "registered before the failure")
    raise RuntimeError("head table corrupted")
'''
WRONG_ARGUMENT = '''
from tlcore import hookimpl

@hookimpl
def register_heads(register, extra):
    pass
'''


def test_entry_point_discovery_lists_distribution_metadata(toy_plugin, tlapp):
    code, out, _ = tlapp("plugins", "--json")
    assert code == 0
    by_name = {p["name"]: p for p in json.loads(out)}
    toy = by_name["toy"]
    assert toy["status"] == "ok" and toy["package"] == "tlapp-toy" and toy["version"] == "0.0.1"
    assert toy["provides"] == {"tasks": ["vectors"], "backbones": ["toy-mlp"], "heads": ["toy-head"],
                              "augmentations": ["toy-noise"]}
    assert by_name["tlcore"]["status"] == "ok"
    assert "finetune" in by_name["tlcore"]["provides"]["strategies"]


def test_builtin_plugins_load_through_entry_points(monkeypatch):
    monkeypatch.delenv("TLAPP_PLUGINS", raising=False)
    plugins = load_plugins()
    for name in ("vision", "medical"):
        info = plugins.infos[name]
        assert info.status == "ok", info.error
        assert info.package == "tlapp"


def test_tlapp_plugins_env_restricts_loading(toy_plugin, monkeypatch):
    monkeypatch.setenv("TLAPP_PLUGINS", "toy")
    assert set(load_plugins().infos) == {"tlcore", "toy"}
    monkeypatch.setenv("TLAPP_PLUGINS", "vision")
    assert "toy" not in load_plugins().infos


def test_broken_plugins_are_reported_and_the_others_keep_working(site_dir, monkeypatch, tlapp):
    install_distribution(site_dir, "tlapp-toy", {"tlapp_toy": TEST_PLUGINS / "tlapp_toy.py"}, {"toy": "tlapp_toy"})
    install_distribution(site_dir, "tlapp-bad-import", {"bad_import": BROKEN_IMPORT}, {"badimport": "bad_import"})
    install_distribution(site_dir, "tlapp-unknown", {"unknown_hook": UNKNOWN_HOOK}, {"unknownhook": "unknown_hook"})
    install_distribution(site_dir, "tlapp-raises", {"raises_hook": RAISES_IN_HOOK}, {"raises": "raises_hook"})
    install_distribution(site_dir, "tlapp-wrongarg", {"wrong_arg": WRONG_ARGUMENT}, {"wrongarg": "wrong_arg"})
    monkeypatch.setenv("TLAPP_PLUGINS", "toy,badimport,unknownhook,raises,wrongarg")

    plugins = load_plugins()
    infos = plugins.infos
    assert infos["badimport"].status == "broken"
    assert "nonexistent_module_for_tlapp_tests" in infos["badimport"].error
    assert infos["unknownhook"].status == "broken"
    assert "register_widgets" in infos["unknownhook"].error
    assert infos["raises"].status == "broken" and "head table corrupted" in infos["raises"].error
    assert "half" not in plugins.registry.heads  # nothing half-registered survives
    assert infos["wrongarg"].status == "broken" and "extra" in infos["wrongarg"].error
    assert infos["toy"].status == "ok"

    code, out, _ = tlapp("plugins")
    assert code == 0 and "BROKEN" in out and "unknownhook" in out
    code, _, err = tlapp("run", "--plugin", "toy", "--epochs", "1", "--output", "r")
    assert code == 0, err
    code, _, err = tlapp("run", "--plugin", "raises", "--epochs", "1")
    assert code == 2 and "broken" in err and "head table corrupted" in err


def test_duplicate_names_break_the_later_plugin(site_dir, monkeypatch):
    install_distribution(site_dir, "tlapp-toy", {"tlapp_toy": TEST_PLUGINS / "tlapp_toy.py"}, {"toy": "tlapp_toy"})
    dup = 'from tlcore import hookimpl\n\n@hookimpl\ndef register_heads(register):\n    register("linear", print)\n'
    install_distribution(site_dir, "tlapp-dup", {"dup_heads": dup}, {"dup": "dup_heads"})
    monkeypatch.setenv("TLAPP_PLUGINS", "toy,dup")
    plugins = load_plugins()
    assert plugins.infos["dup"].status == "broken" and "already registered" in plugins.infos["dup"].error
    assert plugins.registry.heads["linear"].plugin == "tlcore"
