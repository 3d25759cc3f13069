"""Classification, single- or multi-label, for any plugin whose inputs map to one feature vector.

A domain plugin subclasses ``ClassificationTask`` and supplies data and
predictions; model assembly (backbone + head), loss and metrics live here.
With ``model.heads`` a job learns several tasks on one backbone: see ``tlcore.multitask``.
"""

from __future__ import annotations

import difflib
import re
from typing import TYPE_CHECKING, Any, ClassVar, cast
from collections.abc import Callable, Collection, Sequence

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from .baseline import ClassicalInputs
from .config import JobSpec, ModelSpec, Section
from .engine import to_device
from .errors import ConfigError
from .registry import ParameterGroup
from .task import Context, DataBundle, Evaluator, Task

if TYPE_CHECKING:
    from .multitask import MultiTaskModel

DEFAULT_METRICS = ["accuracy", "f1_macro", "auroc", "auroc_per_class", "sensitivity", "specificity",
                   "precision_per_class", "recall_per_class", "f1_per_class", "confusion_matrix"]
# Metrics about one class against the rest; the evaluator hands their factories ``positive_class``.
POSITIVE_CLASS_METRICS = frozenset({"sensitivity", "specificity"})


class HeadSpec(Section):
    """One task's head and options under ``model.heads.<task>``; a bare name is short for ``{head: NAME}``.

    An option left out (null) is the top-level ``model`` option of the same name, so ``model.metrics`` or
    ``model.multilabel`` given once apply to every task; ``head_options`` is ``model.head_options`` only when
    the task's head is ``model.head`` (options belong to a head). ``positive_class`` names one of this task's
    classes, so it is never taken from the top level."""

    head: str | None = Field(None, description="registered head name; null: model.head")
    head_options: dict[str, Any] | None = None
    multilabel: bool | None = Field(None, description="several labels per sample in this task's column")
    threshold: float | None = Field(None, gt=0, lt=1)
    metrics: list[str] | None = None
    label_smoothing: float | None = Field(None, ge=0, lt=1)
    positive_class: str | None = Field(None, description="the class this task's sensitivity and specificity are "
                                                         "about; null: as model.positive_class decides for one task")


class ClassifierSpec(ModelSpec):
    multilabel: bool = Field(False, description="several labels per sample: sigmoid outputs and BCE loss")
    threshold: float = Field(0.5, gt=0, lt=1, description="decision threshold for binary and multi-label outputs")
    metrics: list[str] = Field(default_factory=lambda: list(DEFAULT_METRICS))
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    positive_class: str | None = Field(None, description="the class sensitivity and specificity are about; null: "
                                                         "for two classes, the one not named like a negative "
                                                         "class (e.g. normal), else asked for")
    heads: dict[str, HeadSpec] = Field(default_factory=dict,
                                       description="multi-task: one head per task (label column), {task: head name "
                                                   "| {head, head_options, multilabel, threshold, metrics, "
                                                   "label_smoothing, positive_class}}; empty: one task")

    @field_validator("heads", mode="before")
    @classmethod
    def _head_shorthands(cls, value: Any) -> Any:
        """``{finding: linear}`` is ``{finding: {head: linear}}``; a list of task names gives each the top-level
        head; null is no heads."""
        if value is None:
            return {}
        if isinstance(value, list):
            return {name: {} for name in value}
        if isinstance(value, dict):
            return {name: ({"head": spec} if isinstance(spec, str) else {} if spec is None else spec)
                    for name, spec in value.items()}
        return value


