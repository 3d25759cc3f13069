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
