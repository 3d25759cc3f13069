"""The core's own contributions, registered through the same hooks plugins use:
generic heads, classification metrics (torchmetrics) and the transfer strategies."""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torchmetrics import classification as tmc

from .hookspecs import hookimpl
from .auto import Auto
from .distill import Distill
from .adapt import ADAPTATION_METHODS
from .methods import BUILTIN_METHODS
from .pretrain import PRETRAINING_METHODS
from .semi import SEMI_SUPERVISED_METHODS
from .strategies import BUILTIN_STRATEGIES


def linear_head(in_features: int, num_outputs: int, dropout: float = 0.2) -> nn.Module:
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, num_outputs))


def mlp_head(in_features: int, num_outputs: int, hidden: int = 256, dropout: float = 0.2) -> nn.Module:
    return nn.Sequential(nn.Linear(in_features, hidden), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(hidden, num_outputs))


@hookimpl
def register_heads(register):
    register("linear", linear_head, "dropout then one linear layer")
    register("mlp", mlp_head, "linear, GELU, dropout, linear (options: hidden, dropout)")


class _Defined:
    """When a class's value is defined, from its sample and prediction counts; and, for the reason
    metrics.json gives when it is not, what the split lacks."""

    def __init__(self, test, lacks: str):
        self.test, self.lacks = test, lacks

    def __call__(self, positives: torch.Tensor, predicted: torch.Tensor, n: int) -> torch.Tensor:
        return self.test(positives, predicted, n)


_has_positives = _Defined(lambda positives, predicted, n: positives > 0, "the split has no samples of")
_has_negatives = _Defined(lambda positives, predicted, n: positives < n,
                          "the split has no samples other than those of")
_has_both = _Defined(lambda positives, predicted, n: (positives > 0) & (positives < n),
                     "the split needs samples both of and not of")
_has_predictions = _Defined(lambda positives, predicted, n: predicted > 0, "the model never predicted")


