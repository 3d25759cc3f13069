"""Semi-supervised fine-tuning (``semi.method`` pseudo-label | fixmatch, ``--unlabelled-data``): the loss, the
per-epoch pseudo-label records, exact resume, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import interrupted_and_resumed, read_metrics
from tlcore import MISSING
from tlcore.semi import FixMatch, PseudoLabel, SemiOptions


@pytest.fixture
def pool(toy_plugin, tlapp):
    """The toy's unlabelled pool, of the source domain (shift 0); its vectors carry hidden labels."""
    Path("pool.txt").write_text("0\n")
    return Path("pool.txt")


class Fixed(nn.Module):
    """Returns the logits it is given as inputs: predictions chosen by the test."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, inputs):
        return inputs * self.scale


def _method(cls, **options):
    method = cls(SemiOptions(**options))
    method._loss = lambda model, batch: (torch.zeros(()), 2)
    return method


def test_only_confident_predictions_become_labels_and_the_loss_averages_over_the_whole_batch():
    method = _method(PseudoLabel, threshold=0.9, weight=2.0)
    logits = torch.tensor([[5.0, 0.0], [0.2, 0.0], [0.0, 4.0]])  # confident, not, confident
    hidden = torch.tensor([0, 1, 0])
    loss, n = method.loss(Fixed(), None, {"unlabelled": (logits, hidden)})
    expected = F.cross_entropy(logits, torch.tensor([0, 0, 1]), reduction="none") * torch.tensor([1.0, 0.0, 1.0])
    assert n == 2 and torch.allclose(loss, 2.0 * expected.mean())
    summary = method.epoch_summary()
    assert summary["pseudo_labels"] == 2 and summary["pseudo_label_rate"] == pytest.approx(2 / 3)
    assert summary["pseudo_label_accuracy"] == pytest.approx(0.5)  # the first is right, the third wrong
    assert method.epoch_summary()["pseudo_labels"] == 0  # each epoch counts afresh


def test_fixmatch_labels_the_strong_view_with_the_weak_views_prediction():
    method = _method(FixMatch, threshold=0.9)
    weak = torch.tensor([[6.0, 0.0], [0.0, 0.1]])
    strong = torch.tensor([[0.0, 1.0], [3.0, 0.0]])
    model = Fixed()
    loss, _ = method.loss(model, None, {"unlabelled": ((weak, strong), torch.tensor([MISSING, MISSING]))})
    expected = F.cross_entropy(strong[:1], torch.tensor([0])) / 2
    assert torch.allclose(loss, expected)
    loss.backward()
    assert model.scale.grad is not None and model.scale.grad != 0  # through the strong view only
    assert method.epoch_summary()["pseudo_label_accuracy"] is None  # no hidden labels to check against


@pytest.mark.parametrize("method", ["pseudo-label", "fixmatch"])
def test_a_semi_supervised_run_records_its_pseudo_labels_each_epoch(pool, tlapp, method):
    code, _, err = tlapp("run", "--plugin", "toy", "--output", "run", "--unlabelled-data", "pool.txt",
                         "--set", f"semi.method={method}", "--set", "semi.threshold=0.6", "--epochs", "3")
    assert code == 0, err
    metrics = read_metrics(Path("run"))
    assert metrics["method"] == {"name": method, "section": "semi",
                                 "options": {"threshold": 0.6, "ratio": 2, "weight": 1.0}}
    assert metrics["semi_supervised"]["samples"] == 64
    records = [h["semi"] for h in metrics["history"]]
    assert all(0 <= r["pseudo_label_rate"] <= 1 for r in records)
    assert records[-1]["pseudo_labels"] > 0 and records[-1]["pseudo_label_accuracy"] > 0.5


def test_the_unlabelled_batch_is_ratio_times_the_labelled_one(pool, tlapp, monkeypatch):
    seen = []
    original = PseudoLabel.views_of
    monkeypatch.setattr(PseudoLabel, "views_of", lambda self, model, inputs: seen.append(len(inputs))
                        or original(self, model, inputs))
    assert tlapp("run", "--plugin", "toy", "--output", "run", "--unlabelled-data", "pool.txt", "--epochs", "1",
                 "--set", "semi.method=pseudo-label", "--set", "semi.ratio=3")[0] == 0
    batch = read_metrics(Path("run"))["budget"]["batch_size"]
    assert seen and set(seen) == {3 * batch}


def test_an_interrupted_semi_supervised_run_resumes_exactly(pool, tlapp, monkeypatch):
    args = ("run", "--plugin", "toy", "--epochs", "3", "--unlabelled-data", "pool.txt", "--set", "semi.method=fixmatch",
            "--set", "semi.threshold=0.6")
    straight, resumed = interrupted_and_resumed(tlapp, monkeypatch, args)
    assert all(torch.equal(t, resumed["model"][k]) for k, t in straight["model"].items())
    records = [[h["semi"] for h in read_metrics(Path(run))["history"]] for run in ("straight", "broken")]
    assert records[0] == records[1]


def _refused(tlapp, *args: str) -> str:
    code, _, err = tlapp("run", "--plugin", "toy", "--output", "x", *args)
    assert code == 2, err
    assert not Path("x").exists()
    return err


def test_a_semi_supervised_method_without_unlabelled_data_is_refused(pool, tlapp):
    err = _refused(tlapp, "--set", "semi.method=fixmatch")
    assert "semi.method fixmatch needs the unlabelled data" in err and "--unlabelled-data PATH" in err


def test_a_multitask_job_is_refused_for_pseudo_labels(pool, tlapp):
    err = _refused(tlapp, "--unlabelled-data", "pool.txt", "--set", "semi.method=pseudo-label",
                   "--set", "data.label_columns=[blob,sign]")
    assert "pseudo-labels one class per sample; this job is multi-task" in err


def test_semi_supervised_and_adapted_at_once_is_refused(pool, tlapp):
    err = _refused(tlapp, "--unlabelled-data", "pool.txt", "--set", "semi.method=pseudo-label",
                   "--target-data", "pool.txt", "--set", "adapt.method=coral")
    assert "adapt.method=coral and semi.method=pseudo-label" in err


def test_a_misspelt_semi_supervised_option_is_named(pool, tlapp):
    err = _refused(tlapp, "--unlabelled-data", "pool.txt", "--set", "semi.method=fixmatch", "--set", "semi.treshold=1")
    assert "semi.treshold" in err and "options of fixmatch: method, unlabelled, threshold, ratio, weight" in err


def test_the_plugin_must_read_unlabelled_data(tlapp, monkeypatch, toy_plugin):
    from tlcore.task import Task

    import tlapp_toy  # the toy installed by the fixture

    monkeypatch.setattr(tlapp_toy.ToyTask, "unlabelled_data", Task.unlabelled_data)
    Path("pool.txt").write_text("0\n")
    err = _refused(tlapp, "--unlabelled-data", "pool.txt", "--set", "semi.method=pseudo-label")
    assert "does not read unlabelled data" in err

