"""Head-only phases train on cached backbone features when that is valid, and not otherwise."""

from __future__ import annotations

import sys

import torch

from helpers import read_metrics


def count_backbone_calls(monkeypatch):
    toy = sys.modules["tlapp_toy"]
    calls = {"n": 0}
    original = toy.ToyNet.forward

    def counting(self, x):
        calls["n"] += 1
        return original(self, x)

    monkeypatch.setattr(toy.ToyNet, "forward", counting)
    return calls


def run_probe(tlapp, out, *extra):
    code, _, err = tlapp("run", "--plugin", "toy", "--strategy", "linear-probe", "--output", out, *extra)
    assert code == 0, err
    return read_metrics(out)


def test_cache_gives_the_same_model_with_fewer_backbone_passes(toy_plugin, tlapp, monkeypatch):
    run_probe(tlapp, "warm", "--epochs", "1")
    calls = count_backbone_calls(monkeypatch)
    cached = run_probe(tlapp, "cached", "--epochs", "4")
    cached_calls = calls["n"]
    calls["n"] = 0
    plain = run_probe(tlapp, "plain", "--epochs", "4", "--set", "train.feature_cache=false")
    plain_calls = calls["n"]
    assert all(h["feature_cache"] for h in cached["history"])
    assert not any(h["feature_cache"] for h in plain["history"])
    assert cached_calls < plain_calls / 2
    a = torch.load("cached/checkpoints/last.pt", weights_only=True)["model"]
    b = torch.load("plain/checkpoints/last.pt", weights_only=True)["model"]
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key


def test_cache_cost_does_not_grow_with_epochs(toy_plugin, tlapp, monkeypatch):
    run_probe(tlapp, "warm", "--epochs", "1")
    calls = count_backbone_calls(monkeypatch)
    run_probe(tlapp, "two", "--epochs", "2")
    two = calls["n"]
    calls["n"] = 0
    run_probe(tlapp, "six", "--epochs", "6")
    assert calls["n"] == two


def test_cache_is_bypassed_with_augmentation_and_when_the_backbone_trains(toy_plugin, tlapp):
    noisy = run_probe(tlapp, "noisy", "--epochs", "2", "--set", "augment=toy-noise")
    assert not any(h["feature_cache"] for h in noisy["history"])
    code, _, err = tlapp("run", "--plugin", "toy", "--strategy", "freeze-unfreeze", "--epochs", "3",
                         "--output", "fu", "--set", "strategy.head_epochs=1")
    assert code == 0, err
    assert [h["feature_cache"] for h in read_metrics("fu")["history"]] == [True, False, False]


def test_cache_is_rebuilt_when_a_phase_between_trained_the_backbone(toy_plugin, tlapp):
    """head, all, head: the second head-only phase must see the backbone as the middle phase left it."""
    args = ("run", "--plugin", "toy", "--strategy", "head-all-head", "--epochs", "5")
    assert tlapp(*args, "--output", "cached")[0] == 0
    assert tlapp(*args, "--output", "plain", "--set", "train.feature_cache=false")[0] == 0
    assert [h["feature_cache"] for h in read_metrics("cached")["history"]] == [True, True, False, True, True]
    a = torch.load("cached/checkpoints/last.pt", weights_only=True)["model"]
    b = torch.load("plain/checkpoints/last.pt", weights_only=True)["model"]
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key


def test_feature_cache_object_extracts_again_only_after_an_uncached_phase():
    from torch.utils.data import TensorDataset

    from tlcore.classification import ClassificationModel
    from tlcore.device import resolve_precision
    from tlcore.features import FeatureCache
    from tlcore.registry import ParameterGroup

    backbone = torch.nn.Linear(3, 4)
    backbone.num_features = 4
    model = ClassificationModel(backbone, torch.nn.Linear(4, 2), lambda m: [ParameterGroup("b", [m])])
    data = TensorDataset(torch.randn(6, 3), torch.zeros(6, dtype=torch.long))
    cache = FeatureCache(model, {"train": data}, 4, None, 0, resolve_precision("fp32", torch.device("cpu")),
                         torch.device("cpu"))
    first = cache.get()["train"].tensors[0].clone()
    cache.for_phase(True)
    assert cache.get()["train"].tensors[0] is not first and cache.extractions == 1
    with torch.no_grad():
        backbone.weight.add_(1.0)  # what a phase training the backbone does
    cache.for_phase(False)
    cache.for_phase(True)
    assert not torch.allclose(cache.get()["train"].tensors[0], first) and cache.extractions == 2
