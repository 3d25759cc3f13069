"""Multi-task learning: one backbone, a head per task; exact masking of missing labels, learned task weights,
per-task metrics with their intervals, and the CLI end to end on the toy plugin's label columns."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from helpers import interrupted_and_resumed, read_metrics
from tlcore import (MISSING, Backbone, ClassificationEvaluator, ClassifierSpec, ConfigError, Context, DataBundle,
                    DataError, Entry, MultiTaskEvaluator, MultiTaskModel, ParameterGroup, Registry, Section,
                    TaskLabels, build_classifier, multitask_targets, prediction_columns, task_predictions)
from tlcore.builtins import register_heads, register_metrics
from tlcore.config import job_model, validate
from tlcore.intervals import Bootstrap, bootstrap, flatten_tasks, numbers, shown, with_intervals
from tlcore.multitask import check_tasks, masked_loss, multitask_loss, task_specs
from tlcore.strategies import (FreezeUnfreeze, Gradual, LinearProbe, apply_phase, check_groups, optimizer_groups,
                               plan_phases, verify_phase)

METRICS = ["accuracy", "f1_macro", "auroc"]


class Data(Section):
    path: str | None = None


class Tiny(nn.Module):
    """A backbone without batch norm: a sample's features do not depend on the rest of its batch."""

    def __init__(self):
        super().__init__()
        self.layer1 = nn.Linear(4, 8)
        self.layer2 = nn.Sequential(nn.ReLU(), nn.Linear(8, 8))
        self.num_features = 8

    def forward(self, x):
        return self.layer2(self.layer1(x))


def tiny_groups(net):
    return [ParameterGroup("layer1", [net.layer1]), ParameterGroup("layer2", [net.layer2])]


@pytest.fixture
def context():
    registry = Registry()
    add = lambda kind: lambda name, factory, description="": getattr(registry, kind).add(  # noqa: E731
        name, Entry(name, factory, description), "tlcore")
    register_metrics(add("metrics"))
    register_heads(add("heads"))
    registry.backbones.add("tiny", Backbone("tiny", Tiny, {}, tiny_groups), "tests")
    return Context(registry=registry, device=torch.device("cpu"), cache_dir=Path("."), log=logging.getLogger())


def job(heads=None, **train):
    model = {"backbone": "tiny", "metrics": METRICS, **({"heads": heads} if heads is not None else {})}
    return validate(job_model(Data, ClassifierSpec), {"plugin": "test", "model": model, "train": train})


def model_for(context, spec_job, outputs):
    torch.manual_seed(0)
    model = build_classifier(spec_job, outputs, context)
    model.eval()  # dropout of the linear heads off: gradients compare exactly
    return model


def head_grads(model, task):
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.head.heads[task].parameters()]


# ---------------------------------------------------------------- masking is exact

def test_a_sample_missing_a_label_gives_that_head_zero_gradient_and_still_trains_the_other(context):
    j = job({"a": "linear", "b": "linear"})
    model = model_for(context, j, {"a": 2, "b": 3})
    loss_fn = multitask_loss(j)
    torch.manual_seed(1)
    x = torch.randn(6, 4)
    targets = {"a": torch.tensor([0, 1, 1, 0, 1, 0]), "b": torch.tensor([2, 0, MISSING, 1, 2, 0])}

    outputs = {}
    original_forward = model.head.forward

    def keep(features):  # the logits, to see the gradient each sample's logits receive
        out = original_forward(features)
        for logits in out.values():
            logits.retain_grad()
        outputs.update(out)
        return out

    model.head.forward = keep
    loss, n = loss_fn(model, (x, targets))
    loss.backward()
    assert n == 6
    assert torch.equal(outputs["b"].grad[2], torch.zeros(3))  # exactly zero, not merely small
    assert outputs["a"].grad[2].abs().sum() > 0  # the same sample still trains head a
    with_sample = {t: head_grads(model, t) for t in ("a", "b")}

    model.head.forward = original_forward
    model.zero_grad()
    kept = [0, 1, 3, 4, 5]
    loss_fn(model, (x[kept], {t: v[kept] for t, v in targets.items()}))[0].backward()
    without_sample = {t: head_grads(model, t) for t in ("a", "b")}
    for g, h in zip(with_sample["b"], without_sample["b"]):
        assert torch.allclose(g, h, rtol=1e-6, atol=1e-7)  # head b: as if the sample were not in the batch
    assert any(not torch.allclose(g, h) for g, h in zip(with_sample["a"], without_sample["a"]))


