"""The training budget: how many epochs, at which batch size, for the training set the run was given.

A recipe meant for thousands of samples takes a handful of optimizer steps on a few dozen, and stops before
the model has learned. Two settings let a budget follow the data:

* ``train.min_batches``: a training set smaller than ``min_batches`` batches trains at batch size
  ``samples // min_batches`` (at least 1), so that one epoch still takes that many steps.
* ``train.epochs: auto``: ``ceil(min_steps / steps per epoch)`` epochs, clamped to
  ``[min_epochs, max_epochs]``, where steps per epoch are the optimizer steps of the real training loader
  (its batches over ``grad_accum``).

Both are resolved once, when the data is built, recorded in ``metrics.json`` (``budget``) and in every
checkpoint; a resumed run continues with its recorded budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from .config import TrainSpec


@dataclass(frozen=True)
class Budget:
    epochs: int
    rule: str  # how ``epochs`` was chosen
    batch_size: int  # of the training loader
    batch_rule: str  # how ``batch_size`` was chosen
    steps_per_epoch: int  # optimizer steps
    train_samples: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (f"{self.epochs} epochs of {self.steps_per_epoch} optimizer steps at batch size {self.batch_size} "
                f"({self.train_samples} training samples); epochs: {self.rule}; batch size: {self.batch_rule}")


def batch_size_for(train: TrainSpec, samples: int) -> tuple[int, str]:
    """``train.batch_size``, lowered on a training set smaller than ``train.min_batches`` batches, and the rule
    that gave it."""
    if train.min_batches is None or samples >= train.min_batches * train.batch_size:
        return train.batch_size, f"train.batch_size {train.batch_size}"
    return max(1, samples // train.min_batches), (
        f"{samples} samples // train.min_batches {train.min_batches}, as they are fewer than "
        f"{train.min_batches} x train.batch_size {train.batch_size}")


def epochs_for(train: TrainSpec, steps_per_epoch: int) -> tuple[int, str]:
    """The number of epochs and the rule that gave it."""
    if train.epochs != "auto":
        return train.epochs, f"train.epochs {train.epochs}"
    wanted = math.ceil(train.min_steps / max(1, steps_per_epoch))
    epochs = min(max(wanted, train.min_epochs), train.max_epochs)
    return epochs, (f"auto: min_steps {train.min_steps} / {steps_per_epoch} steps per epoch, clamped to "
                    f"[{train.min_epochs}, {train.max_epochs}]")


def plan_budget(train: TrainSpec, samples: int, batches_per_epoch: Callable[[int], int]) -> Budget:
    """The budget of a new run; ``batches_per_epoch(batch_size)`` is the length of the real training loader."""
    batch_size, batch_rule = batch_size_for(train, samples)
    steps = math.ceil(batches_per_epoch(batch_size) / train.grad_accum)
    epochs, rule = epochs_for(train, steps)
    return Budget(epochs=epochs, rule=rule, batch_size=batch_size, batch_rule=batch_rule, steps_per_epoch=steps,
                  train_samples=samples)


def resumed_budget(train: TrainSpec, recorded: dict[str, Any]) -> Budget:
    """The budget a resumed run continues with: the one it recorded, with more epochs when a whole number
    of epochs was asked for (``--resume`` lets ``train.epochs`` grow, never shrink)."""
    budget = Budget(**{k: recorded[k] for k in Budget.__dataclass_fields__})
    if train.epochs == "auto" or train.epochs == budget.epochs:
        return budget
    return replace(budget, epochs=train.epochs, rule=f"train.epochs {train.epochs} on resume (was {budget.rule})")


def recorded_budget(resumed: dict[str, Any] | None) -> dict[str, Any] | None:
    """The budget a checkpoint recorded; None for checkpoints written before budgets were."""
    recorded = resumed.get("budget") if resumed is not None else None
    if isinstance(recorded, dict) and all(k in recorded for k in Budget.__dataclass_fields__):
        return recorded
    return None
