"""``--strategy auto``: the race of candidate strategies, its folds, its record and what it leaves behind."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from helpers import read_metrics
from tlcore.auto import Auto
from tlcore.race import _split

RACE = ("--strategy", "auto", "--epochs", "4")


def test_auto_races_candidates_with_successive_halving_and_records_the_race(toy_plugin, tlapp):
    code, out, err = tlapp("run", "--plugin", "toy", *RACE, "--set", "strategy.race_fraction=1", "--output", "a")
    assert code == 0, err
    metrics = read_metrics("a")
    choice = metrics["strategy_choice"]
    race = choice["race"]
    assert race["rung_epochs"] == [2, 4] and race["length_epochs"] == 4 and race["run_epochs"] == 4
    candidates = {c["strategy"]: c for c in race["candidates"]}
    assert list(candidates) == ["linear-probe", "freeze-unfreeze", "finetune"]
    # Every candidate reached the first rung; the better two went on to the second, the third stopped.
    assert sorted(c["epochs"] for c in candidates.values()) == [2, 4, 4]
    assert all(c["rungs"][0]["epochs"] == 2 and c["optimizer_steps"] > 0 for c in candidates.values())
    finalists = [c for c in candidates.values() if c["epochs"] == 4]
    stopped = next(c for c in candidates.values() if c["epochs"] == 2)
    # Ranked by the toy's headline metric (its monitor is the loss, so the first declared other metric).
    assert race["metric"] == "accuracy" and race["mode"] == "max" and race["monitor"] == "loss"
    assert all(c["rungs"][0]["score"] >= stopped["score"] for c in finalists)
    best = max(c["score"] for c in finalists)
    winner = next(c for c in finalists if c["score"] == best)  # ties go to the earlier, cheaper candidate
    assert choice["chosen"] == race["winner"] == winner["strategy"] == metrics["strategy"]
    assert 0 < race["share_of_run_seconds"] < 1 and race["seconds"] > 0
    assert "auto race, rung 1" in err + out


def test_the_race_leaves_no_trace_on_the_run_of_its_winner(toy_plugin, tlapp):
    assert tlapp("run", "--plugin", "toy", *RACE, "--output", "a")[0] == 0
    winner = read_metrics("a")["strategy"]
    assert tlapp("run", "--plugin", "toy", "--strategy", winner, "--epochs", "4", "--output", "f")[0] == 0
    raced, fixed = read_metrics("a"), read_metrics("f")
    assert [h["train_loss"] for h in raced["history"]] == [h["train_loss"] for h in fixed["history"]]
    assert raced["metrics"] == fixed["metrics"]


def test_small_validation_splits_race_on_folds_that_keep_groups_whole(toy_plugin, tlapp):
    # The toy's validation split has 21 samples, under evaluation.min_samples (30).
    assert tlapp("run", "--plugin", "toy", *RACE, "--set", "augment=toy-noise", "--output", "k")[0] == 0
    race = read_metrics("k")["strategy_choice"]["race"]
    assert race["folds"] == 3 and "3 folds of the training data" in race["scored_on"]
    assert "whole sites" in race["scored_on"]
    assert tlapp("run", "--plugin", "toy", *RACE, "--set", "strategy.race_on=val", "--output", "v")[0] == 0
    race = read_metrics("v")["strategy_choice"]["race"]
    assert race["folds"] is None and race["scored_on"] == "the validation split"


def test_folds_are_stratified_and_keep_each_group_in_one_fold():
    labels = [i % 2 for i in range(24)]
    groups = [i // 2 for i in range(24)]  # each group holds one sample of each class
    folds = _split(24, labels, groups, 3, seed=0)
    assert sorted(i for _, held in folds for i in held) == list(range(24))
    for fit, held in folds:
        assert not {groups[i] for i in fit} & {groups[i] for i in held}
        assert {labels[i] for i in held} == {0, 1}


def test_the_race_ranks_by_a_chosen_metric(toy_plugin, tlapp):
    assert tlapp("run", "--plugin", "toy", *RACE, "--set", "strategy.metric=loss", "--output", "l")[0] == 0
    race = read_metrics("l")["strategy_choice"]["race"]
    assert (race["metric"], race["mode"]) == ("loss", "min")
    code, _, err = tlapp("run", "--plugin", "toy", *RACE, "--set", "strategy.metric=acuracy", "--output", "m")
    assert code == 2 and "strategy.metric" in err and "did you mean 'accuracy'" in err


def test_unknown_candidates_are_refused_before_any_data(toy_plugin, tlapp):
    code, _, err = tlapp("run", "--plugin", "toy", *RACE, "--set", "strategy.candidates=[linear-probe,finetun]",
                         "--output", "bad")
    assert code == 2 and "strategy.candidates" in err and "did you mean 'finetune'" in err
    code, _, err = tlapp("run", "--plugin", "toy", *RACE, "--set", "strategy.candidates=[auto]", "--output", "bad")
    assert code == 2 and "'auto'" in err


@pytest.mark.parametrize(("best", "below"), [(0.30, True), (0.10, False)])
def test_review_says_when_the_full_run_ends_below_the_linear_probe(best, below):
    race = {"metric": "loss", "mode": "min", "folds": None, "seconds": 2.0,
            "candidates": [{"strategy": "linear-probe", "score": 0.2}, {"strategy": "finetune", "score": 0.15}]}
    choice = {"chosen": "finetune", "race": race}
    history = [{"val": {"loss": 0.5}}, {"val": {"loss": best}}]
    run = SimpleNamespace(metrics={"wall_seconds": 8.0, "history": history, "best_epoch": 2})
    Auto(Auto.Options()).review(run, choice)
    assert race["share_of_run_seconds"] == 0.25
    assert ("below_linear_probe" in choice) is below
    if below:
        assert choice["below_linear_probe"] == {"run": best, "linear_probe_in_race": 0.2}


def test_auto_keeps_its_choice_on_resume(toy_plugin, tlapp, monkeypatch):
    monkeypatch.setenv("TLAPP_TOY_INTERRUPT_AFTER", "1")
    assert tlapp("run", "--plugin", "toy", *RACE, "--output", "b")[0] == 130
    interrupted = read_metrics("b")["strategy_choice"]
    monkeypatch.delenv("TLAPP_TOY_INTERRUPT_AFTER")
    code, out, err = tlapp("run", "--plugin", "toy", *RACE, "--output", "b", "--resume")
    assert code == 0, err
    assert "auto race" not in out + err  # no second race
    assert read_metrics("b")["strategy_choice"]["race"]["candidates"] == interrupted["race"]["candidates"]


def test_auto_without_transferred_weights_picks_scratch_without_a_race(toy_plugin, tlapp):
    code, _, err = tlapp("run", "--plugin", "toy", "--strategy", "auto", "--init", "none", "--output", "n",
                         "--epochs", "1")
    assert code == 0, err
    metrics = read_metrics("n")
    assert metrics["strategy"] == "scratch" and "race" not in metrics["strategy_choice"]