def test_a_missing_multilabel_row_is_masked_like_a_missing_class():
    logits = torch.randn(4, 3, requires_grad=True)
    target = torch.tensor([[1.0, 0, 1], [MISSING] * 3, [0, 0, 0], [0, 1, 0]])
    loss, count = masked_loss(logits, target, multilabel=True)
    loss.backward()
    assert int(count) == 3 and torch.equal(logits.grad[1], torch.zeros(3))
    kept = torch.tensor([0, 2, 3])
    expected = nn.functional.binary_cross_entropy_with_logits(logits[kept], target[kept])
    assert torch.allclose(loss, expected)


def test_a_batch_without_labels_for_a_task_gives_finite_loss_and_no_gradient_to_its_head(context):
    for weighting in ("fixed", "uncertainty"):
        j = job({"a": "linear", "b": "linear"}, task_weighting=weighting)
        model = model_for(context, j, {"a": 2, "b": 2})
        targets = {"a": torch.tensor([0, 1, 1, 0]), "b": torch.full((4,), MISSING)}
        loss, _ = multitask_loss(j)(model, (torch.randn(4, 4), targets))
        loss.backward()
        assert torch.isfinite(loss)
        assert all(torch.equal(g, torch.zeros_like(g)) for g in head_grads(model, "b"))
        assert any(g.abs().sum() > 0 for g in head_grads(model, "a"))
        if weighting == "uncertainty":  # nor to b's weight: its s_t term is left out too
            grad = model.head.weighting.log_variances.grad
            assert grad[1] == 0 and grad[0] != 0


def test_label_smoothing_and_the_mean_over_labelled_samples_match_plain_cross_entropy():
    logits = torch.randn(5, 3)
    target = torch.tensor([0, MISSING, 2, 1, MISSING])
    loss, count = masked_loss(logits, target, multilabel=False, label_smoothing=0.1)
    kept = target != MISSING
    assert int(count) == 3
    assert torch.allclose(loss, nn.functional.cross_entropy(logits[kept], target[kept], label_smoothing=0.1))


# ---------------------------------------------------------------- combining the task losses

def test_fixed_weights_scale_the_task_losses(context):
    j = job({"a": "linear", "b": "linear"}, task_weights={"a": 2.0, "b": 0.5})
    model = model_for(context, j, {"a": 2, "b": 2})
    x = torch.randn(8, 4)
    targets = {"a": torch.randint(0, 2, (8,)), "b": torch.randint(0, 2, (8,))}
    loss, _ = multitask_loss(j)(model, (x, targets))
    logits = model(x)
    la = nn.functional.cross_entropy(logits["a"], targets["a"])
    lb = nn.functional.cross_entropy(logits["b"], targets["b"])
    assert torch.allclose(loss, 2.0 * la + 0.5 * lb)
    unweighted = job({"a": "linear", "b": "linear"})
    assert torch.allclose(multitask_loss(unweighted)(model, (x, targets))[0], la + lb)


def test_uncertainty_weights_are_learned_and_the_hard_task_weighs_less(context):
    """An easy task (the sign of a coordinate) and a hard one (random labels of 4 classes): the learned
    log-variances move away from 0, the hard task's above the easy one's (it weighs less)."""
    j = job({"easy": "linear", "hard": "linear"}, task_weighting="uncertainty")
    model = model_for(context, j, {"easy": 2, "hard": 4})
    model.train()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 4, generator=g)
    targets = {"easy": (x[:, 0] > 0).long(), "hard": torch.randint(0, 4, (64,), generator=g)}
    loss_fn = multitask_loss(j)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    log_variances = model.head.weighting.log_variances
    assert torch.equal(log_variances.detach(), torch.zeros(2))
    for step in range(150):
        optimizer.zero_grad()
        loss, _ = loss_fn(model, (x, targets))
        loss.backward()
        if step == 0:
            assert log_variances.grad is not None and (log_variances.grad != 0).all()
        optimizer.step()
    easy, hard = log_variances.detach().tolist()
    assert abs(easy) > 0.5 and abs(hard) > 0.1
    assert hard > easy + 1.0


