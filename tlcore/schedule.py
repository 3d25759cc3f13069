"""Optimizers and learning-rate schedules for one strategy phase, from torch's own building blocks."""

from __future__ import annotations

from typing import Any

import torch
from torch.optim import lr_scheduler

from .config import TrainSpec


def make_optimizer(param_groups: list[dict[str, Any]], train: TrainSpec) -> torch.optim.Optimizer:
    if train.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=train.lr, momentum=train.momentum,
                               weight_decay=train.weight_decay, nesterov=True)
    return torch.optim.AdamW(param_groups, lr=train.lr, weight_decay=train.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, train: TrainSpec, total_steps: int):
    """Per-step schedule over a phase: linear warm-up then cosine decay, one-cycle, or constant."""
    total_steps = max(1, total_steps)
    spec = train.schedule
    if spec.name == "onecycle":
        return lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[g["lr"] for g in optimizer.param_groups],
            total_steps=total_steps,
            pct_start=max(spec.warmup_fraction, 1.0 / total_steps),
        )
    if spec.name == "constant":
        return lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    warmup = int(round(spec.warmup_fraction * total_steps))
    cosine = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup))
    if warmup == 0:
        return cosine
    warm = lr_scheduler.LinearLR(optimizer, start_factor=1.0 / (warmup + 1), total_iters=warmup)
    return lr_scheduler.SequentialLR(optimizer, [warm, cosine], milestones=[warmup])
