"""Multi-task classification: one shared backbone, one head per task, the tasks' losses combined.

A task here is one label column of the data (a manifest's ``finding`` and ``view``), single-label or
multi-label; every task trains through the same engine, strategies and metrics as a single-task job.

The job spec
    ``data.label_columns``    the tasks, one per label column (the plugin's option); null: one task, as before,
                              and nothing in this module is used.
    ``model.heads``           {task: head name | {head, head_options, multilabel, threshold, metrics,
                              label_smoothing, positive_class}} (``tlcore.HeadSpec``); an option left out is
                              the top-level ``model`` option of that name. Empty (the default): every label
                              column a task with the top-level head and options.
    ``train.task_weighting``  ``fixed``: the loss is sum_t w_t L_t with ``train.task_weights`` (1 for a task
                              not named); ``uncertainty``: the weights are learned (see ``UncertaintyWeighting``).
    ``train.monitor``         a metric's mean over the tasks (``auroc``) or one task's (``finding.auroc``).

A plugin's side (its ``ClassificationTask`` subclass sets ``supports_multitask = True``), in ``build_data``::

    specs = self.task_specs(job, job.data.label_columns)  # model.heads must name exactly these columns
    tasks = [TaskLabels(name, class_names_of(name), specs[name].multilabel) for name in specs]
    # one sample: its raw cells, None or "" (an empty CSV cell, a missing JSONL key) where it has no label;
    # a multi-label cell as the list of its labels
    target = multitask_targets(tasks, {name: row.get(name) for name in specs}, where=f"{manifest} row {i}")
    self.check_tasks(job, tasks, train_targets)  # classes, a labelled training sample per task, positive classes
    DataBundle(..., num_outputs={t.name: t.num_outputs for t in tasks},
               class_names={t.name: t.class_names for t in tasks})

and in ``predict`` (``class_names`` is then the dict the bundle had)::

    specs = self.task_specs(job)
    probabilities = predict_task_probabilities(model, loader, context.device, specs)
    for item, found in zip(items, task_predictions(specs, class_names, probabilities)):
        record = {"file": ..., "predictions": found}; row = {"file": ..., **prediction_columns(found)}

Batches are ``(inputs, targets)``, ``targets`` a dict task -> tensor, which the default collate function
builds from per-sample dicts (a task's own collate function must keep them): single-label a LongTensor (B,)
holding ``MISSING`` (-1) where a sample has no label for the task, multi-label a FloatTensor (B, C) whose row is
all ``MISSING`` there. A sample without a task's label is left out of that task's loss and metrics only; the
samples of a batch count in ``train_loss`` whatever they are labelled for.

The core's side: ``ClassificationTask`` builds a ``MultiTaskModel`` (``head`` is ``TaskHeads``, features ->
{task: logits}, so head-only phases train on cached features as for one task), its loss is
``multitask_loss`` and its evaluator ``MultiTaskEvaluator``. Parameter groups are the backbone's, then
``head.<task>`` per task and, under uncertainty weighting, ``task_weights``, all heads (``is_head``), so every
strategy trains and verifies them as it does one head. ``metrics.json`` holds each task's metrics under its
name (``metrics.finding.auroc``, intervals beside them as ``metrics.finding.auroc_ci``), the mean over the tasks
at the top (``metrics.auroc``; ``metrics.loss`` is sum_t w_t L_t with the fixed weights, 1 each under
uncertainty weighting, so that it stays comparable from epoch to epoch) and the task names under
``metrics.tasks``; the history's ``val`` and the log name a task's as ``finding.auroc``. Checkpoints keep the
dicts of class names and outputs, from which ``load_run`` rebuilds the model.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from .classification import (ClassificationEvaluator, ClassifierSpec, HeadSpec, batch_outputs, build_backbone,
                             did_you_mean, probabilities,
                             resolve_positive_class)
from .config import JobSpec
from .errors import ConfigError, DataError, PluginError
from .intervals import ABOUT_METRICS, is_number
from .registry import ParameterGroup
from .task import Context, DataBundle, Evaluator

MISSING = -1  # a target's value where the sample has no label for that task
# Keys of a multi-task metrics dict that a task may not be named: they hold the means and what describes them.
RESERVED_NAMES = frozenset({"loss", "tasks", "positive_class"}) | ABOUT_METRICS


# ---------------------------------------------------------------- the spec

def task_specs(job: JobSpec, columns: Sequence[str] | None = None,
               where: str = "data.label_columns") -> dict[str, ClassifierSpec]:
    """Each task's options as a single-task ``ClassifierSpec`` (``model.heads.<task>`` over the top-level
    ``model`` options, ``heads`` empty), in the order of ``columns`` (default: ``data.label_columns``, the
    option's name in every plugin that offers it) if given, else of ``model.heads``; columns without
    ``model.heads`` are tasks with the top-level head and options. Empty for a single-task job. ConfigErrors
    for what the job gets wrong: a task name a metrics dict cannot hold,
    ``train.task_weights`` naming a task there is not, and given the data's label ``columns`` (the option
    ``where``), ``model.heads`` not naming exactly those (with the name probably meant)."""
    spec = cast(ClassifierSpec, job.model)
    heads: dict[str, HeadSpec] = getattr(spec, "heads", None) or {}
    train = job.train
    if columns is None:
        columns = getattr(job.data, "label_columns", None)  # the plugins' name for the option, by convention
    if not heads and columns is not None:
        # Label columns without model.heads: every column a task with the top-level model options.
        heads = {name: HeadSpec() for name in columns}
    if not heads:
        if train.task_weights or train.task_weighting != "fixed":
            option = "train.task_weights" if train.task_weights else "train.task_weighting"
            raise ConfigError(f"{option} weighs the tasks of a multi-task job, and this job has one task",
                              where=option, fix="drop it, or declare the tasks in model.heads")
        return {}
    if spec.positive_class is not None:
        raise ConfigError("model.positive_class names a class of one task, and model.heads declares the tasks",
                          where="model.positive_class",
                          fix="name it per task: --set model.heads.TASK.positive_class=NAME")
    for name in heads:
        _check_task_name(name, spec)
    order = list(heads)
    if columns is not None:
        _check_same_tasks(list(heads), list(columns), where)
        order = list(columns)
    for name in train.task_weights:
        if name not in heads:
            raise ConfigError(f"train.task_weights names task {name!r}, which model.heads does not declare",
                              where="train.task_weights", fix=did_you_mean(name, order)
                              + f"the tasks: {', '.join(order)}")
    if train.task_weighting == "uncertainty" and train.task_weights:
        raise ConfigError("train.task_weights are fixed weights, and train.task_weighting uncertainty learns them",
                          where="train.task_weights",
                          fix="drop train.task_weights, or set train.task_weighting=fixed")
    return {name: _task_spec(spec, heads[name]) for name in order}


def _task_spec(spec: ClassifierSpec, head: HeadSpec) -> ClassifierSpec:
    name = head.head if head.head is not None else spec.head
    options = head.head_options if head.head_options is not None else (
        spec.head_options if name == spec.head else {})

    def given(value: Any, fallback: Any) -> Any:
        return fallback if value is None else value

    return spec.model_copy(update={
        "head": name, "head_options": dict(options), "heads": {},
        "multilabel": given(head.multilabel, spec.multilabel), "threshold": given(head.threshold, spec.threshold),
        "metrics": list(given(head.metrics, spec.metrics)),
        "label_smoothing": given(head.label_smoothing, spec.label_smoothing),
        "positive_class": head.positive_class})


def _check_task_name(name: str, spec: ClassifierSpec) -> None:
    """A task name becomes a key of metrics.json beside the means, a module name and a dotted monitor."""
    metrics = set(spec.metrics) | {m for h in spec.heads.values() for m in h.metrics or []}
    problem = ("is empty" if not name else "holds a dot, which train.monitor uses to name a task's metric"
               if "." in name else "is a key the metrics already use" if name in RESERVED_NAMES | metrics
               else "is an attribute name of torch's ModuleDict" if hasattr(nn.ModuleDict(), name) else None)
    if problem is not None:
        raise ConfigError(f"task name {name!r} in model.heads {problem}", where="model.heads",
                          fix="rename the label column, and its task in model.heads, e.g. to "
                              f"{(name.replace('.', '_') or 'task') + '_label'!r}")


def _check_same_tasks(declared: list[str], columns: list[str], where: str) -> None:
    for name in declared:
        if name not in columns:
            raise ConfigError(f"model.heads names task {name!r}, which is not a label column of the data ({where})",
                              where=f"model.heads.{name}",
                              fix=did_you_mean(name, columns) + f"the data's tasks: {', '.join(columns)}")
    for name in columns:
        if name not in declared:
            raise ConfigError(f"label column {name!r} ({where}) has no head in model.heads", where="model.heads",
                              fix=f"add one (--set model.heads.{name}=linear), or drop {name} from {where}")


def multitask_metric_names(specs: Mapping[str, ClassifierSpec]) -> list[str]:
    """What a multi-task validation reports that ``train.monitor`` may name: ``loss``, the metrics every task
    measures (their mean over the tasks), and each task's as ``<task>.<metric>``."""
    first = next(iter(specs.values()))
    shared = [m for m in first.metrics if all(m in s.metrics for s in specs.values())]
    return ["loss", *shared, *(f"{t}.{m}" for t, s in specs.items() for m in ["loss", *s.metrics])]