def test_uncertainty_weighting_takes_no_fixed_weights_and_one_task_takes_neither():
    with pytest.raises(ConfigError, match="learns them"):
        task_specs(job({"a": "linear", "b": "linear"}, task_weighting="uncertainty", task_weights={"a": 2}))
    with pytest.raises(ConfigError, match="one task") as info:
        task_specs(job(task_weights={"a": 2}))
    assert info.value.where == "train.task_weights"


# ---------------------------------------------------------------- model and strategies

def test_groups_partition_the_model_and_every_strategy_verifies_with_several_heads(context):
    j = job({"a": "linear", "b": {"head": "mlp", "head_options": {"hidden": 5}}}, task_weighting="uncertainty")
    model = model_for(context, j, {"a": 2, "b": 3})
    assert isinstance(model, MultiTaskModel)
    groups = model.parameter_groups()
    assert [(g.name, g.is_head) for g in groups] == [("layer1", False), ("layer2", False), ("head.a", True),
                                                     ("head.b", True), ("task_weights", True)]
    check_groups(model, groups)
    assert model.head.heads["b"][0].out_features == 5  # the task's own head options
    for strategy in (LinearProbe(LinearProbe.Options()), FreezeUnfreeze(FreezeUnfreeze.Options()),
                     Gradual(Gradual.Options())):
        for index, phase in enumerate(plan_phases(strategy, groups, 4)):
            apply_phase(model, groups, phase)
            optimizer = torch.optim.SGD(optimizer_groups(groups, phase, 0.01), lr=0.01)
            trained = {row["group"] for row in verify_phase(model, groups, phase, optimizer, 0.01) if row["trainable"]}
            assert {"head.a", "head.b", "task_weights"} <= trained
            if index == 0:  # each of these strategies starts with the heads alone
                assert trained == {"head.a", "head.b", "task_weights"}


def test_head_options_fall_back_to_the_top_level_ones_only_for_the_same_head():
    spec = validate(job_model(Data, ClassifierSpec), {"plugin": "t", "model": {
        "backbone": "tiny", "head": "mlp", "head_options": {"hidden": 7}, "multilabel": True, "threshold": 0.3,
        "metrics": ["accuracy"],
        "heads": {"a": None, "b": "linear", "c": {"multilabel": False, "metrics": ["auroc"]}}}})
    specs = task_specs(spec)
    assert specs["a"].head == "mlp" and specs["a"].head_options == {"hidden": 7} and specs["a"].multilabel
    assert specs["b"].head == "linear" and specs["b"].head_options == {} and specs["b"].threshold == 0.3
    assert not specs["c"].multilabel and specs["c"].metrics == ["auroc"] and specs["c"].heads == {}
    assert list(task_specs(job(["x", "y"]))) == ["x", "y"]  # a list of names: the top-level head for each


def test_single_task_jobs_are_untouched(context):
    j = job()
    assert task_specs(j) == {}
    model = build_classifier(j, 2, context)
    assert [g.name for g in model.parameter_groups()][-1] == "head"
    assert model(torch.randn(3, 4)).shape == (3, 2)


# ---------------------------------------------------------------- names checked, with the name meant

def test_heads_must_name_exactly_the_data_columns():
    with pytest.raises(ConfigError) as info:
        task_specs(job({"fnding": "linear", "view": "linear"}), ["finding", "view"])
    assert "did you mean 'finding'" in info.value.fix and info.value.where == "model.heads.fnding"
    with pytest.raises(ConfigError) as info:
        task_specs(job({"finding": "linear"}), ["finding", "view"])
    assert "'view'" in info.value.what and "model.heads.view=linear" in info.value.fix
    # Without model.heads, every label column is a task with the top-level head and options.
    specs = task_specs(job(), ["finding", "view"])
    assert list(specs) == ["finding", "view"] and all(s.head == "linear" and not s.heads for s in specs.values())


