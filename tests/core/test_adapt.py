"""Domain adaptation (``adapt.method`` dann | coral, ``--target-data``, ``--target-test``): the losses, the choice of
method among the job's sections, the run's records, exact resume, and clear errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from helpers import interrupted_and_resumed, read_metrics
from tlcore.adapt import Dann, DannOptions, GradientReversal, coral_loss


@pytest.fixture
def domains(toy_plugin, tlapp):
    """The toy's target domain: every vector shifted by 3."""
    Path("target.txt").write_text("3.0\n")
    return Path("target.txt")


# ---------------------------------------------------------------- the pieces


def test_coral_is_the_squared_distance_of_covariances_over_four_d_squared():
    g = torch.Generator().manual_seed(0)
    source, target = torch.randn(12, 3, generator=g), 2 * torch.randn(10, 3, generator=g) + 1
    expected = ((torch.cov(source.T) - torch.cov(target.T)) ** 2).sum() / (4 * 9)
    assert torch.allclose(coral_loss(source, target), expected)
    assert coral_loss(source, source + 5.0) < 1e-10  # a shift of the mean alone is not a covariance difference


def test_gradient_reversal_is_the_identity_forward_and_negates_the_gradient_backward():
    x = torch.randn(4, 2, requires_grad=True)
    y = GradientReversal.apply(x, 0.3)
    assert torch.equal(y, x)
    y.sum().backward()
    assert torch.allclose(x.grad, torch.full_like(x, -0.3))


def test_the_reversal_ramps_from_zero_to_one_as_in_ganin_et_al():
    method = Dann(DannOptions())
    method.total_steps = 100
    assert method.strength() == 0.0
    method.steps_done = 50
    assert method.strength() == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    method.steps_done = 100
    assert method.strength() == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert Dann(DannOptions(ramp=0)).strength() == 1.0


# ---------------------------------------------------------------- runs


@pytest.mark.parametrize("method", ["dann", "coral"])
def test_an_adapted_run_records_its_alignment_and_the_target_test(domains, tlapp, method):
    code, _, err = tlapp("run", "--plugin", "toy", "--output", "run", "--target-data", "target.txt",
                         "--target-test", "target.txt", "--set", f"adapt.method={method}")
    assert code == 0, err
    metrics = read_metrics(Path("run"))
    assert metrics["method"]["name"] == method and metrics["method"]["section"] == "adapt"
    assert metrics["adaptation"]["samples"] == 64 and metrics["adaptation"]["data"] == "target.txt"
    assert all("alignment_loss" in h["adapt"] for h in metrics["history"])
    if method == "dann":
        assert all(0 <= h["adapt"]["domain_accuracy"] <= 1 for h in metrics["history"])
        strengths = [h["adapt"]["reversal_strength"] for h in metrics["history"]]
        assert strengths == sorted(strengths) and strengths[0] < strengths[-1]
    target = metrics["target_test"]
    assert target["samples"] == 64 and "accuracy_ci" in target["metrics"]
    assert Path("run/bootstrap_target_test.json").exists()
    assert "target test metrics" in Path("run/train.log").read_text()


def test_a_source_only_run_measures_the_target_test_too(domains, tlapp):
    code, _, err = tlapp("run", "--plugin", "toy", "--output", "run", "--target-test", "target.txt")
    assert code == 0, err
    metrics = read_metrics(Path("run"))
    assert metrics["method"]["name"] == "supervised" and "adaptation" not in metrics
    assert metrics["target_test"]["metrics"]["accuracy"] is not None
    assert all("adapt" not in h for h in metrics["history"])


def test_the_discriminator_trains_and_its_weights_are_checkpointed(domains, tlapp):
    assert tlapp("run", "--plugin", "toy", "--output", "run", "--target-data", "target.txt",
                 "--set", "adapt.method=dann", "--set", "adapt.hidden=8")[0] == 0
    state = torch.load("run/checkpoints/last.pt", weights_only=True)
    weights = state["method"]["modules"]["discriminator"]
    assert weights["0.weight"].shape == (8, 16)
    budget = read_metrics(Path("run"))["budget"]
    assert state["method"]["steps_done"] == budget["epochs"] * budget["steps_per_epoch"]