def fixed_weights(job: JobSpec, tasks: Iterable[str]) -> dict[str, float]:
    """Each task's ``train.task_weights`` weight, 1 where not named (and always under uncertainty weighting)."""
    return {t: float(job.train.task_weights.get(t, 1.0)) for t in tasks}


# ---------------------------------------------------------------- the data

@dataclass(frozen=True)
class TaskLabels:
    """One task of the data: its name (the label column), its class names, and whether a sample may carry
    several of them. ``target`` turns a sample's raw cell into the tensor the task's head is trained on."""

    name: str
    class_names: list[str]
    multilabel: bool = False
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {c: i for i, c in enumerate(self.class_names)})

    @property
    def num_outputs(self) -> int:
        return len(self.class_names)

    def target(self, cell: Any, where: str | None = None) -> torch.Tensor:
        """The target of one sample: None or "" (an empty cell, a missing key) is missing, a class name its
        class; a multi-label cell is the list of its class names (an empty list: labelled, none applies).
        Single-label: a long scalar, ``MISSING`` when missing; multi-label: a float vector, all ``MISSING``
        when missing. ``where`` (the sample's file or row) goes into errors."""
        if cell is None or cell == "":
            if self.multilabel:
                return torch.full((self.num_outputs,), float(MISSING))
            return torch.tensor(MISSING)
        names = [cell] if isinstance(cell, str) else list(cell)
        indices = [self._class(str(n), where) for n in names]
        if self.multilabel:
            vector = torch.zeros(self.num_outputs)
            vector[indices] = 1.0
            return vector
        if len(indices) != 1:
            raise DataError(f"a sample has {len(indices)} labels ({', '.join(map(str, names))}) for task "
                            f"{self.name!r}, which is single-label", where=where,
                            fix=f"give it one label, or set model.heads.{self.name}.multilabel=true")
        return torch.tensor(indices[0])

    def _class(self, name: str, where: str | None) -> int:
        if name in self._index:
            return self._index[name]
        raise DataError(f"label {name!r} is not a class of task {self.name!r}", where=where,
                        fix=did_you_mean(name, self.class_names) + f"its classes: {', '.join(self.class_names)}")