def test_misspelt_task_weights_and_bad_task_names_are_refused():
    with pytest.raises(ConfigError) as info:
        task_specs(job({"finding": "linear", "view": "linear"}, task_weights={"veiw": 2.0}))
    assert "did you mean 'view'" in info.value.fix
    for name in ("a.b", "loss", "auroc", "tasks", "keys"):
        with pytest.raises(ConfigError, match="task name"):
            task_specs(job({name: "linear", "other": "linear"}))
    with pytest.raises(ConfigError, match="per task"):
        task_specs(validate(job_model(Data, ClassifierSpec), {"plugin": "t", "model": {
            "backbone": "tiny", "positive_class": "x", "heads": ["a", "b"]}}))


def test_targets_from_raw_cells_and_what_check_tasks_refuses():
    finding = TaskLabels("finding", ["effusion", "nodule"], multilabel=True)
    view = TaskLabels("view", ["AP", "PA"])
    targets = multitask_targets([finding, view], {"finding": ["nodule"], "view": ""})
    assert torch.equal(targets["finding"], torch.tensor([0.0, 1.0])) and int(targets["view"]) == MISSING
    assert torch.equal(multitask_targets([finding], {})["finding"], torch.full((2,), float(MISSING)))
    assert torch.equal(finding.target([]), torch.zeros(2))  # labelled: none of the classes
    with pytest.raises(DataError) as info:
        view.target("pa", where="row 3")
    assert "did you mean 'PA'" in info.value.fix and info.value.where == "row 3"
    with pytest.raises(DataError, match="single-label"):
        view.target(["AP", "PA"])
    j = job({"finding": {"multilabel": True}, "view": "linear"})
    rows = [multitask_targets([finding, view], cells) for cells in ({"finding": ["nodule"]}, {"finding": []})]
    with pytest.raises(DataError, match="no training sample has a label for task 'view'"):
        check_tasks(j, [finding, view], rows)
    rows.append(multitask_targets([finding, view], {"view": "AP"}))
    assert check_tasks(j, [finding, view], rows) == {"finding": 2, "view": 1}


# ---------------------------------------------------------------- metrics and intervals

class Passthrough(nn.Module):
    def forward(self, inputs):
        return inputs


def multitask_batch(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, 2, (n,), generator=g)
    b = torch.randint(0, 3, (n,), generator=g)
    a[torch.arange(n) % 5 == 1] = MISSING
    b[torch.arange(n) % 3 == 0] = MISSING
    logits = {"a": torch.randn(n, 2, generator=g) + 2 * nn.functional.one_hot(a.clamp(min=0), 2),
              "b": torch.randn(n, 3, generator=g)}
    return logits, {"a": a, "b": b}


def multitask_evaluator(context, j, logits, targets, batch=16):
    data = DataBundle(train=[], val=[], test=None, num_outputs={"a": 2, "b": 3},
                      class_names={"a": ["no", "yes"], "b": ["x", "y", "z"]})
    evaluator = MultiTaskEvaluator(j, data, context)
    n = len(targets["a"])
    for start in range(0, n, batch):
        part = slice(start, start + batch)
        evaluator.update(Passthrough(), ({t: v[part] for t, v in logits.items()},
                                         {t: v[part] for t, v in targets.items()}))
    return evaluator


def test_each_task_measures_as_a_single_task_evaluator_on_its_labelled_samples(context):
    j = job({"a": "linear", "b": "linear"}, task_weights={"b": 0.5})
    logits, targets = multitask_batch()
    result = multitask_evaluator(context, j, logits, targets).compute()
    assert result["tasks"] == ["a", "b"]
    for task, names in (("a", ["no", "yes"]), ("b", ["x", "y", "z"])):
        kept = targets[task] != MISSING
        single = ClassificationEvaluator(job(), DataBundle(train=[], val=[], test=None, num_outputs=len(names),
                                                           class_names=names), context)
        single.update(nn.Identity(), (logits[task][kept], targets[task][kept]))
        assert result[task] == single.compute()
    assert result["loss"] == pytest.approx(result["a"]["loss"] + 0.5 * result["b"]["loss"])
    for name in METRICS:
        assert result[name] == pytest.approx((result["a"][name] + result["b"][name]) / 2)
    flat = flatten_tasks(result)
    assert flat["a.auroc"] == result["a"]["auroc"] and "a" not in flat and flat["auroc"] == result["auroc"]


