"""Image backbones offered by the vision plugin: building them, their weights and parameter groups.

* ``efficientnet_lite0``: timm's ``tf_efficientnet_lite0`` with real ImageNet
  weights that work offline (:mod:`tlapp_vision.lite0_weights`). Its option
  ``stages`` (1..7) keeps only the first stages: a smaller student for knowledge
  distillation that still starts from the pretrained stem and stages.
* timm backbones (``resnet18``, ``resnet50``, ``convnext_tiny``, ``efficientnet_b0``,
  ``mobilenetv3_large_100``) and torchvision ones (``torchvision/resnet18``,
  ``torchvision/resnet50``) whose weights are downloaded on first use and cached
  (``tlcore.fetch_pretrained``). Offline, and not cached, their loaders fail within
  seconds with a ``TlappError`` saying how to get the weights.

Every backbone builds a network that returns pooled features of size
``module.num_features``; ``parameter_groups(module)`` splits any of them into
groups ordered from input to output, covering every parameter exactly once.

timm and torchvision are imported only when a backbone is built or loaded, so
that loading the plugin stays cheap.
"""

from __future__ import annotations

import functools
import os
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from tlcore import (IMAGENET_MEAN, IMAGENET_STD, Backbone, ConfigError, ParameterGroup, PluginError, TlappError,
                    fetch_pretrained, fetch_state_dict, huggingface_url, torch_hub_checkpoint)

from .lite0_weights import LITE0, LITE0_ARCH, LITE0_FEATURES, LITE0_MEAN, LITE0_PACKAGE, LITE0_STD, lite0_state_dict