def multitask_targets(tasks: Sequence[TaskLabels], cells: Mapping[str, Any],
                      where: str | None = None) -> dict[str, torch.Tensor]:
    """A sample's targets, task -> tensor, from its raw cells by task name (a task absent from ``cells`` is
    missing for this sample, as a missing JSONL key is)."""
    return {t.name: t.target(cells.get(t.name), where) for t in tasks}


def labelled(target: torch.Tensor) -> torch.Tensor:
    """Which samples of a batch's target for one task carry a label: (B,) booleans. A multi-label row
    counts only when none of its entries is ``MISSING``."""
    present = target != MISSING
    return present if target.dim() == 1 else present.all(dim=1)


def check_tasks(job: JobSpec, tasks: Sequence[TaskLabels], train_targets: Iterable[Mapping[str, torch.Tensor]],
                negative_names: Collection[str] = ()) -> dict[str, int]:
    """What a plugin's ``build_data`` checks of a multi-task dataset before training, in one place (plugins
    call it as ``ClassificationTask.check_tasks``): ``model.heads`` names exactly the data's tasks, each
    task has classes enough (two for single-label, one for multi-label) and a labelled training sample, and
    its positive class is known. Returns the labelled training samples per task."""
    specs = task_specs(job, [t.name for t in tasks])
    for t in tasks:
        if t.multilabel != specs[t.name].multilabel:
            raise PluginError(f"TaskLabels {t.name!r} has multilabel={t.multilabel}, its spec "
                              f"{specs[t.name].multilabel}",
                              fix="build each TaskLabels with multilabel=task_specs(job)[name].multilabel")
        least = 1 if t.multilabel else 2
        if t.num_outputs < least:
            raise DataError(f"task {t.name!r} has {t.num_outputs} class(es) ({', '.join(t.class_names)}); "
                            f"{'multi' if t.multilabel else 'single'}-label classification needs {least}",
                            where=f"label column {t.name}",
                            fix=f"label the data with more classes for {t.name}, or drop the task")
    counts = dict.fromkeys(specs, 0)
    for targets in train_targets:
        for name in counts:
            counts[name] += int(labelled(targets[name].reshape(1, -1) if targets[name].dim()
                                         else targets[name].reshape(1)).sum())
    for name, count in counts.items():
        if count == 0:
            raise DataError(f"no training sample has a label for task {name!r}", where=f"label column {name}",
                            fix=f"label some training samples for {name}, or drop the task from the data's "
                                "label columns and model.heads")
    for t in tasks:
        resolve_positive_class(specs[t.name], t.class_names, negative_names, f"model.heads.{t.name}")
    return counts