def test_resample_keeps_each_tasks_labelled_samples_among_the_drawn(context):
    j = job({"a": "linear", "b": "linear"})
    logits, targets = multitask_batch()
    evaluator = multitask_evaluator(context, j, logits, targets)
    assert numbers(evaluator.resample(range(40))) == pytest.approx(numbers(evaluator.compute()))
    drawn = [3, 3, 0, 7, 12, 12, 12, 25, 39, 1, 6]
    index = torch.tensor(drawn)
    fresh = multitask_evaluator(context, j, {t: v[index] for t, v in logits.items()},
                                {t: v[index] for t, v in targets.items()}, batch=4)
    assert numbers(evaluator.resample(drawn)) == pytest.approx(numbers(fresh.compute()), nan_ok=True)


def test_intervals_go_inside_each_tasks_metrics(context):
    j = job({"a": "linear", "b": "linear"})
    logits, targets = multitask_batch(n=60)
    evaluator = multitask_evaluator(context, j, logits, targets)
    metrics = evaluator.compute()
    boot = bootstrap(evaluator, None, 60, resamples=50, confidence=0.9, seed=0, unit="sample")
    assert isinstance(boot, Bootstrap) and {"auroc", "a.auroc", "b.auroc", "b.loss"} <= set(boot.values)
    out = with_intervals(metrics, boot)
    for task in ("a", "b"):
        low, high = out[task]["auroc_ci"]
        assert low <= out[task]["auroc"] <= high
    assert "auroc_ci" in out and "a.auroc_ci" not in out and out["bootstrap"]["resamples"] == 50
    line = shown(out)
    assert line.startswith("loss ") and "auroc " in line and "a.auroc " in line and "b.accuracy " in line
    assert json.loads(json.dumps(out)) == out  # metrics.json holds it as it is


def test_a_task_undefined_everywhere_is_left_out_of_the_mean(context):
    j = job({"a": "linear", "b": "linear"})
    logits, targets = multitask_batch()
    targets["a"][targets["a"] != MISSING] = 1  # one class only: AUROC undefined for a
    result = multitask_evaluator(context, j, logits, targets).compute()
    assert result["a"]["auroc"] is None and result["auroc"] == pytest.approx(result["b"]["auroc"])
    assert result["averaged_over"]["auroc"] == 1 and "task a" in result["undefined"]["auroc"]


def test_predictions_of_every_task():
    specs = task_specs(job({"a": "linear", "b": {"multilabel": True, "threshold": 0.4}}))
    rows = task_predictions(specs, {"a": ["no", "yes"], "b": ["x", "y"]},
                            {"a": torch.tensor([[0.2, 0.8]]), "b": torch.tensor([[0.5, 0.3]])})
    assert rows == [{"a": {"predicted": "yes", "probabilities": {"no": pytest.approx(0.2), "yes": pytest.approx(0.8)}},
                     "b": {"predicted": ["x"], "probabilities": {"x": 0.5, "y": pytest.approx(0.3)}}}]
    assert list(prediction_columns(rows[0])) == ["a", "b", "p_a_no", "p_a_yes", "p_b_x", "p_b_y"]


# ---------------------------------------------------------------- the CLI, end to end

TWO_TASKS = ("--set", "data.label_columns=[blob, sign, parts]",
             "--set", "model.heads={blob: linear, sign: linear, parts: {multilabel: true}}")


def test_a_multitask_run_reports_every_task_with_intervals(toy_plugin, tlapp):
    code, out, err = tlapp("run", "--plugin", "toy", "--output", "m", "--epochs", "2", *TWO_TASKS,
                           "--set", "train.monitor=sign.auroc", "--set", "train.monitor_mode=max")
    assert code == 0, err
    m = read_metrics("m")
    assert m["class_names"] == {"blob": ["a", "b"], "sign": ["neg", "pos"], "parts": ["x0", "x1"]}
    assert m["data"]["labelled_for_training"] == {"blob": 19, "sign": 16, "parts": 18}
    final = m["metrics"]
    assert final["tasks"] == ["blob", "sign", "parts"]
    for task in final["tasks"]:
        assert {"loss", "accuracy", "auroc", "auroc_ci", "loss_ci"} <= set(final[task])
    assert {"loss", "auroc", "auroc_ci"} <= set(final)
    assert {"sign.auroc", "blob.loss", "auroc"} <= set(m["history"][0]["val"])
    assert "sign.auroc" in out or "sign.auroc" in Path("m/train.log").read_text()
    state = torch.load("m/checkpoints/best.pt", weights_only=True)
    assert state["num_outputs"] == {"blob": 2, "sign": 2, "parts": 2} and state["monitor"] == "sign.auroc"
    code, _, err = tlapp("evaluate", "--run", "m", "--output", "again.json")  # the model rebuilt from the checkpoint
    assert code == 0, err
    again = json.loads(Path("again.json").read_text())["metrics"]
    assert again["sign"]["auroc"] == pytest.approx(final["sign"]["auroc"])