def plain_name(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def did_you_mean(name: str, names: Sequence[str]) -> str:
    """``did you mean 'X'? `` for the name in ``names`` closest to ``name`` (case and separators ignored first:
    "no finding" is "No_Finding"), or nothing when none is close: the start of a message's fix."""
    close = [n for n in names if plain_name(n) == plain_name(name)] or difflib.get_close_matches(name, list(names), n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def resolve_positive_class(spec: ClassifierSpec, class_names: list[str],
                           negative_names: Collection[str] = (), where: str = "model") -> str | None:
    """The class sensitivity and specificity are about: ``model.positive_class``, else for two classes the one
    whose name is not in ``negative_names`` (case and separators ignored: "No Finding" is "no_finding"). None
    when no class is meant (multi-label, or more than two classes, or neither metric requested).

    Guessing by class index would make the sensitivity of a "nodule, normal" task the recall of "normal", so a
    binary task that cannot tell asks, but only when those metrics are requested. ``where`` is the spec
    section messages name (``model.heads.<task>`` for one task of a multi-task job)."""
    chosen = spec.positive_class
    option = f"{where}.positive_class"
    if chosen is not None:
        if spec.multilabel:
            raise ConfigError(f"{option} applies to single-label classification", where=option,
                              fix="drop it: multi-label sensitivity and specificity are averaged over labels")
        if chosen not in class_names:
            raise ConfigError(f"positive class {chosen!r} is not one of the classes: {', '.join(class_names)}",
                              where=option,
                              fix=f"{did_you_mean(chosen, class_names)}set --set {option}=NAME with one of those names")
        return chosen
    if spec.multilabel or len(class_names) != 2 or not POSITIVE_CLASS_METRICS & set(spec.metrics):
        return None
    negatives = {plain_name(n) for n in negative_names}
    candidates = [c for c in class_names if plain_name(c) not in negatives]
    if len(candidates) == 1:
        return candidates[0]
    raise ConfigError(f"sensitivity and specificity need a positive class, and the class names "
                      f"{', '.join(class_names)} do not say which it is"
                      + (f" (exactly one would be named like a negative class: {', '.join(sorted(negative_names))})"
                         if negative_names else ""),
                      where=option,
                      fix=f"name it: --set {option}=NAME (one of: {', '.join(class_names)}), "
                          f"or drop sensitivity and specificity from {where}.metrics")


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


def build_classifier(job: JobSpec, num_outputs: int | dict[str, int],
                     context: Context) -> ClassificationModel | MultiTaskModel:
    """Backbone plus head with random weights; with ``model.heads``, one head per task (``num_outputs`` then
    maps each task to its number of outputs, as the task's DataBundle does)."""
    if getattr(job.model, "heads", None) or isinstance(num_outputs, dict):
        from .multitask import build_multitask_classifier

        return build_multitask_classifier(job, num_outputs, context)
    module = build_backbone(job, context)
    head_entry = context.registry.heads.get_or_fail(job.model.head, where="model.head")
    try:
        head = head_entry.factory(module.num_features, num_outputs, **job.model.head_options)
    except TypeError as exc:
        raise ConfigError(f"bad model.head_options for head {job.model.head!r}: {exc}",
                          where="model.head_options") from None
    return ClassificationModel(module, head, context.registry.backbones[job.model.backbone].parameter_groups)


def build_backbone(job: JobSpec, context: Context) -> nn.Module:
    """``model.backbone`` built with ``model.backbone_options``, random weights."""
    backbone = context.registry.backbones.get_or_fail(job.model.backbone, where="model.backbone")
    try:
        return backbone.build(**job.model.backbone_options)
    except TypeError as exc:
        raise ConfigError(f"bad model.backbone_options for {backbone.name}: {exc}",
                          where="model.backbone_options") from None


class ClassificationEvaluator(Evaluator):
    """Loss plus registered torchmetrics metrics over probabilities; per-class results keyed by class name.

    A value the split cannot define (the recall of a class it does not contain, AUROC without positives) is
    None (null in metrics.json) with its reason in ``undefined``, and macro averages are over the other
    classes: ``averaged_over`` says how many, ``undefined_classes`` names the classes left out per metric.
    ``negative_names`` are the task's names for a "nothing found" class, which decide the positive class of a
    binary task (see :func:`resolve_positive_class`).

    Probabilities, targets and losses are kept per sample, so that ``resample`` can recompute every metric
    on a bootstrap resample of the split. ``where`` is the spec section messages name (``model.heads.<task>``
    when the evaluator measures one task of a multi-task job, see ``tlcore.multitask``)."""

    def __init__(self, job: JobSpec, data: DataBundle, context: Context, negative_names: Collection[str] = (),
                 where: str = "model"):
        spec = cast(ClassifierSpec, job.model)
        self.multilabel = spec.multilabel
        self.class_names = cast(list[str], data.class_names)
        self.positive_class = resolve_positive_class(spec, self.class_names, negative_names, where)
        n = data.num_outputs
        self.metrics = {}
        for name in spec.metrics:
            factory = context.registry.metrics.get_or_fail(name, where=f"{where}.metrics").factory
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
        self.add(model(inputs).float(), target)

    def add(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Take a batch's logits (float) and targets."""
        self.losses.append(classification_loss_from_logits(logits, target, self.multilabel, per_sample=True).cpu())
        self.probs.append(probabilities(logits, self.multilabel))
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
            if not len(targets):  # e.g. a task none of the split's samples is labelled for
                out[name] = None
                reasons[name] = "no labelled samples in this split"
                continue
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
    # True once the task's build_data can yield one target per task (see tlcore.multitask for the contract);
    # a task without it refuses model.heads before any data is read.
    supports_multitask: ClassVar[bool] = False

    def build_model(self, job: JobSpec, num_outputs: int | dict[str, int], context: Context) -> nn.Module:
        return build_classifier(job, num_outputs, context)

    def loss_function(self, job: JobSpec) -> Callable[[nn.Module, Any], tuple[torch.Tensor, int]]:
        if self.task_specs(job):
            from .multitask import multitask_loss

            return multitask_loss(job)
        spec = cast(ClassifierSpec, job.model)
        multilabel, smoothing = spec.multilabel, spec.label_smoothing

        def loss(model: nn.Module, batch: Any) -> tuple[torch.Tensor, int]:
            inputs, target = batch
            return classification_loss_from_logits(model(inputs).float(), target, multilabel, smoothing), len(target)

        return loss

    def evaluator(self, job: JobSpec, data: DataBundle, context: Context) -> Evaluator:
        if self.task_specs(job) or isinstance(data.class_names, dict):
            from .multitask import MultiTaskEvaluator

            return MultiTaskEvaluator(job, data, context, self.negative_class_names)
        return ClassificationEvaluator(job, data, context, self.negative_class_names)

    def metric_names(self, job: JobSpec) -> list[str] | None:
        """``loss`` and ``model.metrics``; for a multi-task job also each task's as ``<task>.<metric>``."""
        specs = self.task_specs(job)
        if specs:
            from .multitask import multitask_metric_names

            return multitask_metric_names(specs)
        return ["loss", *cast(ClassifierSpec, job.model).metrics]

    def task_specs(self, job: JobSpec, columns: Sequence[str] | None = None,
                   where: str = "data.label_columns") -> dict[str, ClassifierSpec]:
        """Each task's options as a single-task spec (``model.heads`` with the top-level fallbacks), by task;
        empty for a single-task job. A ConfigError for ``model.heads`` on a task that does not support them,
        and for task names that are misspelt; given the data's label ``columns`` (named by the option
        ``where``), ``model.heads`` must name exactly those. See ``tlcore.multitask.task_specs``."""
        from .multitask import task_specs

        if (getattr(job.model, "heads", None) or getattr(job.data, "label_columns", None)) \
                and not self.supports_multitask:
            raise ConfigError(f"task {self.name!r} does not offer multi-task learning: it reads one label per "
                              "sample", where="model.heads",
                              fix="drop model.heads (and train.task_weights) to train its single task")
        return task_specs(job, columns, where)

    def check_tasks(self, job: JobSpec, tasks: Sequence[Any], train_targets: Any) -> dict[str, int]:
        """Call from ``build_data`` of a multi-task job: every task has classes and labelled training samples,
        and its positive class is known. Returns the labelled training samples per task (for the data
        summary). See ``tlcore.multitask.check_tasks``."""
        from .multitask import check_tasks

        return check_tasks(job, tasks, train_targets, self.negative_class_names)

    def classical_inputs(self, job: JobSpec, data: DataBundle, split: str) -> ClassicalInputs | None:
        """Inputs of ``tlapp compare``'s classical baseline: features that owe nothing to pretraining for the
        training split and for ``split`` (the evaluation split, in its dataset order), for a logistic
        regression; None (the default) offers no baseline. Single-label only."""
        return None

    @staticmethod
    def target_name(target: torch.Tensor | dict[str, torch.Tensor],
                    class_names: list[str] | dict[str, list[str]]) -> str:
        """A target as people read it: its class name, or a multi-hot target's positive classes joined by +
        (for captions, e.g. in ``Task.preview``); a multi-task target (one sample's dict) as ``task: name``
        per task, ``-`` where the sample has no label for the task."""
        if isinstance(target, dict):
            from .multitask import MISSING

            names = cast(dict[str, list[str]], class_names)
            return ", ".join(f"{task}: " + ("-" if bool((t == MISSING).all()) else
                                            ClassificationTask.target_name(t, names[task]))
                             for task, t in target.items())
        names_of = cast(list[str], class_names)
        if target.dim() == 0:
            return names_of[int(target)]
        return "+".join(c for c, v in zip(names_of, target.tolist()) if v > 0.5) or "(none)"

    def positive_class(self, job: JobSpec, class_names: list[str]) -> str | None:
        """The class sensitivity and specificity will be about; a ConfigError when it must be named. Call it
        from ``build_data`` so that the question comes before training, not after the first epoch."""
        return resolve_positive_class(cast(ClassifierSpec, job.model), class_names, self.negative_class_names)


@torch.no_grad()
def batch_outputs(model: nn.Module, loader, device: torch.device, precision=None):
    """The model's outputs (logits, or a multi-task model's dict of them) for each batch of inputs ``loader``
    yields, in evaluation mode, without gradients, under ``precision``'s autocast when given."""
    model.eval()
    for inputs in loader:
        inputs = to_device(inputs, device)
        if precision is not None:
            with precision.autocast(device):
                yield model(inputs)
        else:
            yield model(inputs)


def probabilities(logits: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """Sigmoid per label for multi-label outputs, else softmax over the classes; float, on the CPU."""
    logits = logits.float()
    return (torch.sigmoid(logits) if multilabel else torch.softmax(logits, 1)).cpu()


def predict_probabilities(model: nn.Module, loader, device: torch.device, multilabel: bool,
                          precision=None) -> torch.Tensor:
    out = [probabilities(logits, multilabel) for logits in batch_outputs(model, loader, device, precision)]
    return torch.cat(out) if out else torch.empty(0)