def test_an_interrupted_adapted_run_resumes_exactly(domains, tlapp, monkeypatch):
    args = ("run", "--plugin", "toy", "--epochs", "3", "--target-data", "target.txt", "--set", "adapt.method=dann")
    straight, resumed = interrupted_and_resumed(tlapp, monkeypatch, args)
    assert all(torch.equal(t, resumed["model"][k]) for k, t in straight["model"].items())
    for name, t in straight["method"]["modules"]["discriminator"].items():
        assert torch.equal(t, resumed["method"]["modules"]["discriminator"][name])


# ---------------------------------------------------------------- jobs that cannot run


def _refused(tlapp, *args: str) -> str:
    code, _, err = tlapp("run", "--plugin", "toy", "--output", "x", *args)
    assert code == 2, err
    assert not Path("x").exists()  # refused before anything is written
    return err


def test_an_adaptation_method_without_target_data_is_refused(domains, tlapp):
    err = _refused(tlapp, "--set", "adapt.method=dann")
    assert "needs the target domain's unlabelled data" in err and "--target-data PATH" in err


def test_missing_target_data_is_refused(domains, tlapp):
    err = _refused(tlapp, "--set", "adapt.method=coral", "--target-data", "nowhere.txt")
    assert "unlabelled data not found: nowhere.txt" in err and "check --target-data" in err


def test_a_misspelt_adaptation_method_is_named(domains, tlapp):
    err = _refused(tlapp, "--set", "adapt.method=dan", "--target-data", "target.txt")
    assert "unknown training method 'dan'" in err and "did you mean 'dann'" in err and "adapt.method" in err


def test_an_adaptation_method_is_chosen_in_its_own_section(domains, tlapp):
    err = _refused(tlapp, "--set", "method.name=dann")
    assert "'dann' is not chosen with method.name" in err and "--set adapt.method=dann" in err
    err = _refused(tlapp, "--set", "adapt.method=supervised", "--target-data", "target.txt")
    assert "--set method.name=supervised" in err


def test_an_option_of_no_method_is_refused(domains, tlapp):
    err = _refused(tlapp, "--set", "adapt.weight=0.5")
    assert "adapt.weight is an option of a method, and adapt.method is none" in err


def test_an_unknown_option_of_an_adaptation_method_names_the_known_ones(domains, tlapp):
    err = _refused(tlapp, "--set", "adapt.method=coral", "--target-data", "target.txt", "--set", "adapt.hiden=3")
    assert "adapt.hiden" in err and "options of coral: method, target, target_test, weight" in err


def test_two_methods_in_one_job_are_refused(domains, tlapp):
    err = _refused(tlapp, "--set", "adapt.method=coral", "--target-data", "target.txt", "--teacher", "run:t")
    assert "one training method per job" in err and "method.name=distill and adapt.method=coral" in err


def test_a_target_test_of_other_classes_is_refused_before_training(domains, tlapp):
    # The toy reads a target test with one label; a multi-task job's classes are by task.
    code, _, err = tlapp("run", "--plugin", "toy", "--output", "x", "--target-test", "target.txt",
                         "--set", "data.label_columns=[blob,sign]")
    assert code == 2 and "classes of the data" in err and "adapt.target_test: target.txt" in err
    assert read_metrics(Path("x"))["status"] == "failed" and not Path("x/checkpoints/last.pt").exists()


def test_compare_ranks_source_only_against_adaptation_on_the_target_test(domains, tlapp):
    code, out, err = tlapp("compare", "--plugin", "toy", "--strategies", "finetune", "--output", "cmp",
                           "--target-data", "target.txt", "--target-test", "target.txt",
                           "--variant", "source-only:adapt.method=none", "--variant", "coral:adapt.method=coral")
    assert code == 0, err
    report = json.loads(Path("cmp/comparison.json").read_text())
    rows = {r["strategy"]: r for r in report["runs"]}
    assert {"finetune/source-only", "finetune/coral"} <= set(rows)
    for row in (rows["finetune/source-only"], rows["finetune/coral"]):
        assert "target_test.accuracy" in row["metrics"] and "target_test.accuracy" in row["intervals"]
    assert report["verdict"]["metric"] == "target_test.accuracy"
    assert "target_test.accuracy" in out
