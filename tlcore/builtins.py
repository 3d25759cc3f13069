"""The core's own contributions, registered through the same hooks plugins use:
generic heads, classification metrics (torchmetrics) and the transfer strategies."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import classification as tmc

from .hookspecs import hookimpl
from .auto import Auto
from .methods import BUILTIN_METHODS
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


class PositiveClass:
    """Feeds a binary metric the positive class's probability (class index 1) of a two-class output."""

    def __init__(self, metric):
        self.metric = metric

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        self.metric.update(probs[:, 1], target)

    def compute(self):
        return self.metric.compute()


def _classification_metric(multiclass, multilabel_cls, binary=None, **kwargs):
    """A factory choosing the torchmetrics class for the output type; ``binary`` for two classes."""

    def factory(num_classes: int, multilabel: bool, threshold: float):
        if multilabel:
            return multilabel_cls(num_labels=num_classes, threshold=threshold, **kwargs)
        if binary is not None and num_classes == 2:
            return PositiveClass(binary(threshold=threshold))
        return multiclass(num_classes=num_classes, **kwargs)

    return factory


def _without_threshold(cls):
    def make(num_labels, threshold, **kwargs):
        return cls(num_labels=num_labels, **kwargs)
    return make


@hookimpl
def register_metrics(register):
    register("accuracy", _classification_metric(tmc.MulticlassAccuracy, tmc.MultilabelAccuracy, average="micro"),
             "share of correct predictions (multi-label: per label)")
    register("f1_macro", _classification_metric(tmc.MulticlassF1Score, tmc.MultilabelF1Score, average="macro"),
             "F1 averaged over classes")
    register("auroc", _classification_metric(tmc.MulticlassAUROC, _without_threshold(tmc.MultilabelAUROC),
                                             average="macro"), "area under the ROC curve, macro over classes")
    register("auroc_per_class", _classification_metric(tmc.MulticlassAUROC, _without_threshold(tmc.MultilabelAUROC),
                                                       average=None), "one-vs-rest AUROC of each class")
    register("sensitivity", _classification_metric(tmc.MulticlassRecall, tmc.MultilabelRecall, tmc.BinaryRecall,
                                                   average="macro"),
             "recall of the positive class at the threshold (binary), macro recall otherwise")
    register("specificity", _classification_metric(tmc.MulticlassSpecificity, tmc.MultilabelSpecificity,
                                                   tmc.BinarySpecificity, average="macro"),
             "true-negative rate at the threshold (binary), macro otherwise")
    for name, mc, ml in [("precision_per_class", tmc.MulticlassPrecision, tmc.MultilabelPrecision),
                         ("recall_per_class", tmc.MulticlassRecall, tmc.MultilabelRecall),
                         ("f1_per_class", tmc.MulticlassF1Score, tmc.MultilabelF1Score)]:
        register(name, _classification_metric(mc, ml, average=None), f"{name.split('_')[0]} of each class")
    register("confusion_matrix", _classification_metric(tmc.MulticlassConfusionMatrix,
                                                        tmc.MultilabelConfusionMatrix),
             "rows: true class, columns: predicted class (multi-label: one 2x2 per label)")


@hookimpl
def register_methods(register):
    for method in BUILTIN_METHODS:
        register(method)


@hookimpl
def register_strategies(register):
    for strategy in [*BUILTIN_STRATEGIES, Auto]:
        register(strategy)