def _per_task(value: Any, specs: Mapping[str, ClassifierSpec], what: str) -> dict[str, Any]:
    """A DataBundle's ``num_outputs`` or ``class_names`` by task, checked against ``model.heads``."""
    if not isinstance(value, dict):
        raise ConfigError(f"model.heads declares the tasks {', '.join(specs)}, and the task's data has one label "
                          f"column ({what} is not per task)", where="model.heads",
                          fix="drop model.heads, or name the data's label columns (e.g. data.label_columns)")
    if not specs:
        raise ConfigError(f"the data has the tasks {', '.join(value)}, and model.heads declares none",
                          where="model.heads", fix="give each task a head: --set 'model.heads={"
                                                   + ", ".join(f"{t}: linear" for t in value) + "}'")
    _check_same_tasks(list(specs), list(value), "the data's tasks")
    return value


# ---------------------------------------------------------------- the model

class UncertaintyWeighting(nn.Module):
    """Task losses weighted by learned homoscedastic uncertainty (Kendall, Gal and Cipolla, "Multi-Task
    Learning Using Uncertainty to Weigh Losses for Scene Geometry and Semantics", CVPR 2018):

        L = sum_t exp(-s_t) L_t + s_t,    s_t = log sigma_t^2, learned, initialised to 0

    the form of their eq. 10 used in practice (constant factors dropped). A noisy (hard) task learns a
    large s_t and weighs less; the + s_t term stops every weight from going to zero. At its optimum
    s_t = log L_t. A task without labelled samples in the batch adds nothing, s_t term included."""

    def __init__(self, tasks: Sequence[str]):
        super().__init__()
        self.tasks = list(tasks)
        self.log_variances = nn.Parameter(torch.zeros(len(self.tasks)))

    def forward(self, losses: Mapping[str, torch.Tensor], present: Mapping[str, torch.Tensor]) -> torch.Tensor:
        total = self.log_variances.new_zeros(())
        for i, task in enumerate(self.tasks):
            s = self.log_variances[i]
            total = total + present[task].to(s.dtype) * (torch.exp(-s) * losses[task] + s)
        return total


