"""The public contract: what tlcore exports, the registry listing, and tasks checked at load time with
messages addressed to the plugin's author."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import tlcore
from helpers import install_distribution

ROOT = Path(__file__).resolve().parents[2]

TASK_TEMPLATE = '''
import torch
from torch.utils.data import TensorDataset
from tlcore import ClassificationTask, DataBundle, Section, hookimpl

class Options(Section):
{fields}

class Blobs(ClassificationTask):
    name = "blobs"
    DataOptions = Options
    recipe = {recipe}

    def build_data(self, job, context, *, for_training=True):
        root = self.data_root(job)
        x = torch.randn(12, 8)
        y = torch.arange(12) % 2
        part = TensorDataset(x, y)
        return DataBundle(train=part, val=part, test=part, num_outputs=2, class_names=["a", "b"])

{extra}

@hookimpl
def register_tasks(register):
    register(Blobs())
'''
GOOD_RECIPE = {"model": {"backbone": "toy-mlp", "init": "none", "metrics": ["accuracy"]},
               "train": {"epochs": 1, "batch_size": 4}}


def install_task(site_dir, monkeypatch, fields="    path: str | None = None", recipe=GOOD_RECIPE, extra=""):
    source = TASK_TEMPLATE.format(fields=fields, recipe=recipe, extra=extra)
    install_distribution(site_dir, "tlapp-blobs", {"blobs_plugin": source}, {"blobs": "blobs_plugin"})
    from helpers import TEST_PLUGINS

    install_distribution(site_dir, "tlapp-toy", {"tlapp_toy": TEST_PLUGINS / "tlapp_toy.py"}, {"toy": "tlapp_toy"})
    monkeypatch.setenv("TLAPP_PLUGINS", "toy,blobs")


def test_every_type_the_hooks_promise_is_exported():
    for name in ("Run", "Registry", "Catalog", "DataBundle", "TransferModel", "BackboneHeadModel", "Method",
                 "Strategy", "Task", "Context", "ParameterGroup", "Backbone", "Entry"):
        assert name in tlcore.__all__ and hasattr(tlcore, name), name
    promised = set(re.findall(r"``tlcore\.(\w+)``", (ROOT / "tlcore" / "hookspecs.py").read_text()))
    assert promised and promised <= set(tlcore.__all__), promised - set(tlcore.__all__)


def test_registry_lists_by_kind_and_pattern(toy_plugin):
    from tlcore.plugins import load_plugins

    registry = load_plugins().registry
    assert registry.list("backbones") == ["toy-mlp"]
    assert registry.list("heads", "*l*") == ["linear", "mlp"]
    assert "finetune" in registry.list("strategies")
    assert registry.list("methods") == ["coral", "dann", "distill", "fixmatch", "pseudo-label", "simclr", "supervised",
                                        "toy-align"]
    with pytest.raises(tlcore.TlappError, match="did you mean 'heads'"):
        registry.list("head")


def test_a_good_minimal_task_loads_and_trains(site_dir, monkeypatch, tlapp):
    install_task(site_dir, monkeypatch)
    Path("data").mkdir()
    code, _, err = tlapp("run", "--plugin", "blobs", "--data", "data", "--output", "r")
    assert code == 0, err


def test_task_options_without_path_break_the_plugin_at_load_time(site_dir, monkeypatch, tlapp):
    install_task(site_dir, monkeypatch, fields="    n: int = 3")
    code, out, _ = tlapp("plugins", "--json")
    blobs = {p["name"]: p for p in json.loads(out)}["blobs"]
    assert blobs["status"] == "broken"
    assert "no `path` field" in blobs["error"] and "path: str | None = None" in blobs["error"]
    code, _, err = tlapp("run", "--plugin", "blobs", "--output", "r")
    assert code == 2 and "no `path` field" in err and "unknown key" not in err


def test_a_recipe_missing_a_required_key_breaks_the_plugin_at_load_time(site_dir, monkeypatch, tlapp):
    install_task(site_dir, monkeypatch, recipe={"train": {"epochs": 1}})
    code, out, _ = tlapp("plugins", "--json")
    blobs = {p["name"]: p for p in json.loads(out)}["blobs"]
    assert blobs["status"] == "broken" and "recipe" in blobs["error"] and "model.backbone" in blobs["error"]


def test_a_task_without_sample_data_asks_for_data(site_dir, monkeypatch, tlapp):
    install_task(site_dir, monkeypatch)
    code, _, err = tlapp("run", "--plugin", "blobs", "--output", "r")
    assert code == 2 and "has no bundled sample data" in err and "--data PATH" in err
    assert "None" not in err


def test_a_model_that_is_not_a_transfer_model_is_named(site_dir, monkeypatch, tlapp):
    extra = '''
class Bare(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(8, 2)

def _bare(self, job, num_outputs, context):
    return Bare()

Blobs.build_model = _bare
'''
    install_task(site_dir, monkeypatch, extra=extra)
    Path("data").mkdir()
    code, _, err = tlapp("run", "--plugin", "blobs", "--data", "data", "--output", "r")
    assert code == 2 and "is not a tlcore.TransferModel" in err and "parameter_groups()" in err
