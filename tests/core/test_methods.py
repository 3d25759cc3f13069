"""The method seam: extra modules on the device and in the optimizer, extra streams drawn alongside the
training batches, a loss from all of them, exact resume, and clear errors for unknown methods."""

from __future__ import annotations

import sys

import torch

from helpers import interrupted_and_resumed, read_metrics

ALIGN = ("--set", "method.name=toy-align", "--set", "method.weight=0.5")


def test_supervised_is_the_default_method(toy_plugin, tlapp):
    assert tlapp("run", "--plugin", "toy", "--output", "r", "--epochs", "1")[0] == 0
    assert read_metrics("r")["method"] == {"name": "supervised", "section": "method", "options": {}}


def test_a_method_trains_its_extra_module_on_extra_data(toy_plugin, tlapp):
    code, _, err = tlapp("run", "--plugin", "toy", "--output", "r", "--epochs", "2", *ALIGN)
    assert code == 0, err
    toy = sys.modules["tlapp_toy"]  # imported by the run, through its entry point
    m = read_metrics("r")
    assert m["method"] == {"name": "toy-align", "section": "method", "options": {"weight": 0.5}}
    groups = {row["group"]: row for row in m["phases"][0]["groups"]}
    assert groups["critic"]["trainable"] and groups["critic"]["lr"] == groups["head"]["lr"]
    # one unlabelled batch drawn per training batch (training set: 22 vectors in batches of 8)
    assert len(toy.ToyAlign.DRAWN) == 2 * 3 and set(toy.ToyAlign.DRAWN) <= {8, 6}
    last = torch.load("r/checkpoints/last.pt", weights_only=True)
    critic = last["method"]["modules"]["critic"]
    assert set(critic) == {"weight", "bias"} and last["method"]["steps_done"] == 6
    torch.manual_seed(0)
    fresh = torch.nn.Linear(critic["weight"].shape[1], 1)
    assert not torch.equal(fresh.weight, critic["weight"])


def test_the_method_changes_what_trains(toy_plugin, tlapp):
    assert tlapp("run", "--plugin", "toy", "--output", "plain", "--epochs", "1")[0] == 0
    assert tlapp("run", "--plugin", "toy", "--output", "align", "--epochs", "1", *ALIGN)[0] == 0
    a = torch.load("plain/checkpoints/last.pt", weights_only=True)["model"]
    b = torch.load("align/checkpoints/last.pt", weights_only=True)["model"]
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


def test_head_only_phases_do_not_use_the_feature_cache_under_a_method_that_needs_more(toy_plugin, tlapp):
    assert tlapp("run", "--plugin", "toy", "--output", "r", "--epochs", "2", "--strategy", "linear-probe",
                 *ALIGN)[0] == 0
    assert not any(h["feature_cache"] for h in read_metrics("r")["history"])


def test_resume_with_a_method_matches_an_uninterrupted_run(toy_plugin, tlapp, monkeypatch):
    args = ("run", "--plugin", "toy", "--epochs", "3", "--seed", "5", *ALIGN)
    straight, resumed = interrupted_and_resumed(tlapp, monkeypatch, args)
    for key, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][key]), key
    for key, tensor in straight["method"]["modules"]["critic"].items():
        assert torch.equal(tensor, resumed["method"]["modules"]["critic"][key]), key
    assert resumed["method"]["steps_done"] == straight["method"]["steps_done"]


def test_unknown_method_and_bad_option_fail_before_any_data_is_read(toy_plugin, tlapp):
    code, _, err = tlapp("run", "--plugin", "toy", "--output", "x", "--set", "method.name=toy-algin")
    assert code == 2 and "did you mean 'toy-align'" in err
    code, _, err = tlapp("run", "--plugin", "toy", "--output", "x", "--set", "method.name=toy-align",
                         "--set", "method.wieght=1")
    assert code == 2 and "method.wieght" in err and "weight" in err
    from pathlib import Path

    assert not Path("x").exists()


def test_methods_are_listed_by_plugins(toy_plugin, tlapp):
    import json

    code, out, _ = tlapp("plugins", "--json")
    infos = {i["name"]: i for i in json.loads(out)}
    assert infos["toy"]["provides"]["methods"] == ["toy-align"]
    assert infos["tlcore"]["provides"]["methods"] == ["supervised", "distill", "dann", "coral", "pseudo-label",
                                                      "fixmatch", "simclr"]
