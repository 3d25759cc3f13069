"""Semi-supervised fine-tuning: the labelled data trains as usual, and confident predictions on an unlabelled pool
of the same domain train as labels too (``--unlabelled-data PATH --set semi.method=pseudo-label|fixmatch``).

- ``pseudo-label`` (Lee, 2013, with a confidence threshold): the model's own prediction on an unlabelled sample
  (under the training augmentation) is its label when its probability reaches ``semi.threshold``.
- ``fixmatch`` (Sohn et al., 2020): the prediction on a weakly augmented view, when confident, is the label of
  a strongly augmented view of the same sample (the plugin supplies both views, see ``Task.unlabelled_data``).

The loss of a step is the task's loss on the labelled batch plus ``semi.weight`` times the mean, over the
unlabelled batch (``semi.ratio`` unlabelled samples per labelled one), of the cross-entropy to the pseudo-labels,
zero for samples below the threshold. Each epoch records the share of unlabelled samples above the threshold
and, where the pool's files carry labels the run never trains on, how many of those pseudo-labels are right.
Single-label classification only: a multi-label or multi-task job is refused before any data is read.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from . import config as cfg
from .classification import ClassifierSpec
from .errors import ConfigError
from .methods import MethodOptions
from .multitask import MISSING
from .task import Task
from .unlabelled import FromUnlabelled


class SemiOptions(MethodOptions):
    threshold: float = Field(0.95, gt=0, le=1, description="the probability a prediction needs to become a "
                                                           "pseudo-label")
    ratio: int = Field(2, ge=1, description="unlabelled samples per labelled sample in a step (FixMatch's mu; "
                                            "the paper uses 7 on GPUs)")
    weight: float = Field(1.0, ge=0, description="weight of the unlabelled loss (FixMatch's lambda_u)")


class SemiSupervised(FromUnlabelled):
    """What pseudo-labelling and FixMatch share: the checks, the pseudo-labels and their measurements."""

    section = "semi"
    Options = SemiOptions
    data_key = "unlabelled"
    flag = "--unlabelled-data"
    what = "the unlabelled data"
    report_key = "semi_supervised"

    def __init__(self, options: SemiOptions):
        super().__init__(options)
        self.options: SemiOptions = options
        self.pseudo_labels = 0  # confident unlabelled samples this epoch

    def check(self, job: cfg.JobSpec, task: Task) -> None:
        super().check(job, task)
        spec = cast(ClassifierSpec, job.model)
        if spec.heads or getattr(job.data, "label_columns", None) or spec.multilabel:
            raise ConfigError(f"semi.method {self.name} pseudo-labels one class per sample; this job is "
                              + ("multi-label" if spec.multilabel else "multi-task"), where="semi.method",
                              fix="train it without semi.method, or as a single-label, single-task job")

    def batch_ratio(self) -> int:
        return self.options.ratio

    def loss(self, model: nn.Module, batch: Any, extras: dict[str, Any]) -> tuple[torch.Tensor, int]:
        task_loss, n = self._loss(model, batch)
        inputs, hidden = extras["unlabelled"]
        guess, trained = self.views_of(model, inputs)
        with torch.no_grad():
            confidence, pseudo = torch.softmax(guess.float(), 1).max(1)
            confident = confidence >= self.options.threshold
        per_sample = F.cross_entropy(trained.float(), pseudo, reduction="none")
        unlabelled_loss = (per_sample * confident).mean()
        self._measure(confident, pseudo, hidden, float(unlabelled_loss.detach()))
        return task_loss + self.options.weight * unlabelled_loss, n

    def views_of(self, model: nn.Module, inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits that make the pseudo-labels (no gradient needed) and the logits trained towards them."""
        raise NotImplementedError

    def _measure(self, confident: torch.Tensor, pseudo: torch.Tensor, hidden: torch.Tensor, loss: float) -> None:
        count = len(confident)
        self.measure("unlabelled_loss", loss, count)
        self.measure("pseudo_label_rate", float(confident.float().mean()), count)
        known = confident & (hidden != MISSING)
        if bool(known.any()):
            right = (pseudo[known] == hidden[known]).float()
            self.measure("pseudo_label_accuracy", float(right.mean()), int(known.sum()))
        self.pseudo_labels += int(confident.sum())

    def epoch_summary(self) -> dict[str, Any]:
        out = super().epoch_summary()
        out["pseudo_labels"], self.pseudo_labels = self.pseudo_labels, 0
        out.setdefault("pseudo_label_accuracy", None)  # no pseudo-label had a hidden label to check it against
        return out


class PseudoLabel(SemiSupervised):
    name = "pseudo-label"
    description = ("the model's confident predictions on unlabelled data train as labels (--unlabelled-data PATH "
                   "--set semi.method=pseudo-label)")

    def views_of(self, model: nn.Module, inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(inputs)
        return logits.detach(), logits


class FixMatch(SemiSupervised):
    name = "fixmatch"
    description = ("FixMatch (Sohn et al. 2020): a confident prediction on a weak view labels a strong view of "
                   "the same unlabelled sample (--unlabelled-data PATH --set semi.method=fixmatch)")
    views = 2

    def views_of(self, model: nn.Module, inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        weak, strong = inputs
        with torch.no_grad():
            guess = model(weak)
        return guess, model(strong)


SEMI_SUPERVISED_METHODS = [PseudoLabel, FixMatch]