class TaskHeads(nn.Module):
    """The heads of a multi-task model, features -> {task: logits}, and under uncertainty weighting the
    learned task weights (``weighting``), which live here so that head-only phases train them with the heads."""

    def __init__(self, heads: nn.ModuleDict, uncertainty: bool = False):
        super().__init__()
        self.heads = heads
        self.weighting = UncertaintyWeighting(list(heads)) if uncertainty else None

    def forward(self, features: Any) -> dict[str, torch.Tensor]:
        return {task: head(features) for task, head in self.heads.items()}


class MultiTaskModel(nn.Module):
    """backbone (inputs -> features) then ``head``, a ``TaskHeads`` (features -> {task: logits}): a
    ``tlcore.BackboneHeadModel`` whose heads form the output groups ``head.<task>`` (and ``task_weights``)."""

    supports_feature_cache = True

    def __init__(self, backbone: nn.Module, head: TaskHeads,
                 backbone_groups: Callable[[nn.Module], list[ParameterGroup]]):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self._backbone_groups = backbone_groups

    def forward(self, inputs: Any) -> dict[str, torch.Tensor]:
        return self.head(self.backbone(inputs))

    def parameter_groups(self) -> list[ParameterGroup]:
        groups = [*self._backbone_groups(self.backbone),
                  *(ParameterGroup(f"head.{task}", [head], is_head=True) for task, head in self.head.heads.items())]
        if self.head.weighting is not None:  # trained whenever the heads are
            groups.append(ParameterGroup("task_weights", [self.head.weighting], is_head=True))
        return groups


def build_multitask_classifier(job: JobSpec, num_outputs: int | dict[str, int], context: Context) -> MultiTaskModel:
    """The backbone and one head per task of ``model.heads``, random weights (``build_classifier`` calls it)."""
    specs = task_specs(job)
    outputs = _per_task(num_outputs, specs, "num_outputs")
    backbone = build_backbone(job, context)
    heads = nn.ModuleDict()
    for task, spec in specs.items():
        entry = context.registry.heads.get_or_fail(spec.head, where=f"model.heads.{task}.head")
        try:
            heads[task] = entry.factory(backbone.num_features, outputs[task], **spec.head_options)
        except TypeError as exc:
            raise ConfigError(f"bad head_options for task {task!r} (head {spec.head!r}): {exc}",
                              where=f"model.heads.{task}.head_options") from None
    head = TaskHeads(heads, uncertainty=job.train.task_weighting == "uncertainty")
    return MultiTaskModel(backbone, head, context.registry.backbones[job.model.backbone].parameter_groups)


def task_heads(model: nn.Module) -> TaskHeads:
    """The ``TaskHeads`` of a multi-task model, also inside a wrapper (the feature cache's ``HeadOnly``)."""
    head = getattr(model, "head", None)
    if isinstance(head, TaskHeads):
        return head
    found = next((m for m in model.modules() if isinstance(m, TaskHeads)), None)
    if found is None:
        raise PluginError(f"a multi-task job's model ({type(model).__name__}) has no tlcore TaskHeads",
                          fix="build it with tlcore.build_classifier (ClassificationTask.build_model does)")
    return found


# ---------------------------------------------------------------- the loss

