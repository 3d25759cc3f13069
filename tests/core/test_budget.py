"""Training budgets that follow the data: ``train.epochs: auto`` (enough epochs for ``train.min_steps``
optimizer steps, clamped to [min_epochs, max_epochs]) and ``train.min_batches`` (a small training set trains
at a smaller batch size), recorded in metrics.json and the checkpoints, used by phases, schedule and resume.

Toy training sets: ``data.n`` vectors give ``n - 2 * (n // 3)`` training samples (22 for n=64)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from helpers import read_metrics
from tlcore import checkpoint
from tlcore.budget import Budget, plan_budget
from tlcore.config import TrainSpec

TOY = ("run", "--plugin", "toy", "--seed", "3")
# 22 training samples at batch size 8: 3 steps per epoch, so 12 steps take 4 epochs.
AUTO = ("--set", "train.epochs=auto", "--set", "train.min_steps=12", "--set", "train.max_epochs=6")


def _last(run: str) -> dict:
    return torch.load(f"{run}/checkpoints/last.pt", weights_only=True)


def _budget(**train) -> Budget:
    spec = TrainSpec(**train)
    return plan_budget(spec, 22, lambda size: -(-22 // size))


def test_auto_epochs_take_min_steps_in_whole_epochs_within_the_clamp():
    assert _budget(epochs="auto", min_steps=12, batch_size=8).epochs == 4  # 3 steps per epoch
    assert _budget(epochs="auto", min_steps=12, batch_size=8, grad_accum=2).epochs == 6  # 2 optimizer steps each
    assert _budget(epochs="auto", min_steps=1000, batch_size=8, max_epochs=9).epochs == 9
    assert _budget(epochs="auto", min_steps=1, batch_size=8, min_epochs=2).epochs == 2
    assert _budget(epochs=7, min_steps=1000, batch_size=8).epochs == 7  # whole numbers are exact


def test_min_batches_lowers_the_batch_size_of_a_small_training_set_only():
    small = _budget(batch_size=16, min_batches=4)
    assert (small.batch_size, small.steps_per_epoch) == (5, 5)  # 22 // 4; 22 samples in batches of 5
    assert "22 samples // train.min_batches 4" in small.batch_rule
    assert _budget(batch_size=4, min_batches=4).batch_size == 4  # 22 >= 4 x 4: unchanged
    assert _budget(batch_size=16).batch_size == 16  # min_batches unset: exact
    assert plan_budget(TrainSpec(batch_size=16, min_batches=4), 3, lambda size: 3).batch_size == 1


def test_runs_size_epochs_to_their_training_set(toy_plugin, tlapp):
    for n, steps, epochs in ((64, 3, 4), (300, 13, 1), (16, 1, 6)):  # 22, 100 and 6 training samples
        code, _, err = tlapp(*TOY, *AUTO, "--set", f"data.n={n}", "--output", f"n{n}")
        assert code == 0, err
        m = read_metrics(f"n{n}")
        assert m["budget"]["steps_per_epoch"] == steps and m["budget"]["epochs"] == epochs, m["budget"]
        assert m["epochs"] == epochs and [h["epoch"] for h in m["history"]] == list(range(1, epochs + 1))
    assert read_metrics("n64")["budget"] == {
        "epochs": 4, "rule": "auto: min_steps 12 / 3 steps per epoch, clamped to [1, 6]", "batch_size": 8,
        "batch_rule": "train.batch_size 8", "steps_per_epoch": 3, "train_samples": 22}
    assert yaml.safe_load(Path("n64/config.yaml").read_text())["train"]["epochs"] == "auto"  # what was asked
    assert "budget: 4 epochs of 3 optimizer steps at batch size 8" in Path("n64/train.log").read_text()
    assert _last("n64")["budget"]["epochs"] == 4


@pytest.fixture
def auto_recipe(toy_plugin, monkeypatch):
    """The toy task with a recipe of auto epochs and min_batches, as the bundled plugins have."""
    import tlapp_toy

    recipe = {**tlapp_toy.ToyTask.recipe, "train": {"epochs": "auto", "min_steps": 12, "max_epochs": 6,
                                                    "batch_size": 8, "min_batches": 4, "lr": 0.01}}
    monkeypatch.setattr(tlapp_toy.ToyTask, "recipe", recipe)


def test_explicit_epochs_and_batch_size_win_over_the_recipe(auto_recipe, tlapp):
    assert tlapp(*TOY, "--set", "data.n=30", "--output", "recipe")[0] == 0  # 10 training samples
    assert read_metrics("recipe")["budget"]["batch_size"] == 2 and read_metrics("recipe")["epochs"] == 3
    assert tlapp(*TOY, "--set", "data.n=30", "--epochs", "2", "--output", "flag")[0] == 0
    assert tlapp(*TOY, "--set", "data.n=30", "--set", "train.epochs=1", "--output", "set")[0] == 0
    assert read_metrics("flag")["epochs"] == 2 and read_metrics("set")["epochs"] == 1
    assert read_metrics("flag")["budget"]["rule"] == "train.epochs 2"
    # A batch size the user gives is exact; min_batches given too lowers it again.
    assert tlapp(*TOY, "--set", "data.n=30", "--batch-size", "8", "--output", "exact")[0] == 0
    assert read_metrics("exact")["budget"]["batch_size"] == 8
    assert yaml.safe_load(Path("exact/config.yaml").read_text())["train"]["min_batches"] is None
    assert tlapp(*TOY, "--set", "data.n=30", "--batch-size", "8", "--set", "train.min_batches=5",
                 "--output", "both")[0] == 0
    assert read_metrics("both")["budget"]["batch_size"] == 2


def test_resumed_auto_run_ends_exactly_as_an_uninterrupted_one(toy_plugin, tlapp, monkeypatch):
    assert tlapp(*TOY, *AUTO, "--output", "straight")[0] == 0
    monkeypatch.setenv("TLAPP_TOY_INTERRUPT_AFTER", "2")
    assert tlapp(*TOY, *AUTO, "--output", "r")[0] == 130
    monkeypatch.delenv("TLAPP_TOY_INTERRUPT_AFTER")
    code, _, err = tlapp("run", "--output", "r", "--resume")  # config.yaml says auto: no change
    assert code == 0, err
    straight, resumed = _last("straight"), _last("r")
    assert resumed["epoch"] == straight["epoch"] == 4
    for key, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][key]), key
    learning = lambda m: [(h["epoch"], h["train_loss"], h["val"]) for h in m["history"]]  # noqa: E731
    assert learning(read_metrics("r")) == learning(read_metrics("straight"))
    assert read_metrics("r")["metrics"] == read_metrics("straight")["metrics"]
    assert read_metrics("r")["budget"] == read_metrics("straight")["budget"]


def test_resume_continues_with_the_recorded_budget(toy_plugin, tlapp, monkeypatch):
    monkeypatch.setenv("TLAPP_TOY_INTERRUPT_AFTER", "1")
    assert tlapp(*TOY, *AUTO, "--output", "r")[0] == 130
    monkeypatch.delenv("TLAPP_TOY_INTERRUPT_AFTER")
    last = checkpoint.load(Path("r/checkpoints/last.pt"))
    last["budget"]["epochs"] = 5  # not what the data gives (4): the recorded number is the one used
    checkpoint.save(Path("r/checkpoints/last.pt"), last)
    assert tlapp("run", "--output", "r", "--resume")[0] == 0
    assert read_metrics("r")["epochs"] == 5 and read_metrics("r")["budget"]["epochs"] == 5


def test_an_auto_run_may_grow_by_whole_epochs_on_resume(toy_plugin, tlapp):
    assert tlapp(*TOY, *AUTO, "--output", "r")[0] == 0  # 4 epochs
    code, _, err = tlapp("run", "--output", "r", "--resume", "--epochs", "3")
    assert code == 2 and 'train.epochs: "auto" (resolved to 4) -> 3' in err, err
    code, _, err = tlapp("run", "--output", "r", "--resume", "--epochs", "4")  # the same length: no change
    assert code == 0, err
    assert tlapp("run", "--output", "r", "--resume", "--epochs", "5")[0] == 0
    m = read_metrics("r")
    assert [h["epoch"] for h in m["history"]] == [1, 2, 3, 4, 5] and m["budget"]["epochs"] == 5
    assert yaml.safe_load(Path("r/config.yaml").read_text())["train"]["epochs"] == 5
    # Settings only auto reads are no change to a run of whole epochs.
    assert tlapp("run", "--output", "r", "--resume", "--set", "train.min_steps=99")[0] == 0


def test_phases_and_schedule_follow_the_resolved_epochs(toy_plugin, tlapp):
    code, _, err = tlapp(*TOY, *AUTO, "--strategy", "freeze-unfreeze", "--set", "strategy.head_epochs=1",
                         "--set", "train.schedule.warmup_fraction=0", "--output", "r")
    assert code == 0, err
    m = read_metrics("r")
    assert [(p["start_epoch"], p["end_epoch"]) for p in m["phases"]] == [(1, 1), (2, 4)]
    # The second phase's cosine ran its full length (3 epochs x 3 steps): its rate ends at zero.
    last = _last("r")
    assert last["scheduler"]["last_epoch"] == 9
    assert all(abs(g["lr"]) < 1e-12 for g in last["optimizer"]["param_groups"])


def test_lr_find_plans_the_first_phase_with_auto_epochs(toy_plugin, tlapp):
    code, out, err = tlapp("lr-find", "--plugin", "toy", *AUTO, "--steps", "10", "--output", "lf")
    assert code == 0, err
    assert Path("lf/lr_find.json").exists()


def test_epochs_are_a_whole_number_or_auto(toy_plugin, tlapp):
    for value, says in (("autom", "a whole number of epochs (1 or more) or 'auto'"), ("0", "1 or more"),
                        ("true", "boolean")):
        code, _, err = tlapp(*TOY, "--set", f"train.epochs={value}", "--output", "bad")
        assert code == 2 and "train.epochs" in err and says in err, err
    code, _, err = tlapp(*TOY, "--set", "train.min_epochs=5", "--set", "train.max_epochs=3", "--output", "bad")
    assert code == 2 and "train.max_epochs" in err and "below train.min_epochs (5)" in err, err


def test_a_run_from_before_budgets_resumes_under_a_recipe_of_auto_epochs(auto_recipe, tlapp):
    """A run written before budgets existed: its config.yaml and checkpoint lack the budget settings and its
    checkpoint has no ``budget``. Its whole epochs may still grow, at its own batch size."""
    assert tlapp(*TOY, "--set", "data.n=30", "--epochs", "1", "--output", "old")[0] == 0
    new_keys = ("min_steps", "min_epochs", "max_epochs", "min_batches")
    saved = yaml.safe_load(Path("old/config.yaml").read_text())
    saved["train"] = {k: v for k, v in saved["train"].items() if k not in new_keys}
    Path("old/config.yaml").write_text(yaml.safe_dump(saved))
    last = checkpoint.load(Path("old/checkpoints/last.pt"))
    last["job"] = saved
    del last["budget"]
    checkpoint.save(Path("old/checkpoints/last.pt"), last)
    code, _, err = tlapp("run", "--output", "old", "--resume", "--epochs", "2")
    assert code == 0, err
    m = read_metrics("old")
    assert m["epochs"] == 2 and m["budget"]["batch_size"] == 8  # no min_batches then: none now