def test_linear_probe_with_uncertainty_weighting_trains_the_heads_on_cached_features(toy_plugin, tlapp):
    code, _, err = tlapp("run", "--plugin", "toy", "--output", "u", "--epochs", "3", *TWO_TASKS,
                         "--set", "train.task_weighting=uncertainty", "--set", "strategy.name=linear-probe")
    assert code == 0, err
    m = read_metrics("u")
    assert all(h["feature_cache"] for h in m["history"])
    table = {row["group"]: row["trainable"] for row in m["phases"][0]["groups"]}
    assert table == {"layer1": False, "layer2": False, "head.blob": True, "head.sign": True, "head.parts": True,
                     "task_weights": True}
    learned = torch.load("u/checkpoints/last.pt", weights_only=True)["model"]["head.weighting.log_variances"]
    assert (learned != 0).all()


def test_the_single_task_toy_run_reports_as_before(toy_plugin, tlapp):
    assert tlapp("run", "--plugin", "toy", "--output", "s", "--epochs", "1")[0] == 0
    m = read_metrics("s")
    assert set(m["metrics"]) == {"loss", "accuracy", "f1_macro", "auroc", "averaged_over", "loss_ci", "accuracy_ci",
                                 "f1_macro_ci", "auroc_ci", "bootstrap"}
    assert set(m["history"][0]["val"]) == {"loss", "accuracy", "f1_macro", "auroc"}
    assert m["class_names"] == ["a", "b"]


@pytest.mark.parametrize("sets, says", [
    (("--set", "data.label_columns=[blob, sign]", "--set", "model.heads={blob: linear, sgn: linear}"),
     ["'sgn'", "did you mean 'sign'"]),
    (("--set", "model.heads={blob: linear, sign: linear}", "--set", "train.task_weights={sing: 2}"),
     ["train.task_weights", "did you mean 'sign'"]),
    (("--set", "model.heads={blob: linear, sign: linear}", "--set", "train.monitor=sgn.auroc"),
     ["train.monitor", "did you mean 'sign.auroc'"]),
    (("--set", "model.heads={blob: {head: linear, treshold: 0.3}}",), ["model.heads.blob.treshold",
                                                                        "did you mean 'model.heads.blob.threshold'"]),
    (("--set", "data.label_columns=[blob, parts]", "--set", "model.heads=[blob, parts]"),
     ["single-label", "model.heads.parts.multilabel=true"]),
])
def test_misspelt_tasks_fail_before_training_with_the_name_meant(toy_plugin, tlapp, sets, says):
    code, out, err = tlapp("run", "--plugin", "toy", "--output", "bad", "--epochs", "1", *sets)
    assert code == 2, err
    assert "Traceback" not in err
    for fragment in says:
        assert fragment in err, (fragment, err)


def test_auto_races_and_compare_ranks_by_one_tasks_metric(toy_plugin, tlapp):
    code, _, err = tlapp("run", "--plugin", "toy", "--output", "a", "--epochs", "2", *TWO_TASKS,
                         "--set", "strategy.name=auto", "--set", "strategy.race_on=val",
                         "--set", "train.monitor=blob.auroc", "--set", "train.monitor_mode=max")
    assert code == 0, err
    race = read_metrics("a")["strategy_choice"]["race"]
    assert (race["metric"], race["mode"]) == ("blob.auroc", "max")
    assert all(c["score"] is not None for c in race["candidates"])
    code, out, err = tlapp("compare", "--plugin", "toy", "--strategies", "scratch,linear-probe", "--output", "c",
                           "--epochs", "1", *TWO_TASKS, "--metric", "sign.auroc")
    assert code == 0, err
    report = json.loads(Path("c/comparison.json").read_text())
    assert report["verdict"]["metric"] == "sign.auroc" and "comparisons" in report["verdict"]
    assert "sign.auroc" in report["runs"][0]["intervals"] and "auroc" in report["summary"]["scratch"]["metrics"]
    assert "Best on sign.auroc" in out


