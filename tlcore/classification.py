"""Classification, single- or multi-label, for any plugin whose inputs map to one feature vector.

A domain plugin subclasses ``ClassificationTask`` and supplies data and
predictions; model assembly (backbone + head), loss and metrics live here.
"""

from __future__ import annotations

from typing import Any, cast
from collections.abc import Callable

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from .config import JobSpec, ModelSpec
from .engine import to_device
from .errors import ConfigError
from .registry import ParameterGroup
from .task import Context, DataBundle, Evaluator, Task

DEFAULT_METRICS = ["accuracy", "f1_macro", "auroc", "auroc_per_class", "sensitivity", "specificity",
                   "precision_per_class", "recall_per_class", "f1_per_class", "confusion_matrix"]


class ClassifierSpec(ModelSpec):
    multilabel: bool = Field(False, description="several labels per sample: sigmoid outputs and BCE loss")
    threshold: float = Field(0.5, gt=0, lt=1, description="decision threshold for binary and multi-label outputs")
    metrics: list[str] = Field(default_factory=lambda: list(DEFAULT_METRICS))
    label_smoothing: float = Field(0.0, ge=0, lt=1)


class ClassificationModel(nn.Module):
    """backbone (inputs -> features) then head (features -> logits), with parameter groups for strategies."""

    supports_feature_cache = True

    def __init__(self, backbone: nn.Module, head: nn.Module,
                 backbone_groups: Callable[[nn.Module], list[ParameterGroup]]):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self._backbone_groups = backbone_groups

    def forward(self, inputs: Any) -> torch.Tensor:
        return self.head(self.backbone(inputs))

    def parameter_groups(self) -> list[ParameterGroup]:
        return [*self._backbone_groups(self.backbone), ParameterGroup("head", [self.head], is_head=True)]


def build_classifier(job: JobSpec, num_outputs: int, context: Context) -> ClassificationModel:
    backbone = context.registry.backbones.get_or_fail(job.model.backbone, where="model.backbone")
    try:
        module = backbone.build(**job.model.backbone_options)
    except TypeError as exc:
        raise ConfigError(f"bad model.backbone_options for {backbone.name}: {exc}",
                          where="model.backbone_options") from None
    head_entry = context.registry.heads.get_or_fail(job.model.head, where="model.head")
    try:
        head = head_entry.factory(module.num_features, num_outputs, **job.model.head_options)
    except TypeError as exc:
        raise ConfigError(f"bad model.head_options for head {job.model.head!r}: {exc}",
                          where="model.head_options") from None
    return ClassificationModel(module, head, backbone.parameter_groups)


class ClassificationEvaluator(Evaluator):
    """Loss plus registered torchmetrics metrics over probabilities; per-class results keyed by class name."""

    def __init__(self, job: JobSpec, data: DataBundle, context: Context):
        spec = cast(ClassifierSpec, job.model)
        self.multilabel = spec.multilabel
        self.class_names = data.class_names
        n = data.num_outputs
        self.metrics = {
            name: context.registry.metrics.get_or_fail(name, where="model.metrics").factory(
                num_classes=n, multilabel=self.multilabel, threshold=spec.threshold)
            for name in spec.metrics
        }
        self.loss_sum, self.count = 0.0, 0

    def update(self, model: nn.Module, batch: Any) -> None:
        inputs, target = batch
        logits = model(inputs).float()
        self.loss_sum += classification_loss_from_logits(logits, target, self.multilabel).item() * len(target)
        self.count += len(target)
        probs = (torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=1)).cpu()
        target = target.cpu().long()
        for metric in self.metrics.values():
            metric.update(probs, target)

    def compute(self) -> dict[str, Any]:
        out: dict[str, Any] = {"loss": self.loss_sum / max(self.count, 1)}
        for name, metric in self.metrics.items():
            value = metric.compute()
            if isinstance(value, torch.Tensor) and value.dim() == 0:
                out[name] = float(value)
            elif isinstance(value, torch.Tensor) and value.dim() == 1 and len(value) == len(self.class_names):
                out[name] = {c: float(v) for c, v in zip(self.class_names, value)}
            elif isinstance(value, torch.Tensor):
                out[name] = value.tolist()
            else:
                out[name] = value
        return out


def classification_loss_from_logits(logits: torch.Tensor, target: torch.Tensor, multilabel: bool,
                                    label_smoothing: float = 0.0) -> torch.Tensor:
    if multilabel:
        return F.binary_cross_entropy_with_logits(logits, target.float())
    return F.cross_entropy(logits, target, label_smoothing=label_smoothing)


class ClassificationTask(Task):
    """A Task whose model is backbone + head and whose targets are class indices (or multi-hot)."""

    ModelOptions = ClassifierSpec

    def build_model(self, job: JobSpec, num_outputs: int, context: Context) -> nn.Module:
        return build_classifier(job, num_outputs, context)

    def loss_function(self, job: JobSpec) -> Callable[[nn.Module, Any], tuple[torch.Tensor, int]]:
        spec = cast(ClassifierSpec, job.model)
        multilabel, smoothing = spec.multilabel, spec.label_smoothing

        def loss(model: nn.Module, batch: Any) -> tuple[torch.Tensor, int]:
            inputs, target = batch
            return classification_loss_from_logits(model(inputs).float(), target, multilabel, smoothing), len(target)

        return loss

    def evaluator(self, job: JobSpec, data: DataBundle, context: Context) -> Evaluator:
        return ClassificationEvaluator(job, data, context)


@torch.no_grad()
def predict_probabilities(model: nn.Module, loader, device: torch.device, multilabel: bool,
                          precision=None) -> torch.Tensor:
    model.eval()
    out = []
    for inputs in loader:
        inputs = to_device(inputs, device)
        if precision is not None:
            with precision.autocast(device):
                logits = model(inputs).float()
        else:
            logits = model(inputs).float()
        out.append((torch.sigmoid(logits) if multilabel else torch.softmax(logits, 1)).cpu())
    return torch.cat(out) if out else torch.empty(0)
