"""What plugins provide, collected by name, with the plugin each came from."""

from __future__ import annotations

import builtins
import difflib
import fnmatch
from dataclasses import dataclass, field, fields
from typing import Any
from collections.abc import Callable

import torch
from torch import nn

from .errors import PluginError, TlappError
from .imagenet import IMAGENET_MEAN, IMAGENET_STD


@dataclass
class ParameterGroup:
    """A named slice of a model, ordered from input to output, that strategies train or freeze.

    Holds modules rather than bare parameters so that batch-norm layers in a
    frozen group can be kept in evaluation mode. ``is_head`` marks the output
    part that head-only strategies train; ``fixed`` marks a part that no
    strategy ever trains (e.g. a detector's first stages kept as pretrained):
    it stays frozen, in evaluation mode and out of every optimizer group.
    """

    name: str
    modules: list[nn.Module]
    is_head: bool = False
    fixed: bool = False

    def parameters(self) -> list[nn.Parameter]:
        seen: set[int] = set()
        params = []
        for module in self.modules:
            for p in module.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
        return params


WeightLoader = Callable[[nn.Module], dict[str, torch.Tensor]]


@dataclass
class Backbone:
    """A pretrained network a plugin offers.

    build(**options) -> nn.Module returning pooled features of size
    ``module.num_features`` (or a feature map where the task says so).
    weights maps a source name ("imagenet", ...) to loader(module) -> state dict;
    a loader that cannot get its weights raises ``TlappError`` saying how to.
    parameter_groups(module) lists the backbone's groups from input to output.
    """

    name: str
    build: Callable[..., nn.Module]
    weights: dict[str, WeightLoader]
    parameter_groups: Callable[[nn.Module], list[ParameterGroup]]
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    description: str = ""
    plugin: str = ""


@dataclass
class Entry:
    """A named factory (head, augmentation, metric, dataset format) and who provided it."""

    name: str
    factory: Callable[..., Any]
    description: str = ""
    plugin: str = ""


class Catalog(dict):
    """A name -> entry mapping whose misses say what exists and what was probably meant."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def add(self, name: str, entry: Any, plugin: str) -> None:
        if name in self:
            other = getattr(self[name], "plugin", "?")
            raise PluginError(
                f"plugin {plugin!r} registers {self.kind} {name!r}, already registered by {other!r}",
                fix=f"rename the {self.kind} in one of the plugins, or restrict loading with TLAPP_PLUGINS",
            )
        self[name] = entry

    def get_or_fail(self, name: str, where: str | None = None) -> Any:
        if name in self:
            return self[name]
        close = difflib.get_close_matches(name, list(self), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise TlappError(
            f"unknown {self.kind} {name!r}",
            where=where,
            fix=f"{hint}available: {', '.join(sorted(self)) or '(none)'}",
        )


@dataclass
class Registry:
    """Everything the loaded plugins provide, by kind; ``Context.registry`` is the run's registry.

    Each kind is a ``Catalog`` (a dict of name -> entry whose ``get_or_fail`` names what was
    probably meant): tasks (``tlcore.Task``), dataset_formats, heads, augmentations and metrics
    (``tlcore.Entry``), backbones (``tlcore.Backbone``), strategies and methods (classes).
    """

    tasks: Catalog = field(default_factory=lambda: Catalog("task"))
    dataset_formats: Catalog = field(default_factory=lambda: Catalog("dataset format"))
    backbones: Catalog = field(default_factory=lambda: Catalog("backbone"))
    heads: Catalog = field(default_factory=lambda: Catalog("head"))
    augmentations: Catalog = field(default_factory=lambda: Catalog("augmentation pipeline"))
    metrics: Catalog = field(default_factory=lambda: Catalog("metric"))
    strategies: Catalog = field(default_factory=lambda: Catalog("strategy"))
    methods: Catalog = field(default_factory=lambda: Catalog("training method"))

    def tasks_of(self, plugin: str) -> list[Any]:
        return [t for t in self.tasks.values() if t.plugin == plugin]

    def list(self, kind: str, pattern: str = "*") -> builtins.list[str]:
        """Sorted names of one kind matching a shell-style pattern, like timm's ``list_models``:
        ``registry.list("backbones", "*lite*")``. Kinds: tasks, dataset_formats, backbones, heads,
        augmentations, metrics, strategies, methods."""
        catalog = getattr(self, kind, None)
        if not isinstance(catalog, Catalog):
            kinds = [f.name for f in fields(self)]
            close = difflib.get_close_matches(kind, kinds, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise TlappError(f"unknown registry kind {kind!r}", fix=f"{hint}kinds: {', '.join(kinds)}")
        return sorted(name for name in catalog if fnmatch.fnmatchcase(name, pattern))