class _Counted:
    """Counts, per class, the samples and predictions a split holds: what decides whether a value is defined."""

    def __init__(self, metric, defined, num_classes: int, multilabel: bool, threshold: float):
        self.metric, self.defined = metric, defined
        self.multilabel, self.threshold = multilabel, threshold
        self.positives = torch.zeros(num_classes, dtype=torch.long)
        self.predicted = torch.zeros(num_classes, dtype=torch.long)
        self.n = 0
        self.undefined: list[int] = []  # class indices without a value, known after compute()
        self.lacks: str = defined.lacks

    def reset(self) -> None:
        self.metric.reset()
        self.positives.zero_()
        self.predicted.zero_()
        self.n = 0

    def count(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        if self.multilabel:
            self.positives += target.long().sum(0)
            self.predicted += (probs > self.threshold).long().sum(0)  # torchmetrics' multi-label rule
        else:
            size = len(self.positives)
            self.positives += torch.bincount(target.long(), minlength=size)[:size]
            self.predicted += torch.bincount(probs.argmax(1), minlength=size)[:size]
        self.n += len(target)

    def _compute_quietly(self) -> torch.Tensor:
        # torchmetrics warns and returns 0 for a class without positives (or negatives); we report such a
        # class as undefined instead, so its warning says nothing the result does not.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*(positive|negative) samples", category=UserWarning)
            return self.metric.compute().float().clone()


class PerClass(_Counted):
    """One value per class, NaN where the split cannot define it (e.g. the recall of a class it does not
    contain): torchmetrics' 0 there would read as a failure of the model and drag every average down."""

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        self.metric.update(probs, target)
        self.count(probs, target)

    def compute(self) -> torch.Tensor:
        values = self._compute_quietly()
        missing = ~self.defined(self.positives, self.predicted, self.n)
        values[missing] = float("nan")
        self.undefined = missing.nonzero().flatten().tolist()
        return values


class MacroOfDefined:
    """The mean of a per-class metric over the classes where it is defined; NaN when none is."""

    def __init__(self, per_class: PerClass):
        self.per_class = per_class
        self.undefined: list[int] = []
        self.lacks = per_class.lacks
        self.averaged_over: int | None = None  # how many classes the mean took, known after compute()

    def reset(self) -> None:
        self.per_class.reset()

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        self.per_class.update(probs, target)

    def compute(self) -> torch.Tensor:
        values = self.per_class.compute()
        self.undefined = self.per_class.undefined
        defined = values[~values.isnan()]
        self.averaged_over = len(defined)
        return defined.mean() if len(defined) else torch.tensor(float("nan"))


class OneClass:
    """One class's entry of a per-class metric (NaN when undefined)."""

    def __init__(self, per_class: PerClass, index: int):
        self.per_class, self.index = per_class, index
        self.undefined: list[int] = []
        self.lacks = per_class.lacks

    def reset(self) -> None:
        self.per_class.reset()

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        self.per_class.update(probs, target)

    def compute(self) -> torch.Tensor:
        value = self.per_class.compute()[self.index]
        self.undefined = [self.index] if value.isnan() else []
        return value


class PositiveClass(_Counted):
    """A binary torchmetrics metric of a two-class output, about class ``index``: its probability against the
    threshold, and target == index. NaN when the split lacks what the metric needs (e.g. positives for recall)."""

    def __init__(self, metric, index: int, defined, threshold: float):
        super().__init__(metric, defined, 1, False, threshold)
        self.index = index

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        positive = (target == self.index).long()
        self.metric.update(probs[:, self.index], positive)
        self.positives += positive.sum()
        self.predicted += (probs[:, self.index] > self.threshold).sum()
        self.n += len(target)

    def compute(self) -> torch.Tensor:
        value = self._compute_quietly()
        self.undefined = [] if bool(self.defined(self.positives, self.predicted, self.n)) else [self.index]
        return value if not self.undefined else torch.tensor(float("nan"))


def _classification_metric(multiclass, multilabel_cls, **kwargs):
    """A factory choosing the torchmetrics class for the output type (single- or multi-label)."""

    def factory(num_classes: int, multilabel: bool, threshold: float):
        if multilabel:
            return multilabel_cls(num_labels=num_classes, threshold=threshold, **kwargs)
        return multiclass(num_classes=num_classes, **kwargs)

    return factory


def _per_class(multiclass, multilabel_cls, defined, macro: bool = False):
    """A factory of a per-class metric (or its macro average) whose undefined classes are NaN, not 0."""

    def factory(num_classes: int, multilabel: bool, threshold: float):
        metric = _classification_metric(multiclass, multilabel_cls, average=None)(num_classes, multilabel, threshold)
        per_class = PerClass(metric, defined, num_classes, multilabel, threshold)
        return MacroOfDefined(per_class) if macro else per_class

    return factory


def _about_positive_class(multiclass, multilabel_cls, binary, defined):
    """A factory for sensitivity or specificity: about ``positive_class`` (an index) when the evaluator names
    one, else the macro average over classes (multi-label: over labels)."""

    def factory(num_classes: int, multilabel: bool, threshold: float, positive_class: int | None = None):
        if positive_class is not None and not multilabel and num_classes == 2:
            return PositiveClass(binary(threshold=threshold), positive_class, defined, threshold)
        per_class = _per_class(multiclass, multilabel_cls, defined)(num_classes, multilabel, threshold)
        if positive_class is not None and not multilabel:
            return OneClass(per_class, positive_class)
        return MacroOfDefined(per_class)

    return factory


def _without_threshold(cls):
    def make(num_labels, threshold, **kwargs):
        return cls(num_labels=num_labels, **kwargs)
    return make


@hookimpl
def register_metrics(register):
    auroc = (tmc.MulticlassAUROC, _without_threshold(tmc.MultilabelAUROC))
    register("accuracy", _classification_metric(tmc.MulticlassAccuracy, tmc.MultilabelAccuracy, average="micro"),
             "share of correct predictions (multi-label: per label)")
    register("f1_macro", _per_class(tmc.MulticlassF1Score, tmc.MultilabelF1Score, _has_positives, macro=True),
             "F1 averaged over the classes present in the split")
    register("auroc", _per_class(*auroc, _has_both, macro=True),
             "area under the ROC curve, averaged over the classes with positives and negatives in the split")
    register("auroc_per_class", _per_class(*auroc, _has_both), "one-vs-rest AUROC of each class")
    register("sensitivity", _about_positive_class(tmc.MulticlassRecall, tmc.MultilabelRecall, tmc.BinaryRecall,
                                                  _has_positives),
             "recall of model.positive_class (at the threshold for two classes), else macro recall")
    register("specificity", _about_positive_class(tmc.MulticlassSpecificity, tmc.MultilabelSpecificity,
                                                  tmc.BinarySpecificity, _has_negatives),
             "true-negative rate for model.positive_class (at the threshold for two classes), else macro")
    register("precision_per_class", _per_class(tmc.MulticlassPrecision, tmc.MultilabelPrecision, _has_predictions),
             "precision of each class (null for a class never predicted)")
    register("recall_per_class", _per_class(tmc.MulticlassRecall, tmc.MultilabelRecall, _has_positives),
             "recall of each class (null for a class absent from the split)")
    register("f1_per_class", _per_class(tmc.MulticlassF1Score, tmc.MultilabelF1Score, _has_positives),
             "F1 of each class (null for a class absent from the split)")
    register("confusion_matrix", _classification_metric(tmc.MulticlassConfusionMatrix,
                                                        tmc.MultilabelConfusionMatrix),
             "rows: true class, columns: predicted class (multi-label: one 2x2 per label)")


@hookimpl
def register_methods(register):
    for method in [*BUILTIN_METHODS, Distill, *ADAPTATION_METHODS, *SEMI_SUPERVISED_METHODS,
                   *PRETRAINING_METHODS]:
        register(method)


@hookimpl
def register_strategies(register):
    for strategy in [*BUILTIN_STRATEGIES, Auto]:
        register(strategy)
