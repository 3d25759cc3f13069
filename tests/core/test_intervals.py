"""Bootstrap intervals of the final metrics, undefined metrics as null with a reason, and compare's verdict."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
import torch

from helpers import read_metrics
from tlcore import Evaluator
from tlcore.builtins import register_metrics
from tlcore.classification import ClassificationEvaluator, ClassifierSpec
from tlcore.compare import judge
from tlcore.intervals import RESAMPLES_FILE, Bootstrap, bootstrap, shown, with_intervals
from tlcore.splits import small_split_warning


class MeanOf(Evaluator):
    """The mean of fixed per-sample values, undefined (None) when a resample holds fewer than ``need`` ones."""

    def __init__(self, values, need=0):
        self.values, self.need = list(values), need

    def resample(self, indices):
        picked = [self.values[i] for i in indices]
        return {"mean": sum(picked) / len(picked) if picked.count(1.0) >= self.need else None,
                "per_class": {"a": picked[0], "b": None}}


def test_resampling_by_group_keeps_a_groups_samples_together():
    # 6 groups of 10 identical samples: 60 samples that carry the evidence of 6
    values = [float(g) for g in range(6) for _ in range(10)]
    groups = [g for g in range(6) for _ in range(10)]
    by_group = bootstrap(MeanOf(values), groups, 60, resamples=400, confidence=0.95, seed=0, unit="patient")
    by_sample = bootstrap(MeanOf(values), None, 60, resamples=400, confidence=0.95, seed=0, unit="patient")
    assert (by_group.unit, by_group.units) == ("patient", 6) and (by_sample.unit, by_sample.units) == ("sample", 60)
    low_g, high_g = by_group.interval("mean")
    low_s, high_s = by_sample.interval("mean")
    assert high_g - low_g > 1.5 * (high_s - low_s)  # counting frames as patients would claim false precision
    assert low_g < 2.5 < high_g


def test_one_seed_draws_the_same_resamples_so_runs_pair():
    a = bootstrap(MeanOf(range(20)), None, 20, resamples=50, confidence=0.95, seed=3, unit="sample")
    b = bootstrap(MeanOf([2 * v for v in range(20)]), None, 20, resamples=50, confidence=0.95, seed=3, unit="sample")
    assert [2 * v for v in a.values["mean"]] == b.values["mean"]
    c = bootstrap(MeanOf(range(20)), None, 20, resamples=50, confidence=0.95, seed=4, unit="sample")
    assert c.values["mean"] != a.values["mean"]


def test_a_metric_undefined_in_most_resamples_gets_no_interval():
    values = [0.0] * 19 + [1.0]  # most resamples hold the 1.0 fewer than twice
    boot = bootstrap(MeanOf(values, need=2), None, 20, resamples=200, confidence=0.95, seed=0, unit="sample")
    assert boot.undefined_in("mean") > 100 and boot.interval("mean") is None
    out = with_intervals({"mean": 0.05, "per_class": {"a": 0.0, "b": None}, "undefined": {"x": "why"}}, boot)
    assert out["mean_ci"] is None and out["per_class_ci"]["b"] is None  # b: undefined itself
    assert out["per_class_ci"]["a"] == boot.interval("per_class.a") and len(out["per_class_ci"]["a"]) == 2
    assert out["bootstrap"]["undefined_in"]["mean"] == boot.undefined_in("mean")
    assert "undefined_ci" not in out
    assert shown({"auroc": None, "accuracy": 0.5, "accuracy_ci": [0.25, 0.75]}) == \
        "auroc n/a, accuracy 0.5000 [0.2500, 0.7500]"


def test_evaluator_without_resample_gets_no_intervals():
    class Plain(Evaluator):
        pass

    assert bootstrap(Plain(), None, 5, resamples=10, confidence=0.95, seed=0, unit="sample") is None


def classification_evaluator(class_names, metrics=None, **spec):
    catalog = {}
    register_metrics(lambda name, factory, description: catalog.__setitem__(name, factory))
    registry = types.SimpleNamespace(metrics=types.SimpleNamespace(
        get_or_fail=lambda name, where=None: types.SimpleNamespace(factory=catalog[name])))
    options = ClassifierSpec(backbone="any", **({"metrics": metrics} if metrics else {}), **spec)
    data = types.SimpleNamespace(class_names=class_names, num_outputs=len(class_names))
    return ClassificationEvaluator(types.SimpleNamespace(model=options), data, types.SimpleNamespace(registry=registry),
                                   ["normal"])


def feed(evaluator, logits, targets, batch=7):
    for start in range(0, len(targets), batch):
        chunk = logits[start:start + batch]
        evaluator.update(lambda _, chunk=chunk: chunk, (None, targets[start:start + batch]))


def test_classification_resample_of_every_sample_is_compute():
    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(30, 3, generator=g), torch.arange(30) % 3
    evaluator = classification_evaluator(["a", "b", "c"])
    feed(evaluator, logits, targets)
    assert evaluator.resample(range(30)) == evaluator.compute()
    assert evaluator.resample(list(range(30)) * 2)["accuracy"] == evaluator.compute()["accuracy"]
    assert evaluator.compute()["averaged_over"] == {"f1_macro": 3, "auroc": 3, "sensitivity": 3,
                                                   "specificity": 3}


def test_auroc_of_a_split_with_one_class_is_null_with_its_reason():
    evaluator = classification_evaluator(["nodule", "normal"])
    feed(evaluator, torch.randn(5, 2), torch.ones(5, dtype=torch.long))  # only "normal" present
    out = evaluator.compute()
    assert out["auroc"] is None and out["sensitivity"] is None
    assert "no samples of nodule" in out["undefined"]["sensitivity"]
    assert "both of and not of" in out["undefined"]["auroc"]
    assert out["averaged_over"]["auroc"] == 0 and out["averaged_over"]["f1_macro"] == 1
    assert out["specificity"] is not None  # defined: the split has negatives


def test_small_split_warning_names_samples_and_groups():
    assert small_split_warning("test", 43, 3, "patient", min_samples=30, min_groups=10) == (
        "the test split has 43 samples from 3 patients, fewer than 10 patients: its metrics are mostly noise; "
        "read them with their intervals; with so few patients even the bootstrap intervals, which resample "
        "patients, understate the uncertainty (evaluation.min_samples / evaluation.min_groups set this warning)")
    assert "fewer than 30 samples" in small_split_warning("val", 5, None, "sample", min_samples=30, min_groups=10)
    assert small_split_warning("val", 300, 40, "patient", min_samples=30, min_groups=10) is None


def test_run_records_intervals_by_group_and_the_resamples(toy_plugin, tlapp):
    code, out, err = tlapp("run", "--plugin", "toy", "--output", "r", "--epochs", "1")
    assert code == 0, err
    metrics = read_metrics("r")
    final = metrics["metrics"]
    assert final["bootstrap"] == {"method": "percentile bootstrap", "resamples": 200, "confidence": 0.95,
                                  "seed": 0, "unit": "site", "units": 7}
    for name in ("accuracy", "f1_macro", "auroc", "loss"):
        low, high = final[f"{name}_ci"]
        assert low <= high
    assert f"accuracy {final['accuracy']:.4f} [" in out
    saved = Bootstrap.load(Path("r") / RESAMPLES_FILE)
    assert saved is not None and len(saved.values["accuracy"]) == 200
    assert saved.interval("accuracy") == final["accuracy_ci"]
    # 21 test samples from 7 sites: the run says its numbers are noise
    assert any("the test split has 21 samples from 7 sites" in w for w in metrics["data"]["warnings"])


def test_evaluation_settings_may_change_on_resume(toy_plugin, tlapp):
    assert tlapp("run", "--plugin", "toy", "--output", "r", "--epochs", "1")[0] == 0
    code, _, err = tlapp("run", "--plugin", "toy", "--output", "r", "--epochs", "1", "--resume",
                         "--set", "evaluation.bootstrap=0")
    assert code == 0, err
    assert "accuracy_ci" not in read_metrics("r")["metrics"]  # evaluated again, without intervals


def _boot(values):
    return Bootstrap(len(values), 0.95, 0, "sample", 20, {"accuracy": values})


def test_verdict_pairs_resamples_and_says_when_a_lead_is_noise():
    runs = [{"strategy": s, "metrics": {"accuracy": v}} for s, v in
            (("scratch", 0.5), ("linear-probe", 0.80), ("finetune", 0.82))]
    shared = [0.01 * (i % 21) for i in range(100)]  # what every run's resamples share
    resamples = [_boot([0.5 + x for x in shared]), _boot([0.80 + x + 0.05 * (-1) ** i for i, x in enumerate(shared)]),
                 _boot([0.82 + x for x in shared])]
    verdict = judge(runs, resamples, "accuracy", "max")
    assert verdict["best"] == "finetune"
    against = {c["against"]: c for c in verdict["comparisons"]}
    assert against["linear-probe"]["distinguishable"] is False
    assert against["scratch"]["distinguishable"] is True and against["scratch"]["interval"][0] > 0.3
    assert "not distinguishable on this test set" in verdict["text"]
    no_resamples = judge(runs, [None, None, None], "accuracy", "max")
    assert no_resamples["comparisons"][0]["distinguishable"] is None


def test_compare_table_shows_intervals_and_the_verdict(toy_plugin, tlapp):
    code, out, err = tlapp("compare", "--plugin", "toy", "--strategies", "scratch,finetune", "--output", "c",
                           "--epochs", "1", "--metric", "auroc")
    assert code == 0, err
    report = json.loads(Path("c/comparison.json").read_text())
    assert report["verdict"]["metric"] == "auroc" and len(report["verdict"]["comparisons"]) == 1
    table = Path("c/comparison.md").read_text()
    assert f"{report['summary']['finetune']['metrics']['auroc']['mean']:.3f} [" in table
    assert "Best on auroc (higher is better)" in out and "95% interval of the paired difference" in out


def test_compare_measures_the_classical_baseline_on_the_same_split_and_resamples(toy_plugin, tlapp):
    code, out, err = tlapp("compare", "--plugin", "toy", "--strategies", "scratch,linear-probe", "--output", "c",
                           "--epochs", "1")
    assert code == 0, err
    report = json.loads(Path("c/comparison.json").read_text())
    row = report["runs"][-1]
    assert row["strategy"] == "classical-baseline" and row["description"] == "logistic regression on the raw vectors"
    saved = json.loads(Path("c/classical-baseline/metrics.json").read_text())
    assert saved["evaluated_on"] == "test" and saved["metrics"]["accuracy"] == row["metrics"]["accuracy"]
    # the same resamples as the runs (by site, same seed), so the verdict can pair them
    baseline = Bootstrap.load(Path("c/classical-baseline") / RESAMPLES_FILE)
    run = Bootstrap.load(Path("c/scratch") / RESAMPLES_FILE)
    assert (baseline.units, baseline.unit, baseline.seed) == (run.units, run.unit, run.seed) == (7, "site", 0)
    assert "| classical-baseline | 1 |" in out
    assert "Transfer against the classical baseline: " in out
    against = [c["against"] for c in report["verdict"]["comparisons"]]
    assert "classical-baseline" in against or report["verdict"]["best"] == "classical-baseline"


def test_the_baseline_scores_classes_missing_from_its_training_data():
    from sklearn.preprocessing import StandardScaler

    from tlcore.baseline import ClassicalInputs, fit_and_score

    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 3, generator=g).numpy()
    inputs = ClassicalInputs("lr", StandardScaler(), x[:8], [0, 2] * 4, x[8:], [0, 1, 2, 2])
    probabilities = fit_and_score(inputs, 3, seed=0)
    assert probabilities.shape == (4, 3) and (probabilities[:, 1] == 0).all()  # class 1 never seen: never scored
    assert abs(probabilities.sum(1) - 1).max() < 1e-9
    single = ClassicalInputs("lr", StandardScaler(), x[:3], [0, 1, 1], x[8:], [0, 1, 1, 0])  # one of class 0: no CV
    assert fit_and_score(single, 2, seed=0).shape == (4, 2)


def test_compare_refuses_an_unknown_metric_before_running(toy_plugin, tlapp):
    code, _, err = tlapp("compare", "--plugin", "toy", "--strategies", "scratch", "--output", "c",
                         "--metric", "aucroc")
    assert code == 2 and "--metric 'aucroc'" in err and "auroc" in err
    assert not Path("c").exists()


@pytest.mark.parametrize("confidence", [0.5, 1.0])
def test_confidence_must_be_a_useful_coverage(toy_plugin, tlapp, confidence):
    code, _, err = tlapp("run", "--plugin", "toy", "--output", "r", "--set", f"evaluation.confidence={confidence}")
    assert code == 2 and "evaluation.confidence" in err
