"""Learning-rate range test: raise the rate exponentially over a few hundred steps, record the loss,
suggest a rate, and put the weights back as they were."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.optim.lr_scheduler import ExponentialLR

from .engine import to_device
from .strategies import apply_phase, optimizer_groups, set_train_mode


@dataclass
class RangeTest:
    lrs: list[float]
    losses: list[float]
    suggestion: float | None
    stopped: str

    def as_dict(self) -> dict[str, Any]:
        return {"lrs": self.lrs, "losses": self.losses, "suggested_lr": self.suggestion, "stopped": self.stopped}


def range_test(model, loss_fn, loader, groups, phase, train_spec, precision, device, *, start_lr: float = 1e-7,
               end_lr: float = 1.0, steps: int = 100, smoothing: float = 0.05, diverge: float = 4.0) -> RangeTest:
    """Exponential sweep of the base rate (each group keeps its phase multiplier); weights restored after."""
    from .schedule import make_optimizer

    saved = copy.deepcopy(model.state_dict())
    saved_grad = {n: p.requires_grad for n, p in model.named_parameters()}
    try:
        apply_phase(model, groups, phase)
        optimizer = make_optimizer(optimizer_groups(groups, phase, start_lr), train_spec)
        gamma = (end_lr / start_lr) ** (1.0 / max(steps - 1, 1))
        sweep = ExponentialLR(optimizer, gamma=gamma)
        set_train_mode(model, groups, phase)
        lrs, losses, smooth, best, stopped = [], [], 0.0, math.inf, "end of sweep"
        batches = iter(loader)
        for step in range(steps):
            try:
                batch = next(batches)
            except StopIteration:
                batches = iter(loader)
                batch = next(batches)
            batch = to_device(batch, device)
            with precision.autocast(device):
                loss, _ = loss_fn(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = loss.item()
            if not math.isfinite(value):
                stopped = f"loss not finite at lr {start_lr * gamma**step:.3g}"
                break
            smooth = smoothing * value + (1 - smoothing) * smooth
            # Bias correction as in Adam: the average starts at zero, so early points would be pulled down.
            corrected = smooth / (1 - (1 - smoothing) ** (step + 1))
            lrs.append(start_lr * gamma**step)  # the base rate; each group runs at base times its multiplier
            losses.append(corrected)
            best = min(best, corrected)
            if corrected > diverge * best and step > 5:
                stopped = f"loss diverged ({diverge}x its minimum)"
                break
            sweep.step()
    finally:
        model.load_state_dict(saved)
        for n, p in model.named_parameters():
            p.requires_grad_(saved_grad[n])
    return RangeTest(lrs, losses, suggest(lrs, losses), stopped)


def suggest(lrs: list[float], losses: list[float]) -> float | None:
    """A tenth of the rate at the loss minimum: past the minimum training diverges, and a tenth of it
    sits on the falling slope while staying clear of the noisy start (fastai's ``lr_min`` rule)."""
    if len(lrs) < 5:
        return None
    best = int(np.argmin(np.asarray(losses)))
    if best == 0:
        return None
    return float(lrs[best] / 10)


def plot(result: RangeTest, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(result.lrs, result.losses)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (smoothed)")
    if result.suggestion:
        ax.axvline(result.suggestion, color="tab:red", linestyle="--", label=f"suggested {result.suggestion:.2g}")
        ax.legend()
    ax.set_title("learning-rate range test")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
