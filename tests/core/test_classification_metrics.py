"""Classification metrics: sensitivity about the right class, and undefined values reported as null."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from tlcore import ClassificationEvaluator, ClassifierSpec, ConfigError, Context, DataBundle, Entry, Registry
from tlcore.builtins import register_metrics
from tlcore.classification import DEFAULT_METRICS, resolve_positive_class

MEDICAL_NEGATIVES = {"normal", "no_finding", "healthy", "negative"}


def spec(**options) -> ClassifierSpec:
    return ClassifierSpec(backbone="any", **options)


def evaluate(class_names, logits, target, negatives=MEDICAL_NEGATIVES, **options) -> dict:
    registry = Registry()
    register_metrics(lambda name, factory, description: registry.metrics.add(name, Entry(name, factory), "tlcore"))
    context = Context(registry=registry, device=torch.device("cpu"), cache_dir=Path("."), log=logging.getLogger())
    data = DataBundle(train=[], val=[], test=[], num_outputs=len(class_names), class_names=class_names)
    evaluator = ClassificationEvaluator(SimpleNamespace(model=spec(**options)), data, context, negatives)
    evaluator.update(nn.Identity(), (torch.tensor(logits, dtype=torch.float32), torch.tensor(target)))
    return evaluator.compute()


@pytest.mark.parametrize("names, expected", [
    (["nodule", "normal"], "nodule"),
    (["Normal", "pneumonia"], "pneumonia"),
    (["effusion", "No Finding"], "effusion"),
    (["HEALTHY", "tumour"], "tumour"),
])
def test_the_positive_class_is_the_one_not_named_like_a_negative(names, expected):
    assert resolve_positive_class(spec(), names, MEDICAL_NEGATIVES) == expected


def test_an_explicit_positive_class_wins_and_is_checked():
    assert resolve_positive_class(spec(positive_class="normal"), ["nodule", "normal"], MEDICAL_NEGATIVES) == "normal"
    with pytest.raises(ConfigError) as info:
        resolve_positive_class(spec(positive_class="Nodule"), ["nodule", "normal"], MEDICAL_NEGATIVES)
    assert "did you mean 'nodule'" in info.value.fix and info.value.where == "model.positive_class"
    with pytest.raises(ConfigError, match="single-label"):
        resolve_positive_class(spec(positive_class="a", multilabel=True), ["a", "b"])


@pytest.mark.parametrize("names", [["lesion", "clear"], ["normal", "healthy"]])
def test_an_ambiguous_binary_task_asks_but_only_for_sensitivity_or_specificity(names):
    with pytest.raises(ConfigError) as info:
        resolve_positive_class(spec(), names, MEDICAL_NEGATIVES)
    assert "--set model.positive_class=NAME" in info.value.fix and all(n in info.value.fix for n in names)
    assert resolve_positive_class(spec(metrics=["accuracy", "auroc"]), names, MEDICAL_NEGATIVES) is None
    assert resolve_positive_class(spec(), ["a", "b", "c"], MEDICAL_NEGATIVES) is None  # macro instead
    assert resolve_positive_class(spec(multilabel=True), names, MEDICAL_NEGATIVES) is None


def test_sensitivity_is_the_recall_of_the_positive_class_not_of_index_1():
    # nodule (index 0): 1 of 2 found; normal (index 1): 3 of 3 found
    logits = [[2, 0], [0, 2], [0, 2], [0, 2], [0, 2]]
    out = evaluate(["nodule", "normal"], logits, [0, 0, 1, 1, 1])
    assert out["positive_class"] == "nodule"
    assert out["sensitivity"] == pytest.approx(0.5) == out["recall_per_class"]["nodule"]
    assert out["specificity"] == pytest.approx(1.0) == out["recall_per_class"]["normal"]
    assert set(out["recall_per_class"]) == {"nodule", "normal"}
    assert "undefined_classes" not in out


def test_positive_class_of_a_multiclass_task_is_one_vs_rest():
    logits = [[3, 0, 0], [0, 3, 0], [3, 0, 0], [0, 0, 3]]
    out = evaluate(["a", "b", "c"], logits, [0, 0, 1, 2], positive_class="a")
    assert out["positive_class"] == "a"
    assert out["sensitivity"] == pytest.approx(0.5)  # one of the two a's
    assert out["specificity"] == pytest.approx(0.5)  # one of the two others called a
    macro = evaluate(["a", "b", "c"], logits, [0, 0, 1, 2])
    assert "positive_class" not in macro and macro["sensitivity"] == pytest.approx((0.5 + 0 + 1) / 3)


def test_a_class_absent_from_the_split_is_null_not_zero_and_left_out_of_macro_averages():
    logits = [[3, 0, 0], [0, 3, 0], [2, 1, 0], [1, 2, 0]]  # no sample of class c
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torchmetrics' "no positive samples" must not escape
        out = evaluate(["a", "b", "c"], logits, [0, 1, 0, 1], metrics=DEFAULT_METRICS)
    assert out["recall_per_class"] == {"a": 1.0, "b": 1.0, "c": None}
    assert out["auroc_per_class"]["c"] is None and out["f1_per_class"]["c"] is None
    assert out["precision_per_class"]["c"] is None  # never predicted either
    assert out["f1_macro"] == pytest.approx(1.0) and out["auroc"] == pytest.approx(1.0)
    assert out["undefined_classes"]["auroc"] == ["c"] and out["undefined_classes"]["f1_macro"] == ["c"]
    json.dumps(out, allow_nan=False)


def test_undefined_binary_metrics_are_null():
    out = evaluate(["nodule", "normal"], [[0, 2], [1, 0]], [1, 1])  # no nodule in the split
    assert out["sensitivity"] is None and out["auroc"] is None
    assert out["specificity"] == pytest.approx(0.5)
    assert out["undefined_classes"]["sensitivity"] == ["nodule"]
    json.dumps(out, allow_nan=False)


def test_multilabel_macro_skips_labels_without_positives():
    logits = [[3, -3], [3, -3], [-3, -3]]
    out = evaluate(["effusion", "nodule"], logits, [[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]], multilabel=True,
                   metrics=["f1_macro", "auroc", "sensitivity", "recall_per_class"])
    assert out["f1_macro"] == pytest.approx(1.0) and out["sensitivity"] == pytest.approx(1.0)
    assert out["recall_per_class"] == {"effusion": 1.0, "nodule": None}
    assert out["undefined_classes"]["auroc"] == ["nodule"]