# tlapp name -> (timm architecture, mean, std). mean/std are those of timm's default
# pretrained tag (what pretrained=True downloads); they are written here so that
# registering backbones does not import timm, and the tests check them against timm.
TIMM_BACKBONES: dict[str, tuple[str, tuple[float, ...], tuple[float, ...]]] = {
    "resnet18": ("resnet18", IMAGENET_MEAN, IMAGENET_STD),
    "resnet50": ("resnet50", IMAGENET_MEAN, IMAGENET_STD),
    "convnext_tiny": ("convnext_tiny", IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_b0": ("efficientnet_b0", IMAGENET_MEAN, IMAGENET_STD),
    "mobilenetv3_large_100": ("mobilenetv3_large_100", IMAGENET_MEAN, IMAGENET_STD),
}

# tlapp name -> (torchvision architecture, {weights source: torchvision weights tag}, mean, std).
TORCHVISION_BACKBONES: dict[str, tuple[str, dict[str, str], tuple[float, ...], tuple[float, ...]]] = {
    "torchvision/resnet18": ("resnet18", {"imagenet": "IMAGENET1K_V1"}, IMAGENET_MEAN, IMAGENET_STD),
    "torchvision/resnet50": ("resnet50", {"imagenet": "IMAGENET1K_V1", "imagenet_v2": "IMAGENET1K_V2"},
                             IMAGENET_MEAN, IMAGENET_STD),
}

# What a user without network access can do instead of downloading weights.
OFFLINE_ALTERNATIVES = (f"start from a local state dict with --init file:PATH, or from scratch with --init none; "
                        f"or use the backbone {LITE0!r}, whose ImageNet weights ship with the {LITE0_PACKAGE} package")

# efficientnet_lite0 has 7 stages (blocks.0..6); the option ``stages`` keeps the first 1..7 of them.
LITE0_STAGES = 7

# Top-level containers whose children are stages of the network.
STAGE_CONTAINERS = ("blocks", "stages", "layers", "features")


def _timm():
    import timm

    return timm


# ---------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------

def _reject_weight_options(name: str, options: dict[str, Any], keys: tuple[str, ...]) -> None:
    bad = [k for k in keys if k in options]
    if bad:
        raise TlappError(
            f"backbone {name!r} does not take the option(s) {', '.join(bad)}",
            where=f"backbone {name!r} options",
            fix="choose weights with --init (e.g. imagenet, file:PATH or none); "
                "the backbone always returns pooled features, the head makes the outputs",
        )


def _options_error(call: str, arch: str, options: dict[str, Any], error: TypeError) -> TlappError:
    """``call`` ("timm.create_model") refused ``options`` for ``arch``."""
    return TlappError(
        f"{call.partition('.')[0]} model {arch!r} does not accept these options: {error}",
        where=f"backbone options {sorted(options)}",
        fix=f"remove or rename the options; they are passed to {call}",
    )


def create_timm(arch: str, pretrained: bool = False, **options: Any) -> nn.Module:
    """timm's ``arch`` without classifier (pooled features); ``num_features`` is the output width."""
    try:
        model = _timm().create_model(arch, pretrained=pretrained, num_classes=0, **options)
    except TypeError as e:
        raise _options_error("timm.create_model", arch, options, e) from e
    # Some models (MobileNetV3) apply a head convolution after pooling: their pre-logits
    # output is head_hidden_size wide, not num_features. tlapp reads num_features.
    hidden = getattr(model, "head_hidden_size", None)
    if isinstance(hidden, int) and hidden != model.num_features:
        model.num_features = hidden
    return model


def build_timm(arch: str, name: str | None = None, **options: Any) -> nn.Module:
    """A randomly initialised timm backbone; weights come from the backbone's loaders."""
    _reject_weight_options(name or arch, options, ("pretrained", "num_classes", "pretrained_cfg_overlay"))
    return create_timm(arch, pretrained=False, **options)


def build_torchvision(arch: str, name: str | None = None, **options: Any) -> nn.Module:
    """A randomly initialised torchvision ResNet whose ``fc`` is removed (pooled features)."""
    import torchvision

    _reject_weight_options(name or f"torchvision/{arch}", options, ("weights", "num_classes"))
    try:
        model = torchvision.models.get_model(arch, weights=None, **options)
    except TypeError as e:
        raise _options_error("torchvision.models.get_model", arch, options, e) from e
    fc = getattr(model, "fc", None)
    if not isinstance(fc, nn.Linear):
        raise PluginError(f"torchvision model {arch!r} has no final fc layer to remove",
                          fix="only ResNet-style torchvision models are offered")
    model.fc = nn.Identity()
    model.num_features = fc.in_features
    return model


def lite0_stages(value: Any) -> int:
    """The option ``stages`` of ``efficientnet_lite0``, checked: an int in 1..7, None (null) for all 7."""
    if value is None:
        return LITE0_STAGES
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= LITE0_STAGES:
        raise ConfigError(
            f"backbone {LITE0!r} takes stages = 1..{LITE0_STAGES}, got {value!r}",
            where="model.backbone_options.stages",
            fix=f"give a whole number from 1 to {LITE0_STAGES} (the stages kept from the input side; "
                f"{LITE0_STAGES}, the default, is the whole network), e.g. --set model.backbone_options.stages=5",
        )
    return value


def keep_stages(model: nn.Module, stages: int) -> nn.Module:
    """Cut a timm EfficientNet after its first ``stages`` stages, in place.

    The kept modules keep their names (``conv_stem``, ``bn1``, ``blocks.0``...), so that
    the pretrained loader fills them from the full network's tensors. ``conv_head`` and
    ``bn2`` widen the last stage's output for the classifier; fed a shorter network they
    would not fit, so they become ``nn.Identity`` and timm's ``forward_features`` /
    ``forward_head`` give the global average pool of the last kept stage.
    """
    net: Any = model  # timm's attributes, untyped
    if stages == len(net.blocks):
        return model
    net.blocks = net.blocks[:stages]
    net.conv_head = nn.Identity()
    net.bn2 = nn.Identity()
    width = int(net.blocks[-1][-1].feature_info("bottleneck")["num_chs"])
    net.num_features = net.head_hidden_size = width
    # timm's record of the feature maps (used by forward_intermediates) must not name dropped stages.
    net.feature_info = [f for f in net.feature_info if f["stage"] <= stages]
    net.stage_ends = [f["stage"] for f in net.feature_info]
    return model


def build_lite0(**options: Any) -> nn.Module:
    """``efficientnet_lite0``; ``stages`` < 7 keeps only the first stages (a student for distillation)."""
    stages = lite0_stages(options.pop("stages", None))
    return keep_stages(build_timm(LITE0_ARCH, name=LITE0, **options), stages)


# ---------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------

def state_for(name: str, module: nn.Module, state: dict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """``state`` restricted to ``module``'s keys; every key must be there with the same shape."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
             for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensor(s) missing (e.g. {', '.join(missing[:3])})")
        if wrong:
            parts.append(f"{len(wrong)} with other shapes (e.g. {'; '.join(wrong[:3])})")
        raise TlappError(
            f"the pretrained weights of backbone {name!r} do not fit its network: {', '.join(parts)}",
            where=f"backbone {name!r}",
            fix="build the backbone without options that change its layers, or use --init file:PATH / none",
        )
    return OrderedDict((k, state[k]) for k in own)


def load_lite0_imagenet(module: nn.Module) -> OrderedDict[str, torch.Tensor]:
    """Weight loader of ``efficientnet_lite0``: the shipped tensors keyed by ``module``'s names."""
    return state_for(LITE0, module, lite0_state_dict())


def _timm_cfg(arch: str):
    cfg = _timm().models.get_pretrained_cfg(arch)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise PluginError(f"timm has no pretrained weights for {arch!r}",
                          fix="offer only timm models with pretrained weights")
    return cfg


def timm_weights_location(arch: str) -> str:
    """Where timm downloads ``arch``'s default weights from (Hugging Face hub, else its URL)."""
    cfg = _timm_cfg(arch)
    return huggingface_url(cfg.hf_hub_id.partition("@")[0]) if cfg.hf_hub_id else cfg.url


def find_cached_timm(arch: str) -> str | None:
    """A local copy of ``arch``'s default timm weights (Hugging Face or torch hub cache), if any."""
    cfg = _timm_cfg(arch)
    if cfg.hf_hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            try_to_load_from_cache = None  # type: ignore[assignment]
        if try_to_load_from_cache is not None:
            repo, _, revision = cfg.hf_hub_id.partition("@")
            names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
            for filename in names:
                found = try_to_load_from_cache(repo, filename, revision=revision or None)
                if isinstance(found, str) and os.path.isfile(found):
                    return found
    if cfg.url:
        path = torch_hub_checkpoint(cfg.url)
        if path.is_file():
            return str(path)
    return None


def download_timm(arch: str) -> nn.Module:
    """timm's own pretrained download (Hugging Face hub or URL, cached afterwards)."""
    return create_timm(arch, pretrained=True)


def load_timm_imagenet(name: str, arch: str, module: nn.Module) -> OrderedDict[str, torch.Tensor]:
    """Weight loader of a timm backbone: the cached copy, else a download; offline a ``TlappError``."""

    def cached() -> nn.Module | None:
        path = find_cached_timm(arch)
        return None if path is None else create_timm(arch, pretrained=True, pretrained_cfg_overlay={"file": path})

    location = timm_weights_location(arch)
    model = fetch_pretrained(f"the ImageNet weights of backbone {name!r}", location, cached=cached,
                             download=lambda: download_timm(arch), caches=("huggingface", "torch hub"),
                             otherwise=OFFLINE_ALTERNATIVES, where=f"backbone {name!r}, weights from {location}")
    return state_for(name, module, model.state_dict())


def load_torchvision_imagenet(name: str, arch: str, tag: str,
                              module: nn.Module) -> OrderedDict[str, torch.Tensor]:
    """Weight loader of a torchvision backbone: the cached copy, else a download; offline a ``TlappError``."""
    import torchvision

    url = torchvision.models.get_model_weights(arch)[tag].url
    state = fetch_state_dict(url, f"the {tag} weights of backbone {name!r}", otherwise=OFFLINE_ALTERNATIVES,
                             where=f"backbone {name!r}, weights from {url}")
    return state_for(name, module, state)


# ---------------------------------------------------------------------------------------------
# Parameter groups
# ---------------------------------------------------------------------------------------------

def _has(module: nn.Module, *names: str) -> bool:
    return all(isinstance(getattr(module, n, None), nn.Module) for n in names)


def _stage_names(module: nn.Module, container: str) -> list[str]:
    return [f"{container}.{i}" for i, _ in getattr(module, container).named_children()]


def _spec(module: nn.Module) -> list[tuple[str, list[str]]]:
    """(group name, submodule paths) from input to output for the architectures we know."""
    if _has(module, "conv_stem", "blocks"):  # timm EfficientNet / MobileNetV3
        return ([("stem", ["conv_stem", "bn1"])]
                + [(s, [s]) for s in _stage_names(module, "blocks")]
                + [("conv_head", ["conv_head", "bn2", "norm_head"])])
    if _has(module, "conv1", "layer1"):  # ResNet (timm and torchvision)
        layers = [n for n in ("layer1", "layer2", "layer3", "layer4") if _has(module, n)]
        return [("stem", ["conv1", "bn1"])] + [(n, [n]) for n in layers]
    if _has(module, "stem", "stages"):  # timm ConvNeXt and similar
        return ([("stem", ["stem"])]
                + [(s, [s]) for s in _stage_names(module, "stages")]
                + [("final_norm", ["norm_pre", "head"])])
    return []


def _children_groups(module: nn.Module, skip: set[str]) -> list[ParameterGroup]:
    groups = []
    for name, child in module.named_children():
        if name in skip:
            continue
        if name in STAGE_CONTAINERS and isinstance(child, (nn.Sequential, nn.ModuleList)):
            groups += [ParameterGroup(f"{name}.{i}", [sub]) for i, sub in child.named_children()]
        else:
            groups.append(ParameterGroup(name, [child]))
    return groups


def parameter_groups(module: nn.Module) -> list[ParameterGroup]:
    """``module``'s parameter groups from input to output, covering each parameter exactly once.

    EfficientNet / MobileNetV3: stem, blocks.0..N, conv_head. ResNet: stem,
    layer1..layer4. ConvNeXt: stem, stages.0..3, final_norm. Anything else: its
    children in order, stage containers (blocks, stages, layers, features) split
    into their children. Top-level children not named by a rule (a classifier, say)
    follow as groups of their own; groups without parameters are dropped. The
    engine checks the partition (``check_groups``) before training.
    """
    groups: list[ParameterGroup] = []
    used: set[str] = set()
    for group_name, paths in _spec(module):
        modules = []
        for path in paths:
            try:
                modules.append(module.get_submodule(path))
            except AttributeError:
                continue
            used.add(path.split(".")[0])
        groups.append(ParameterGroup(group_name, modules))
    groups += _children_groups(module, used)
    return [g for g in groups if g.parameters()]


# ---------------------------------------------------------------------------------------------
# The catalogue
# ---------------------------------------------------------------------------------------------

def lite0_backbone() -> Backbone:
    return Backbone(
        name=LITE0,
        build=build_lite0,
        weights={"imagenet": load_lite0_imagenet},
        parameter_groups=parameter_groups,
        mean=LITE0_MEAN,
        std=LITE0_STD,
        description=(f"EfficientNet-Lite0 (timm {LITE0_ARCH}), {LITE0_FEATURES} features, 224 px; "
                     f"ImageNet weights work offline (shipped by {LITE0_PACKAGE}); "
                     f"option stages=1..{LITE0_STAGES} keeps the first stages, a smaller student for distillation"),
    )


def timm_backbone(name: str) -> Backbone:
    arch, mean, std = TIMM_BACKBONES[name]
    return Backbone(
        name=name,
        build=functools.partial(build_timm, arch, name=name),
        weights={"imagenet": functools.partial(load_timm_imagenet, name, arch)},
        parameter_groups=parameter_groups,
        mean=mean,
        std=std,
        description=f"timm {arch}; ImageNet weights downloaded by timm on first use (needs network once)",
    )


def torchvision_backbone(name: str) -> Backbone:
    arch, tags, mean, std = TORCHVISION_BACKBONES[name]
    return Backbone(
        name=name,
        build=functools.partial(build_torchvision, arch, name=name),
        weights={source: functools.partial(load_torchvision_imagenet, name, arch, tag)
                 for source, tag in tags.items()},
        parameter_groups=parameter_groups,
        mean=mean,
        std=std,
        description=(f"torchvision {arch} ({', '.join(f'{s}={t}' for s, t in tags.items())}); "
                     f"weights downloaded by torchvision on first use (needs network once)"),
    )


def vision_backbones() -> list[Backbone]:
    """Every backbone the vision plugin offers, the offline one first."""
    return ([lite0_backbone()]
            + [timm_backbone(n) for n in TIMM_BACKBONES]
            + [torchvision_backbone(n) for n in TORCHVISION_BACKBONES])