def masked_loss(logits: torch.Tensor, target: torch.Tensor, multilabel: bool,
                label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One task's mean loss over the samples of the batch labelled for it, and their number (a tensor: no
    device sync). Unlabelled samples get exactly zero gradient; with none labelled the loss is 0, still
    part of the graph (zero gradient, never NaN)."""
    mask = labelled(target)
    if multilabel:
        safe = torch.where(target == MISSING, torch.zeros_like(target), target).float()
        losses = F.binary_cross_entropy_with_logits(logits, safe, reduction="none").mean(1)
    else:
        safe = torch.where(mask, target, torch.zeros_like(target))
        losses = F.cross_entropy(logits, safe, label_smoothing=label_smoothing, reduction="none")
    count = mask.sum()
    # where, not a product with the mask: an unlabelled sample's loss may be anything, its gradient is 0
    return torch.where(mask, losses, torch.zeros_like(losses)).sum() / count.clamp(min=1), count


def multitask_loss(job: JobSpec) -> Callable[[nn.Module, Any], tuple[torch.Tensor, int]]:
    """``loss(model, batch) -> (loss, batch size)`` of a multi-task job: each task's mean loss over its
    labelled samples (cross-entropy with its label smoothing, or BCE for a multi-label task), summed with the
    fixed ``train.task_weights``, or weighted by the model's learned ``UncertaintyWeighting``."""
    specs = task_specs(job)
    weights = fixed_weights(job, specs)
    learned = job.train.task_weighting == "uncertainty"

    def loss(model: nn.Module, batch: Any) -> tuple[torch.Tensor, int]:
        inputs, targets = batch
        outputs = model(inputs)
        losses, present = {}, {}
        for task, spec in specs.items():
            losses[task], count = masked_loss(outputs[task].float(), targets[task], spec.multilabel,
                                              spec.label_smoothing)
            present[task] = count > 0
        if learned:
            total = _learned_weighting(model)(losses, present)
        else:  # a task without labels in the batch adds an exact 0
            total = cast(torch.Tensor, sum(weights[task] * losses[task] for task in specs))
        return total, len(next(iter(targets.values())))

    return loss


def _learned_weighting(model: nn.Module) -> UncertaintyWeighting:
    weighting = task_heads(model).weighting
    if weighting is None:
        raise PluginError("train.task_weighting is uncertainty, and the model has no learned task weights",
                          fix="build the model from the same job (tlcore.build_classifier does)")
    return weighting


# ---------------------------------------------------------------- the metrics