def test_a_multitask_target_reads_as_each_tasks_class():
    from tlcore import ClassificationTask

    target = {"finding": torch.tensor([1.0, 1.0]), "view": torch.tensor(MISSING), "side": torch.tensor(0)}
    names = {"finding": ["effusion", "nodule"], "view": ["AP", "PA"], "side": ["left", "right"]}
    assert ClassificationTask.target_name(target, names) == "finding: effusion+nodule, view: -, side: left"


def test_an_interrupted_multitask_run_resumes_exactly(toy_plugin, tlapp, monkeypatch):
    args = ("run", "--plugin", "toy", "--epochs", "4", *TWO_TASKS, "--set", "train.task_weighting=uncertainty",
            "--set", "strategy.name=freeze-unfreeze", "--set", "strategy.head_epochs=2")
    straight, resumed = interrupted_and_resumed(tlapp, monkeypatch, args)
    assert all(torch.equal(tensor, resumed["model"][key]) for key, tensor in straight["model"].items())
    assert read_metrics("broken")["metrics"] == read_metrics("straight")["metrics"]


def test_compare_sets_single_task_against_multi_task_on_one_tasks_metric(toy_plugin, tlapp):
    code, out, err = tlapp("compare", "--plugin", "toy", "--strategies", "finetune", "--output", "c", "--epochs", "1",
                           "--variant", "single:data.label_columns=[blob]",
                           "--variant", "multi:data.label_columns=[blob, sign]", "--metric", "blob.accuracy")
    assert code == 0, err
    report = json.loads(Path("c/comparison.json").read_text())
    assert [r["strategy"] for r in report["runs"]] == ["finetune/single", "finetune/multi"]
    assert read_metrics("c/finetune/multi")["metrics"]["tasks"] == ["blob", "sign"]
    assert read_metrics("c/finetune/single")["metrics"]["tasks"] == ["blob"]
    verdict = report["verdict"]
    assert verdict["metric"] == "blob.accuracy" and verdict["comparisons"][0]["against"] in {"finetune/single",
                                                                                           "finetune/multi"}
    assert "finetune/multi" in out and "finetune/single" in out


@pytest.mark.parametrize("variants, said", [
    (("--variant", "alone:"), "one --variant is nothing to compare"),
    (("--variant", "a:", "--variant", "b:train.lr"), "is not NAME:KEY=VALUE"),
    (("--variant", "a:", "--variant", "b:train.lrr=0.1"), "train.lrr"),
])
def test_bad_variants_fail_before_any_run(toy_plugin, tlapp, variants, said):
    code, _, err = tlapp("compare", "--plugin", "toy", "--strategies", "finetune", "--output", "c", *variants)
    assert code == 2 and said in err
    assert not Path("c").exists()


def test_the_epoch_line_shows_each_tasks_value_of_a_mean_monitor(toy_plugin, tlapp):
    code, out, err = tlapp("run", "--plugin", "toy", "--output", "m", "--epochs", "1", *TWO_TASKS,
                           "--set", "train.monitor=accuracy", "--set", "train.monitor_mode=max")
    assert code == 0, err
    line = next(line for line in (out + err).splitlines() if "epoch 1/1: train_loss" in line)
    val = read_metrics("m")["history"][0]["val"]
    assert f"val accuracy {val['accuracy']:.4g} (blob {val['blob.accuracy']:.4g}, sign " in line


def test_auto_folds_stratify_a_multitask_job_by_its_first_task():
    from tlcore.race import _labels

    targets = [{"a": torch.tensor(i % 2), "b": torch.tensor(MISSING)} for i in range(6)]
    dataset = [(torch.zeros(2), t) for t in targets]
    assert _labels(dataset, DataBundle(dataset, dataset, None, {"a": 2, "b": 2}), 4) == [0, 1, 0, 1, 0, 1]
