"""Feature caching for phases that train only the head.

When every non-head group is frozen and no random augmentation is active, the
backbone maps each sample to the same features every epoch; computing them once
makes later epochs cost only the head.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from .device import Precision
from .engine import to_device
from .registry import ParameterGroup
from .strategies import Phase
from .task import BackboneHeadModel, uses_feature_cache


class HeadOnly(nn.Module):
    """The model's head applied to cached backbone features."""

    def __init__(self, model: BackboneHeadModel):
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.head(features)


def cache_decision(model: nn.Module, groups: list[ParameterGroup], phase: Phase, augment: str | None,
                   enabled: bool, method_allows: bool = True) -> tuple[bool, str]:
    """Whether the phase may train on cached features, and why (recorded in metrics.json)."""
    if not enabled:
        return False, "disabled by train.feature_cache"
    if not uses_feature_cache(model):
        return False, "the model is not backbone-then-head"
    if not method_allows:
        return False, "the training method needs more than the head's outputs"
    if any(phase.mult(g.name) is not None for g in groups if not g.is_head):
        return False, "the phase trains backbone groups"
    if phase.train_bn:
        return False, "strategy.train_bn lets frozen statistics change"
    if augment:
        return False, f"augmentation {augment!r} changes inputs every epoch"
    return True, "backbone frozen and inputs fixed"


class FeatureCache:
    """Backbone features of the train and validation splits, valid while the backbone does not change.

    ``for_phase`` is called at every phase change: a phase that trains any backbone group makes
    the cached features stale, so a strategy going head, then everything, then head again
    extracts afresh for its second head-only phase instead of training on old features.
    """

    def __init__(self, model: Any, datasets: dict[str, Any], batch_size: int, collate_fn,
                 num_workers: int, precision: Precision, device: torch.device):
        self.model = model
        self.datasets = datasets
        self.args = (batch_size, collate_fn, num_workers, precision, device)
        self.features: dict[str, TensorDataset] | None = None
        self.extractions = 0

    def for_phase(self, use: bool) -> None:
        if not use:
            self.features = None

    def get(self) -> dict[str, TensorDataset]:
        if self.features is None:
            self.features = {split: extract_features(self.model, dataset, *self.args)
                             for split, dataset in self.datasets.items()}
            self.extractions += 1
        return self.features


@torch.no_grad()
def extract_features(model: BackboneHeadModel, dataset, batch_size: int, collate_fn, num_workers: int,
                     precision: Precision, device: torch.device) -> TensorDataset:
    was_training = model.backbone.training
    model.backbone.eval()
    features: list[torch.Tensor] = []
    targets: list[Any] = []  # tensors, or for a multi-task dataset dicts task -> tensor
    # Its own generator: extracting must not move the global RNG, or a resumed run (which extracts
    # at a later epoch) would draw different dropout masks than an uninterrupted one.
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn,
                        num_workers=num_workers, generator=torch.Generator())
    for inputs, target in loader:
        with precision.autocast(device):
            out = model.backbone(to_device(inputs, device))
        features.append(out.float().cpu())
        targets.append({task: torch.as_tensor(t) for task, t in target.items()} if isinstance(target, dict)
                       else torch.as_tensor(target))
    model.backbone.train(was_training)
    if targets and isinstance(targets[0], dict):  # a multi-task batch's targets: a tensor per task
        return TaskFeatures(torch.cat(features), {task: torch.cat([t[task] for t in targets]) for task in targets[0]})
    return TensorDataset(torch.cat(features), torch.cat(targets))


class TaskFeatures(TensorDataset):
    """Cached features with a multi-task target: items are (features, {task: target}), as the data's were."""

    def __init__(self, features: torch.Tensor, targets: dict[str, torch.Tensor]):
        super().__init__(features, *targets.values())
        self.tasks = list(targets)

    def __getitem__(self, index):
        features, *targets = super().__getitem__(index)
        return features, dict(zip(self.tasks, targets))
