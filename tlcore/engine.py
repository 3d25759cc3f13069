"""The training loop: plain functions that read top to bottom.

``train_one_epoch`` and ``evaluate`` know nothing of domains: the task computes
the loss of a batch and evaluates it; strategies decide which parameters train.
"""

from __future__ import annotations

import math
import time
from typing import Any
from collections.abc import Callable

import torch
from torch import nn

from .device import Precision
from .errors import TrainingError
from .progress import EpochProgress
from .task import Evaluator


def to_device(batch: Any, device: torch.device, channels_last: bool = False) -> Any:
    if isinstance(batch, torch.Tensor):
        batch = batch.to(device, non_blocking=True)
        if channels_last and batch.dim() == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch
    if isinstance(batch, dict):
        return {k: to_device(v, device, channels_last) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device, channels_last) for v in batch)
    return batch


def train_one_epoch(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any], tuple[torch.Tensor, int]],
    loader,
    optimizer: torch.optim.Optimizer,
    scheduler,
    scaler: torch.amp.GradScaler | None,
    precision: Precision,
    device: torch.device,
    *,
    grad_accum: int = 1,
    clip_grad_norm: float | None = None,
    channels_last: bool = False,
    description: str = "train",
    on_step: Callable[[], None] | None = None,
) -> dict[str, float]:
    """One pass over ``loader``; returns mean train loss, samples and samples/s.

    With gradient accumulation each micro-batch's loss is divided by the number
    of micro-batches in its window, so a short last window is not under-weighted.
    """
    n_batches = len(loader)
    total_loss, total_samples, steps = 0.0, 0, 0
    started = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    with EpochProgress(description, n_batches) as progress:
        for i, batch in enumerate(loader):
            window_start = (i // grad_accum) * grad_accum
            window = min(grad_accum, n_batches - window_start)
            batch = to_device(batch, device, channels_last)
            with precision.autocast(device):
                loss, n = loss_fn(model, batch)
            if not torch.isfinite(loss):
                raise TrainingError(f"loss is {loss.item()} at batch {i} of {description}",
                                    fix="lower train.lr, enable train.clip_grad_norm, or check the labels")
            scaled = loss / window
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
            total_loss += loss.item() * n
            total_samples += n
            if i - window_start + 1 == window:
                if scaler is not None:
                    scaler.unscale_(optimizer)
                if clip_grad_norm is not None:
                    trainable = [p for g in optimizer.param_groups for p in g["params"]]
                    torch.nn.utils.clip_grad_norm_(trainable, clip_grad_norm)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                steps += 1
                if on_step is not None:
                    on_step()
            progress.update(n, loss=loss.item(), lr=optimizer.param_groups[-1]["lr"])
    seconds = time.perf_counter() - started
    return {
        "train_loss": total_loss / max(total_samples, 1),
        "train_samples": total_samples,
        "optimizer_steps": steps,
        "samples_per_second": total_samples / max(seconds, 1e-9),
        "train_seconds": seconds,
    }


@torch.no_grad()
def evaluate(model: nn.Module, evaluator: Evaluator, loader, precision: Precision, device: torch.device,
             channels_last: bool = False) -> dict[str, Any]:
    model.eval()
    for batch in loader:
        batch = to_device(batch, device, channels_last)
        with precision.autocast(device):
            evaluator.update(model, batch)
    return evaluator.compute()


def is_improvement(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta
