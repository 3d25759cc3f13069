"""Classification, single- or multi-label, for any plugin whose inputs map to one feature vector.

A domain plugin subclasses ``ClassificationTask`` and supplies data and
predictions; model assembly (backbone + head), loss and metrics live here.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, cast
from collections.abc import Callable, Collection, Sequence

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from .baseline import ClassicalInputs
from .config import JobSpec, ModelSpec
from .engine import to_device
from .errors import ConfigError
from .registry import ParameterGroup
from .task import Context, DataBundle, Evaluator, Task

DEFAULT_METRICS = ["accuracy", "f1_macro", "auroc", "auroc_per_class", "sensitivity", "specificity",
                   "precision_per_class", "recall_per_class", "f1_per_class", "confusion_matrix"]
# Metrics about one class against the rest; the evaluator hands their factories ``positive_class``.
POSITIVE_CLASS_METRICS = frozenset({"sensitivity", "specificity"})


class ClassifierSpec(ModelSpec):
    multilabel: bool = Field(False, description="several labels per sample: sigmoid outputs and BCE loss")
    threshold: float = Field(0.5, gt=0, lt=1, description="decision threshold for binary and multi-label outputs")
    metrics: list[str] = Field(default_factory=lambda: list(DEFAULT_METRICS))
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    positive_class: str | None = Field(None, description="the class sensitivity and specificity are about; null: "
                                                         "for two classes, the one not named like a negative "
                                                         "class (e.g. normal), else asked for")


def _plain(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def resolve_positive_class(spec: ClassifierSpec, class_names: list[str],
                           negative_names: Collection[str] = ()) -> str | None:
    """The class sensitivity and specificity are about: ``model.positive_class``, else for two classes the one
    whose name is not in ``negative_names`` (case and separators ignored: "No Finding" is "no_finding"). None
    when no class is meant (multi-label, or more than two classes, or neither metric requested).

    Guessing by class index would make the sensitivity of a "nodule, normal" task the recall of "normal", so a
    binary task that cannot tell asks, but only when those metrics are requested."""
    chosen = spec.positive_class
    if chosen is not None:
        if spec.multilabel:
            raise ConfigError("model.positive_class applies to single-label classification",
                              where="model.positive_class",
                              fix="drop it: multi-label sensitivity and specificity are averaged over labels")
        if chosen not in class_names:
            close = [c for c in class_names if _plain(c) == _plain(chosen)] or \
                difflib.get_close_matches(chosen, class_names, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"positive class {chosen!r} is not one of the classes: {', '.join(class_names)}",
                              where="model.positive_class",
                              fix=f"{hint}set --set model.positive_class=NAME with one of those names")
        return chosen
    if spec.multilabel or len(class_names) != 2 or not POSITIVE_CLASS_METRICS & set(spec.metrics):
        return None
    negatives = {_plain(n) for n in negative_names}
    candidates = [c for c in class_names if _plain(c) not in negatives]
    if len(candidates) == 1:
        return candidates[0]
    raise ConfigError(f"sensitivity and specificity need a positive class, and the class names "
                      f"{', '.join(class_names)} do not say which it is"
                      + (f" (exactly one would be named like a negative class: {', '.join(sorted(negative_names))})"
                         if negative_names else ""),
                      where="model.positive_class",
                      fix=f"name it: --set model.positive_class=NAME (one of: {', '.join(class_names)}), "
                          "or drop sensitivity and specificity from model.metrics")


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
    """Loss plus registered torchmetrics metrics over probabilities; per-class results keyed by class name.

    A value the split cannot define (the recall of a class it does not contain, AUROC without positives) is
    None (null in metrics.json) with its reason in ``undefined``, and macro averages are over the other
    classes: ``averaged_over`` says how many, ``undefined_classes`` names the classes left out per metric.
    ``negative_names`` are the task's names for a "nothing found" class, which decide the positive class of a
    binary task (see :func:`resolve_positive_class`).

    Probabilities, targets and losses are kept per sample, so that ``resample`` can recompute every metric
    on a bootstrap resample of the split."""

    def __init__(self, job: JobSpec, data: DataBundle, context: Context, negative_names: Collection[str] = ()):
        spec = cast(ClassifierSpec, job.model)
        self.multilabel = spec.multilabel
        self.class_names = data.class_names
        self.positive_class = resolve_positive_class(spec, self.class_names, negative_names)
        n = data.num_outputs
        self.metrics = {}
        for name in spec.metrics:
            factory = context.registry.metrics.get_or_fail(name, where="model.metrics").factory
            about = ({"positive_class": self.class_names.index(self.positive_class)}
                     if self.positive_class is not None and name in POSITIVE_CLASS_METRICS else {})
            self.metrics[name] = factory(num_classes=n, multilabel=self.multilabel, threshold=spec.threshold,
                                         **about)
        self.probs: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        self.losses: list[torch.Tensor] = []
        self._joined: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # the three, concatenated

    def update(self, model: nn.Module, batch: Any) -> None:
        inputs, target = batch
        logits = model(inputs).float()
        self.losses.append(classification_loss_from_logits(logits, target, self.multilabel, per_sample=True).cpu())
        self.probs.append((torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=1)).cpu())
        self.targets.append(target.cpu().long())
        self._joined = None

    def compute(self) -> dict[str, Any]:
        return self._metrics(None)

    def resample(self, indices: Sequence[int]) -> dict[str, Any]:
        return self._metrics(torch.as_tensor(list(indices), dtype=torch.long))

    def _metrics(self, indices: torch.Tensor | None) -> dict[str, Any]:
        if self._joined is None:  # once per split, not once per bootstrap resample
            self._joined = cast(tuple[torch.Tensor, torch.Tensor, torch.Tensor], tuple(
                torch.cat(kept) if kept else torch.empty(0) for kept in (self.probs, self.targets, self.losses)))
        probs, targets, losses = self._joined
        if indices is not None:
            probs, targets, losses = probs[indices], targets[indices], losses[indices]
        out: dict[str, Any] = {"loss": float(losses.mean()) if len(losses) else 0.0}
        if self.positive_class is not None:
            out["positive_class"] = self.positive_class
        undefined: dict[str, list[str]] = {}
        reasons: dict[str, str] = {}
        averaged: dict[str, int] = {}
        for name, metric in self.metrics.items():
            metric.reset()  # reused: building torchmetrics objects afresh would cost more than the resample
            if len(targets):
                metric.update(probs, targets)
            value = metric.compute()
            if isinstance(value, torch.Tensor) and value.dim() == 0:
                out[name] = _number(float(value))
            elif isinstance(value, torch.Tensor) and value.dim() == 1 and len(value) == len(self.class_names):
                out[name] = {c: _number(float(v)) for c, v in zip(self.class_names, value)}
            elif isinstance(value, torch.Tensor):
                out[name] = value.tolist()
            else:
                out[name] = value
            missing = [self.class_names[i] for i in getattr(metric, "undefined", None) or []]
            if missing:
                undefined[name] = missing
                reasons[name] = f"{getattr(metric, 'lacks', 'undefined for')} {', '.join(missing)}"
            if getattr(metric, "averaged_over", None) is not None:
                averaged[name] = metric.averaged_over
        for key, found in (("undefined_classes", undefined), ("undefined", reasons), ("averaged_over", averaged)):
            if found:
                out[key] = found
        return out


def _number(value: float) -> float | None:
    return None if value != value else value  # NaN: undefined, and not valid JSON either


def classification_loss_from_logits(logits: torch.Tensor, target: torch.Tensor, multilabel: bool,
                                    label_smoothing: float = 0.0, per_sample: bool = False) -> torch.Tensor:
    """The mean loss of a batch, or with ``per_sample`` each sample's (multi-label: its mean over labels)."""
    if multilabel:
        losses = F.binary_cross_entropy_with_logits(logits, target.float(), reduction="none").mean(1)
    else:
        losses = F.cross_entropy(logits, target, label_smoothing=label_smoothing, reduction="none")
    return losses if per_sample else losses.mean()


class ClassificationTask(Task):
    """A Task whose model is backbone + head and whose targets are class indices (or multi-hot)."""

    ModelOptions = ClassifierSpec
    # Class names that mean "nothing found" in this domain (compared ignoring case and separators); with two
    # classes, the other one is the positive class by default.
    negative_class_names: frozenset[str] = frozenset()

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
        return ClassificationEvaluator(job, data, context, self.negative_class_names)

    def metric_names(self, job: JobSpec) -> list[str] | None:
        return ["loss", *cast(ClassifierSpec, job.model).metrics]

    def classical_inputs(self, job: JobSpec, data: DataBundle, split: str) -> ClassicalInputs | None:
        """Inputs of ``tlapp compare``'s classical baseline: features that owe nothing to pretraining for the
        training split and for ``split`` (the evaluation split, in its dataset order), for a logistic
        regression; None (the default) offers no baseline. Single-label only."""
        return None

    @staticmethod
    def target_name(target: torch.Tensor, class_names: list[str]) -> str:
        """A target as people read it: its class name, or a multi-hot target's positive classes joined by +
        (for captions, e.g. in ``Task.preview``)."""
        if target.dim() == 0:
            return class_names[int(target)]
        return "+".join(c for c, v in zip(class_names, target.tolist()) if v > 0.5) or "(none)"

    def positive_class(self, job: JobSpec, class_names: list[str]) -> str | None:
        """The class sensitivity and specificity will be about; a ConfigError when it must be named. Call it
        from ``build_data`` so that the question comes before training, not after the first epoch."""
        return resolve_positive_class(cast(ClassifierSpec, job.model), class_names, self.negative_class_names)


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
