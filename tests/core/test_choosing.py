"""Choosing a strategy: the LR range test and the comparison report (auto's race: test_auto_race.py)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from helpers import read_metrics
from tlcore.lr_find import suggest


def test_lr_find_restores_weights_and_suggests_a_rate(toy_plugin, tlapp, monkeypatch):
    import tlcore.lr_find as finder

    seen = {}
    original = finder.range_test

    def spy(model, *args, **kwargs):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        result = original(model, *args, **kwargs)
        seen["restored"] = all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        seen["grad_flags"] = [p.requires_grad for p in model.parameters()]
        return result

    monkeypatch.setattr(finder, "range_test", spy)
    code, out, err = tlapp("lr-find", "--plugin", "toy", "--output", "lr", "--steps", "60")
    assert code == 0, err
    assert seen["restored"] and all(seen["grad_flags"])
    result = json.loads(Path("lr/lr_find.json").read_text())
    assert len(result["lrs"]) == len(result["losses"]) > 10
    assert result["lrs"] == sorted(result["lrs"])
    assert 1e-7 <= result["suggested_lr"] <= 1.0 and "suggested lr" in out
    assert Path("lr/lr_find.png").stat().st_size > 1000


def test_suggestion_is_a_tenth_of_the_minimum():
    lrs = [10 ** (-6 + i * 0.25) for i in range(20)]
    losses = [2.0 - 0.1 * i for i in range(15)] + [5.0] * 5
    assert suggest(lrs, losses) == lrs[14] / 10
    assert suggest(lrs, sorted(losses)) is None  # loss never fell: no suggestion


def test_compare_writes_table_and_plot_per_strategy(toy_plugin, tlapp):
    code, out, err = tlapp("compare", "--plugin", "toy", "--strategies", "scratch,linear-probe,auto",
                           "--output", "cmp", "--epochs", "2")
    assert code == 0, err
    report = json.loads(Path("cmp/comparison.json").read_text())
    assert [r["strategy"] for r in report["runs"]] == ["scratch", "linear-probe", "auto", "classical-baseline"]
    summary = report["summary"]
    for strategy in ("scratch", "linear-probe", "auto"):
        assert {"accuracy", "f1_macro", "wall_seconds", "samples_per_second"} <= set(summary[strategy]["metrics"])
        metrics = read_metrics(f"cmp/{strategy}")
        assert summary[strategy]["metrics"]["accuracy"]["mean"] == metrics["metrics"]["accuracy"]
    assert read_metrics("cmp/scratch")["init"]["source"] == "none"  # scratch really starts from random weights
    assert summary["auto"]["chosen"] == [read_metrics("cmp/auto")["strategy"]]
    assert "| linear-probe | 1 |" in Path("cmp/comparison.md").read_text() and "| strategy |" in out
    assert Path("cmp/comparison.png").stat().st_size > 1000


def test_compare_validates_every_job_before_running_any(toy_plugin, tlapp):
    code, _, err = tlapp("compare", "--plugin", "toy", "--strategies", "scratch,finetun", "--output", "cmp")
    assert code == 2 and "did you mean 'finetune'" in err
    assert not Path("cmp").exists()


def test_compare_folds_need_task_support(toy_plugin, tlapp):
    code, _, err = tlapp("compare", "--plugin", "toy", "--strategies", "scratch", "--folds", "3")
    assert code == 2 and "does not support k-fold" in err
