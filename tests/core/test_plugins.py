"""Plugin discovery through real entry points, contract checks, isolation of broken and unavailable plugins."""

from __future__ import annotations

import json

from helpers import TEST_PLUGINS, install_distribution, read_metrics
from tlcore.plugins import load_plugins

BROKEN_IMPORT = "from tlcore import no_such_name_for_tlapp_tests\n"  # an ImportError, not a missing module
NEEDS_MISSING_MODULE = "import json\nimport nonexistent_module_for_tlapp_tests\n"
CHECKS_MISSING_MODULE = ("from tlcore import require_modules\n\n"
                         "require_modules('json', 'nonexistent_module_for_tlapp_tests')\n")
OWN_MODULE_MISSING = "import own_typo.helpers\n"  # the plugin's own code is wrong: broken, not unavailable
METRIC_AND_FORMAT = '''
from pathlib import Path

from tlcore import hookimpl
from torchmetrics.classification import MulticlassAccuracy


@hookimpl
def register_metrics(register):
    register("balanced_accuracy", lambda num_classes, multilabel, threshold:
             MulticlassAccuracy(num_classes, average="macro"), "mean recall over classes")


@hookimpl
def register_dataset_formats(register):
    register("lines", lambda path, **options: Path(path).read_text().splitlines(), "one sample per line")
'''
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
                              "augmentations": ["toy-noise"], "strategies": ["head-all-head"],
                              "methods": ["toy-align"]}
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
    assert "no_such_name_for_tlapp_tests" in infos["badimport"].error
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


def test_a_plugin_whose_dependency_is_missing_is_unavailable_with_the_install_command(site_dir, monkeypatch, tlapp,
                                                                                      tmp_path):
    install_distribution(site_dir, "tlapp-needy", {"needy_plugin": NEEDS_MISSING_MODULE}, {"needy": "needy_plugin"},
                         extras={"needy": ["nonexistent-module-for-tlapp-tests>=1"], "other": ["numpy"]})
    install_distribution(site_dir, "tlapp-checks", {"checks_plugin": CHECKS_MISSING_MODULE},
                         {"checks": "checks_plugin"})
    install_distribution(site_dir, "tlapp-local", {"local_plugin": NEEDS_MISSING_MODULE}, {"local": "local_plugin"},
                         extras={"local": ["nonexistent-module-for-tlapp-tests"]})
    source = tmp_path / "checkout"
    (site_dir / "tlapp_local-0.0.1.dist-info" / "direct_url.json").write_text(
        json.dumps({"url": source.as_uri(), "dir_info": {"editable": True}}))  # as `pip install -e DIR` leaves it
    install_distribution(site_dir, "tlapp-own", {"own_typo": OWN_MODULE_MISSING}, {"own": "own_typo"})
    install_distribution(site_dir, "tlapp-toy", {"tlapp_toy": TEST_PLUGINS / "tlapp_toy.py"}, {"toy": "tlapp_toy"})
    monkeypatch.setenv("TLAPP_PLUGINS", "needy,checks,local,own,toy")

    code, out, _ = tlapp("plugins", "--json")
    assert code == 0
    by_name = {p["name"]: p for p in json.loads(out)}
    needy = by_name["needy"]
    assert needy["status"] == "unavailable" and needy["provides"] == {}
    assert "nonexistent_module_for_tlapp_tests" in needy["error"]
    assert needy["fix"] == "pip install 'tlapp-needy[needy]'"  # the extra named after the entry point
    assert by_name["checks"]["status"] == "unavailable"  # found by require_modules, nothing imported
    assert by_name["checks"]["fix"] == "pip install nonexistent_module_for_tlapp_tests"  # no such extra: the module
    assert by_name["local"]["fix"] == f"pip install -e '{source}[local]'"
    assert by_name["own"]["status"] == "broken" and by_name["own"]["fix"] is None
    assert by_name["toy"]["status"] == "ok" and by_name["toy"]["fix"] is None

    code, out, _ = tlapp("plugins")
    assert code == 0
    assert "needy 0.0.1 (tlapp-needy): unavailable: " in out and "    fix: pip install 'tlapp-needy[needy]'" in out
    assert "own 0.0.1 (tlapp-own): BROKEN: " in out
    code, _, err = tlapp("run", "--plugin", "needy")
    assert code == 2
    assert "plugin 'needy' is unavailable" in err and "fix:   pip install 'tlapp-needy[needy]'" in err


def test_metrics_and_dataset_formats_from_a_plugin_are_used(toy_plugin, monkeypatch, tlapp, tmp_path):
    install_distribution(toy_plugin, "tlapp-extras", {"extras_plugin": METRIC_AND_FORMAT}, {"extras": "extras_plugin"})
    monkeypatch.setenv("TLAPP_PLUGINS", "toy,extras")
    registry = load_plugins().registry
    (tmp_path / "samples.txt").write_text("a\nb\n")
    lines = registry.dataset_formats["lines"]
    assert lines.plugin == "extras" and lines.factory(tmp_path / "samples.txt") == ["a", "b"]
    code, _, err = tlapp("run", "--plugin", "toy", "--epochs", "1", "--output", "r",
                         "--set", "model.metrics=[accuracy,balanced_accuracy]")
    assert code == 0, err
    metrics = read_metrics(tmp_path / "r")["metrics"]
    assert 0 <= metrics["balanced_accuracy"] <= 1 and "accuracy" in metrics
