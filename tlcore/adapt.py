"""Unsupervised domain adaptation: train on the labelled source data while aligning the model's features on
it with those on the target domain's unlabelled data (``--target-data PATH --set adapt.method=dann|coral``).

Both methods align the backbone's pooled features (``model.backbone(inputs)``, the input of the heads):

- ``dann`` (Ganin et al., 2016, "Domain-Adversarial Training of Neural Networks"): a domain classifier learns to
  tell source features from target features, and a gradient reversal layer between it and the backbone makes
  the backbone learn features it cannot tell apart. The reversal's strength ramps from 0 to 1 over the run as
  ``2 / (1 + exp(-10 p)) - 1`` of the training progress ``p``, as in the paper, so the domain classifier's
  early, noisy gradients do not disturb the backbone.
- ``coral`` (Sun and Saenko, 2016, "Deep CORAL"): the squared Frobenius distance between the source and target
  features' covariances, divided by ``4 d^2``.

The loss of a step is the task's own (``Task.loss_function``) on the source batch plus ``adapt.weight`` times
the alignment loss of one source and one target batch. The source features come from the task loss's own
forward pass (a hook on the backbone); the target batch passes through the backbone once more.

``adapt.target_test`` (``--target-test``) is measured by the engine for every method, ``none`` included, so that
source-only and adapted runs compare on the target domain (see ``tlcore.run.finish``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from .errors import ConfigError
from .methods import MethodOptions, feature_width
from .registry import ParameterGroup
from .unlabelled import FromUnlabelled

if TYPE_CHECKING:
    from .run import Run


class AdaptOptions(MethodOptions):
    weight: float = Field(1.0, ge=0, description="weight of the alignment loss against the task's loss")


class DannOptions(AdaptOptions):
    hidden: int = Field(1024, ge=1, description="width of the domain classifier's two hidden layers")
    ramp: float = Field(10.0, ge=0, description="gamma of the reversal's ramp 2 / (1 + exp(-gamma p)) - 1 over "
                                                "the run's progress p; 0: full strength from the first step")


class GradientReversal(torch.autograd.Function):
    """Identity forward; the gradient backward is multiplied by ``-strength``."""

    @staticmethod
    def forward(ctx, features: torch.Tensor, strength: float) -> torch.Tensor:
        ctx.strength = strength
        return features.view_as(features)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.strength * grad, None


def coral_loss(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Deep CORAL's loss: ``||C_s - C_t||_F^2 / (4 d^2)`` of the two batches' feature covariances."""
    source, target = source.float(), target.float()
    d = source.shape[1]
    return (torch.cov(source.T) - torch.cov(target.T)).pow(2).sum() / (4 * d * d)


class Adaptation(FromUnlabelled):
    """What DANN and CORAL share: the backbone features of a source and a target batch, and their alignment."""

    section = "adapt"
    Options = AdaptOptions
    data_key = "target"
    flag = "--target-data"
    what = "the target domain's unlabelled data"
    report_key = "adaptation"

    def __init__(self, options: AdaptOptions):
        super().__init__(options)
        self.options: AdaptOptions = options

    def setup(self, run: Run, model: nn.Module) -> None:
        super().setup(run, model)
        self.backbone = cast(nn.Module, model.backbone)
        self.width = feature_width(model, run.job, "domain adaptation")

    def loss(self, model: nn.Module, batch: Any, extras: dict[str, Any]) -> tuple[torch.Tensor, int]:
        captured: list[Any] = []
        handle = self.backbone.register_forward_hook(lambda module, inputs, output: captured.append(output))
        try:
            task_loss, n = self._loss(model, batch)
        finally:
            handle.remove()
        if len(captured) != 1 or not isinstance(captured[0], torch.Tensor) or captured[0].dim() != 2:
            raise ConfigError("domain adaptation needs the task's loss to pass the batch through the backbone "
                              "once, to pooled features", where="adapt.method",
                              fix="train this task without adapt.method")
        target_inputs, _hidden = extras["unlabelled"]
        alignment = self.alignment(captured[0], self.backbone(target_inputs))
        self.measure("alignment_loss", float(alignment.detach()), n)
        return task_loss + self.options.weight * alignment, n

    def alignment(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class Dann(Adaptation):
    name = "dann"
    description = ("domain-adversarial training (Ganin et al. 2016): a domain classifier behind gradient "
                   "reversal on the pooled features (--target-data PATH --set adapt.method=dann)")
    Options = DannOptions

    def __init__(self, options: DannOptions):
        super().__init__(options)
        self.options: DannOptions = options
        self.discriminator: nn.Module | None = None

    def setup(self, run: Run, model: nn.Module) -> None:
        super().setup(run, model)
        hidden = self.options.hidden
        # Built from its own seed: the run's random state must not depend on whether it adapts.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.discriminator = nn.Sequential(
                nn.Linear(cast(int, self.width), hidden), nn.ReLU(), nn.Dropout(0.5),
                nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(0.5),
                nn.Linear(hidden, 1))

    def modules(self) -> dict[str, nn.Module]:
        return {"discriminator": self.discriminator} if self.discriminator is not None else {}

    def parameter_groups(self) -> list[ParameterGroup]:
        if self.discriminator is None:
            return []
        return [ParameterGroup("domain_discriminator", [self.discriminator], is_head=True)]

    def strength(self) -> float:
        progress = min(self.steps_done / self.total_steps, 1.0)
        return 2.0 / (1.0 + math.exp(-self.options.ramp * progress)) - 1.0 if self.options.ramp else 1.0

    def alignment(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        assert self.discriminator is not None
        strength = self.strength()
        features = GradientReversal.apply(torch.cat([source, target]), strength)
        logits = self.discriminator(features).float().squeeze(1)
        domain = torch.cat([torch.ones(len(source)), torch.zeros(len(target))]).to(logits.device)
        with torch.no_grad():
            self.measure("domain_accuracy", float(((logits > 0).float() == domain).float().mean()), len(domain))
            self.measure("reversal_strength", strength)
        return F.binary_cross_entropy_with_logits(logits, domain)


class Coral(Adaptation):
    name = "coral"
    description = ("Deep CORAL (Sun and Saenko 2016): match the covariances of source and target pooled features "
                   "(--target-data PATH --set adapt.method=coral)")

    def alignment(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if len(source) < 2 or len(target) < 2:  # a covariance needs two samples
            return source.sum() * 0.0
        return coral_loss(source, target)


ADAPTATION_METHODS = [Dann, Coral]
