"""The vision plugin's backbones: building, offline lite0 weights through the plugin, groups, offline failures."""

from __future__ import annotations

import time

import pytest
import torch

from tlcore import Backbone, TlappError
from tlcore import downloads
from tlcore.downloads import OFFLINE_FLAGS
from tlapp_vision import models as B
from tlapp_vision import plugin
from tlapp_vision.lite0_weights import LITE0, LITE0_ARCH, LITE0_MEAN, LITE0_STD, imagenet_classifier, lite0_state_dict

ESPRESSO = 967


def registered() -> dict[str, Backbone]:
    got: list[Backbone] = []
    plugin.register_backbones(register=got.append)
    return {b.name: b for b in got}


# --- efficientnet_lite0 through the plugin ------------------------------------------------------

def test_lite0_through_the_plugin_has_1280_pretrained_features(coffee):
    backbone = registered()[LITE0]
    assert backbone.mean == backbone.std == (0.5, 0.5, 0.5)
    torch.manual_seed(0)
    module = backbone.build().eval()
    assert module.num_features == 1280
    with torch.no_grad():
        random_features = module(coffee)
    assert random_features.shape == (1, 1280)

    state = backbone.weights["imagenet"](module)
    assert list(state) == list(module.state_dict())  # keyed by the module's own names, no classifier
    module.load_state_dict(state, strict=True)
    with torch.no_grad():
        features = module(coffee)
    assert not torch.allclose(features, random_features, atol=1e-3)

    # The loaded backbone's features under the shipped ImageNet head still say espresso.
    full = lite0_state_dict()
    logits = features @ full["classifier.weight"].T + full["classifier.bias"]
    assert logits.argmax().item() == ESPRESSO


def test_weights_that_do_not_fit_the_module_are_refused():
    module = B.build_timm("resnet18")
    state = dict(module.state_dict())
    state["conv1.weight"] = torch.zeros(1)
    del state["layer1.0.bn1.bias"]
    with pytest.raises(TlappError, match="1 tensor.*missing.*1 with other shapes"):
        B.state_for("resnet18", module, state)


# --- every backbone: builds offline, features, groups ----------------------------------------

def test_plugin_registers_the_expected_backbones():
    names = set(registered())
    assert {LITE0, "resnet18", "resnet50", "convnext_tiny", "efficientnet_b0",
            "mobilenetv3_large_100", "torchvision/resnet18", "torchvision/resnet50"} <= names
    for backbone in registered().values():
        assert "imagenet" in backbone.weights
        assert len(backbone.mean) == len(backbone.std) == 3


def test_declared_mean_std_are_those_of_the_downloaded_weights():
    import timm
    import torchvision

    cfg = timm.models.get_pretrained_cfg(LITE0_ARCH)
    assert (tuple(cfg.mean), tuple(cfg.std)) == (LITE0_MEAN, LITE0_STD)
    for name, (arch, mean, std) in B.TIMM_BACKBONES.items():
        cfg = timm.models.get_pretrained_cfg(arch)
        assert (tuple(cfg.mean), tuple(cfg.std)) == (mean, std), name
    for name, (arch, tags, mean, std) in B.TORCHVISION_BACKBONES.items():
        for tag in tags.values():
            t = torchvision.models.get_model_weights(arch)[tag].transforms()
            assert (tuple(t.mean), tuple(t.std)) == (mean, std), name


EXPECTED_GROUPS = {
    LITE0: ["stem"] + [f"blocks.{i}" for i in range(7)] + ["conv_head"],
    "efficientnet_b0": ["stem"] + [f"blocks.{i}" for i in range(7)] + ["conv_head"],
    "resnet18": ["stem", "layer1", "layer2", "layer3", "layer4"],
    "torchvision/resnet50": ["stem", "layer1", "layer2", "layer3", "layer4"],
    "convnext_tiny": ["stem", "stages.0", "stages.1", "stages.2", "stages.3", "final_norm"],
}


@pytest.mark.parametrize("name", sorted(registered()))
def test_groups_cover_each_parameter_once_from_input_to_output(name):
    backbone = registered()[name]
    module = backbone.build().eval()
    groups = backbone.parameter_groups(module)

    names = [g.name for g in groups]
    assert len(set(names)) == len(names)
    if name in EXPECTED_GROUPS:
        assert names == EXPECTED_GROUPS[name]
    assert not any(g.is_head for g in groups)

    owner: dict[int, str] = {}
    for g in groups:
        assert g.parameters(), g.name
        for p in g.parameters():
            assert id(p) not in owner, f"parameter in {owner[id(p)]} and {g.name}"
            owner[id(p)] = g.name
    assert set(owner) == {id(p) for p in module.parameters()}

    # Input -> output: the first forward call into each group comes in group order.
    first: dict[str, int] = {}
    calls = [0]

    def hook_for(group_name):
        def hook(mod, args):
            calls[0] += 1
            first.setdefault(group_name, calls[0])
        return hook

    handles = [m.register_forward_pre_hook(hook_for(g.name)) for g in groups for m in g.modules]
    with torch.no_grad():
        out = module(torch.randn(1, 3, 64, 64))
    for h in handles:
        h.remove()
    assert list(first) == names
    assert out.shape == (1, module.num_features)