class MultiTaskEvaluator(Evaluator):
    """Each task measured as a single-task ``ClassificationEvaluator`` on the samples labelled for it.

    ``compute()`` returns ``loss`` (sum_t w_t L_t with the fixed weights, 1 each under uncertainty weighting,
    so it stays comparable across epochs), then for every number all tasks measure its mean over the tasks
    that define it (``averaged_over`` says over how many where some do not, ``undefined`` why), ``tasks`` (the
    task names), and under each task's name that task's metrics exactly as a single-task job reports them.
    ``resample(indices)`` takes positions over all samples; each task keeps the labelled ones among them."""

    def __init__(self, job: JobSpec, data: DataBundle, context: Context, negative_names: Collection[str] = ()):
        self.specs = task_specs(job)
        outputs = _per_task(data.num_outputs, self.specs, "num_outputs")
        class_names = _per_task(data.class_names, self.specs, "class_names")
        self.weights = fixed_weights(job, self.specs)
        self.evaluators = {
            task: ClassificationEvaluator(job.model_copy(update={"model": spec}),
                                          replace(data, num_outputs=outputs[task], class_names=class_names[task]),
                                          context, negative_names, where=f"model.heads.{task}")
            for task, spec in self.specs.items()}
        self.positions: dict[str, list[torch.Tensor]] = {task: [] for task in self.specs}  # labelled samples
        self.seen = 0
        self._where: dict[str, torch.Tensor] | None = None  # per task: a sample's row among its labelled ones

    def update(self, model: nn.Module, batch: Any) -> None:
        inputs, targets = batch
        outputs = model(inputs)
        for task, evaluator in self.evaluators.items():
            mask = labelled(targets[task])
            evaluator.add(outputs[task].float()[mask], targets[task][mask])
            self.positions[task].append(torch.nonzero(mask).flatten().cpu() + self.seen)
        self.seen += len(next(iter(targets.values())))
        self._where = None

    def compute(self) -> dict[str, Any]:
        return self._combined({task: e.compute() for task, e in self.evaluators.items()})

    def resample(self, indices: Sequence[int]) -> dict[str, Any]:
        if self._where is None:
            self._where = {}
            for task, kept in self.positions.items():
                rows = torch.full((self.seen,), -1, dtype=torch.long)
                found = torch.cat(kept) if kept else torch.empty(0, dtype=torch.long)
                rows[found] = torch.arange(len(found))
                self._where[task] = rows
        drawn = torch.as_tensor(list(indices), dtype=torch.long)
        results = {}
        for task, evaluator in self.evaluators.items():
            rows = self._where[task][drawn]
            results[task] = evaluator.resample(rows[rows >= 0].tolist())
        return self._combined(results)

    def _combined(self, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {"loss": sum(self.weights[t] * float(r["loss"]) for t, r in results.items())}
        undefined: dict[str, str] = {}
        averaged: dict[str, int] = {}
        first = next(iter(self.specs.values()))
        for name in first.metrics:
            values = [r.get(name) for r in results.values()]
            if name not in RESERVED_NAMES and all(v is None or is_number(v) for v in values) and \
                    all(name in s.metrics for s in self.specs.values()):
                defined = [float(v) for v in values if v is not None]
                out[name] = statistics.fmean(defined) if defined else None
                if len(defined) < len(values):
                    lacking = [t for t, v in zip(results, values) if v is None]
                    undefined[name] = f"undefined for task{'s' if len(lacking) > 1 else ''} {', '.join(lacking)}"
                    if defined:
                        averaged[name] = len(defined)
        out["tasks"] = list(results)
        out.update(results)
        for key, found in (("undefined", undefined), ("averaged_over", averaged)):
            if found:
                out[key] = found
        return out


# ---------------------------------------------------------------- predictions

def predict_task_probabilities(model: nn.Module, loader: Iterable[Any], device: torch.device,
                               specs: Mapping[str, ClassifierSpec], precision: Any = None) -> dict[str, torch.Tensor]:
    """Each task's probabilities (softmax, or sigmoid for a multi-label task) for the inputs ``loader``
    yields (inputs only, as for ``predict_probabilities``), by task."""
    out: dict[str, list[torch.Tensor]] = {task: [] for task in specs}
    for logits in batch_outputs(model, loader, device, precision):
        for task, spec in specs.items():
            out[task].append(probabilities(logits[task], spec.multilabel))
    return {task: torch.cat(kept) if kept else torch.empty(0) for task, kept in out.items()}


def task_predictions(specs: Mapping[str, ClassifierSpec], class_names: Mapping[str, list[str]],
                     probabilities: Mapping[str, torch.Tensor]) -> list[dict[str, dict[str, Any]]]:
    """Per sample, per task: ``predicted`` (the class, or for a multi-label task the classes at or above
    its threshold) and ``probabilities`` by class name, for a prediction record."""
    samples = len(next(iter(probabilities.values()))) if probabilities else 0
    records: list[dict[str, dict[str, Any]]] = [{} for _ in range(samples)]
    for task, spec in specs.items():
        names = class_names[task]
        for record, p in zip(records, probabilities[task].tolist()):
            predicted: Any = ([c for c, v in zip(names, p) if v >= spec.threshold] if spec.multilabel
                              else names[max(range(len(p)), key=p.__getitem__)])
            record[task] = {"predicted": predicted, "probabilities": dict(zip(names, p))}
    return records


def prediction_columns(prediction: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One sample's ``task_predictions`` as CSV columns: ``<task>`` (what is predicted) and
    ``p_<task>_<class>`` for each probability."""
    row: dict[str, Any] = {}
    for task, found in prediction.items():
        row[task] = found["predicted"]
    for task, found in prediction.items():
        row.update({f"p_{task}_{c}": f"{v:.6f}" for c, v in found["probabilities"].items()})
    return row