def test_groups_of_a_full_model_put_the_classifier_last():
    groups = B.parameter_groups(imagenet_classifier())
    assert [g.name for g in groups][-1] == "classifier"


# --- online-only backbones, offline ----------------------------------------------------------

def _no_network(*args, **kwargs):
    raise ConnectionError("[Errno -2] Name or service not known (simulated)")


def _must_not_run(*args, **kwargs):
    pytest.fail("tried the network although it was known to be unavailable")


@pytest.fixture
def empty_caches(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(B, "find_cached_timm", lambda arch: None)
    for flag in OFFLINE_FLAGS:
        monkeypatch.delenv(flag, raising=False)


def _assert_helpful(error: TlappError, name: str) -> None:
    text = str(error)
    assert repr(name) in text
    assert "--init file:PATH" in text and "--init none" in text
    assert "run once with network access" in text
    assert repr(LITE0) in text


@pytest.mark.parametrize("name", ["resnet18", "torchvision/resnet18"])
def test_download_failure_becomes_a_quick_helpful_error(name, monkeypatch, empty_caches):
    monkeypatch.setattr(downloads, "unreachable", lambda url: None)  # server looks reachable
    monkeypatch.setattr(B, "download_timm", _no_network)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _no_network)
    backbone = registered()[name]
    module = backbone.build()
    start = time.monotonic()
    with pytest.raises(TlappError) as info:
        backbone.weights["imagenet"](module)
    assert time.monotonic() - start < 5
    _assert_helpful(info.value, name)
    assert "Name or service not known" in str(info.value)
    assert isinstance(info.value.__cause__, ConnectionError)


@pytest.mark.parametrize("name", ["efficientnet_b0", "torchvision/resnet50"])
def test_unreachable_server_fails_before_downloading(name, monkeypatch, empty_caches):
    monkeypatch.setattr(downloads, "unreachable", lambda url: f"offline? cannot reach {url} (simulated)")
    monkeypatch.setattr(B, "download_timm", _must_not_run)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _must_not_run)
    backbone = registered()[name]
    with pytest.raises(TlappError, match="offline\\? cannot reach") as info:
        backbone.weights["imagenet"](backbone.build())
    _assert_helpful(info.value, name)


def test_offline_flag_forbids_any_network_use(monkeypatch, empty_caches):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(downloads.threading, "Thread", _must_not_run)  # no connection is even tried
    monkeypatch.setattr(B, "download_timm", _must_not_run)
    backbone = registered()["efficientnet_b0"]
    with pytest.raises(TlappError, match="downloads are switched off \\(HF_HUB_OFFLINE=1\\)"):
        backbone.weights["imagenet"](backbone.build())


def test_cached_timm_weights_load_without_network(monkeypatch, tmp_path, empty_caches):
    import timm

    torch.manual_seed(1)
    saved = timm.create_model("resnet18", pretrained=False).state_dict()  # with its 1000-class fc
    path = tmp_path / "model.pth"
    torch.save(saved, path)
    monkeypatch.setattr(B, "find_cached_timm", lambda arch: str(path))
    monkeypatch.setattr(downloads, "unreachable", _must_not_run)
    monkeypatch.setattr(B, "download_timm", _must_not_run)
    backbone = registered()["resnet18"]
    module = backbone.build()
    state = backbone.weights["imagenet"](module)
    assert list(state) == list(module.state_dict())
    assert torch.equal(state["layer4.1.conv2.weight"], saved["layer4.1.conv2.weight"])


def test_cached_torchvision_weights_load_without_network(monkeypatch, tmp_path, empty_caches):
    import torchvision

    torch.manual_seed(2)
    saved = torchvision.models.resnet18(weights=None).state_dict()
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(saved, checkpoints / url.rsplit("/", 1)[-1])
    monkeypatch.setattr(downloads, "unreachable", _must_not_run)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _must_not_run)
    backbone = registered()["torchvision/resnet18"]
    module = backbone.build()
    state = backbone.weights["imagenet"](module)
    assert "fc.weight" not in state and list(state) == list(module.state_dict())
    assert torch.equal(state["layer1.0.conv1.weight"], saved["layer1.0.conv1.weight"])
