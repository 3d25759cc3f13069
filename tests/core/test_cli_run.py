"""End-to-end runs of the CLI on the toy plugin: run directory, resume, refusal to overwrite, transfer."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from helpers import read_metrics


def test_run_writes_run_directory(toy_plugin, tlapp):
    code, out, err = tlapp("run", "--plugin", "toy", "--output", "r1", "--epochs", "2")
    assert code == 0, err
    run = Path("r1")
    for name in ("config.yaml", "metrics.json", "train.log", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run / name).exists(), name
    m = read_metrics(run)
    for key in ("plugin", "task", "strategy", "init", "device", "epochs", "history", "metrics", "wall_seconds"):
        assert key in m, key
    assert m["plugin"] == "toy" and m["task"] == "vectors" and m["strategy"] == "finetune"
    assert m["epochs"] == 2 and len(m["history"]) == 2
    assert {"train_loss", "samples_per_second", "val"} <= set(m["history"][0])
    assert {"accuracy", "f1_macro", "auroc"} <= set(m["metrics"])
    assert m["init"]["source"] == "toy-mlp:toy" and m["init"]["loaded"] > 0
    assert m["status"] == "completed"


def test_saved_config_reruns_as_is(toy_plugin, tlapp):
    assert tlapp("run", "--plugin", "toy", "--output", "a", "--set", "train.lr=0.02", "--epochs", "1")[0] == 0
    saved = yaml.safe_load(Path("a/config.yaml").read_text())
    assert saved["train"]["lr"] == 0.02 and saved["plugin"] == "toy"
    Path("b.yaml").write_text(yaml.safe_dump({**saved, "output": "b"}))
    assert tlapp("run", "--config", "b.yaml")[0] == 0
    a = torch.load("a/checkpoints/last.pt", weights_only=True)["model"]
    b = torch.load("b/checkpoints/last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_existing_run_directory_is_not_overwritten(toy_plugin, tlapp):
    assert tlapp("run", "--plugin", "toy", "--output", "r", "--epochs", "1")[0] == 0
    before = Path("r/checkpoints/last.pt").read_bytes()
    code, _, err = tlapp("run", "--plugin", "toy", "--output", "r", "--epochs", "1")
    assert code == 2 and "already exists" in err and "--overwrite" in err
    assert "Traceback" not in err
    assert Path("r/checkpoints/last.pt").read_bytes() == before
    assert tlapp("run", "--plugin", "toy", "--output", "r", "--epochs", "1", "--overwrite")[0] == 0


def test_resume_after_interruption_matches_uninterrupted_run(toy_plugin, tlapp, monkeypatch):
    args = ("run", "--plugin", "toy", "--epochs", "4", "--seed", "3", "--set", "strategy.name=freeze-unfreeze",
            "--set", "strategy.head_epochs=2")
    assert tlapp(*args, "--output", "straight")[0] == 0

    monkeypatch.setenv("TLAPP_TOY_INTERRUPT_AFTER", "1")
    code, _, err = tlapp(*args, "--output", "broken")
    assert code == 130, err
    assert torch.load("broken/checkpoints/last.pt", weights_only=True)["epoch"] == 1
    assert read_metrics("broken")["status"] == "interrupted"
    monkeypatch.setenv("TLAPP_TOY_INTERRUPT_AFTER", "3")
    assert tlapp(*args, "--output", "broken", "--resume")[0] == 130  # interrupted again, right at a phase change
    monkeypatch.delenv("TLAPP_TOY_INTERRUPT_AFTER")
    code, _, err = tlapp(*args, "--output", "broken", "--resume")
    assert code == 0, err

    straight = torch.load("straight/checkpoints/last.pt", weights_only=True)
    resumed = torch.load("broken/checkpoints/last.pt", weights_only=True)
    assert resumed["epoch"] == straight["epoch"] == 4
    for key, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][key]), key
    m = read_metrics("broken")
    assert [h["epoch"] for h in m["history"]] == [1, 2, 3, 4]
    assert m["metrics"] == read_metrics("straight")["metrics"]


def test_resume_without_checkpoint_fails_clearly(toy_plugin, tlapp):
    code, _, err = tlapp("run", "--plugin", "toy", "--output", "nothing", "--resume")
    assert code == 2 and "nothing to resume" in err


def test_unknown_key_names_the_key_probably_meant(toy_plugin, tlapp):
    code, _, err = tlapp("run", "--plugin", "toy", "--set", "train.epoch=3", "--output", "x")
    assert code == 2
    assert "train.epoch" in err and "did you mean 'train.epochs'" in err
    assert not Path("x").exists()  # failed before anything was written


def test_wrong_type_and_bad_strategy_option_fail_before_running(toy_plugin, tlapp):
    code, _, err = tlapp("run", "--plugin", "toy", "--set", "train.batch_size=many")
    assert code == 2 and "train.batch_size" in err
    code, _, err = tlapp("run", "--plugin", "toy", "--set", "strategy.layer_decayy=0.5")
    assert code == 2 and "layer_decayy" in err and "layer_decay" in err
    code, _, err = tlapp("run", "--plugin", "toy", "--strategy", "finetun")
    assert code == 2 and "did you mean 'finetune'" in err


def test_config_file_errors_are_located(toy_plugin, tlapp):
    Path("bad.yaml").write_text("plugin: toy\ntrain:\n  epochs: [1\n")
    code, _, err = tlapp("run", "--config", "bad.yaml")
    assert code == 2 and "bad.yaml:" in err and "not valid YAML" in err


def test_init_from_earlier_run_transfers_structure_and_reports_skips(toy_plugin, tlapp):
    assert tlapp("run", "--plugin", "toy", "--output", "src", "--epochs", "1",
                 "--set", "model.backbone_options.width=12")[0] == 0
    code, _, err = tlapp("run", "--plugin", "toy", "--output", "dst", "--epochs", "1", "--init", "run:src",
                         "--set", "model.head=mlp")
    assert code == 0, err
    saved = yaml.safe_load(Path("dst/config.yaml").read_text())
    assert saved["model"]["backbone_options"] == {"width": 12}  # structure came from the source run
    init = read_metrics("dst")["init"]
    assert init["source"] == "run:src"
    assert init["loaded"] >= 6  # every backbone tensor
    skipped = {s["name"]: s["reason"] for s in init["skipped"]}
    assert "head.1.weight" in skipped and "no parameter" in skipped["head.1.weight"]
    assert init["not_initialised"] >= 4  # the mlp head's own tensors


def test_init_file_with_other_class_count_skips_head(toy_plugin, tlapp, tmp_path):
    assert tlapp("run", "--plugin", "toy", "--output", "src", "--epochs", "1")[0] == 0
    state = torch.load("src/checkpoints/best.pt", weights_only=True)["model"]
    state["head.1.weight"] = torch.zeros(5, state["head.1.weight"].shape[1])
    torch.save(state, "weights.pt")
    assert tlapp("run", "--plugin", "toy", "--output", "dst", "--epochs", "1", "--init", "file:weights.pt")[0] == 0
    skipped = {s["name"]: s["reason"] for s in read_metrics("dst")["init"]["skipped"]}
    assert "shape" in skipped["head.1.weight"]


def test_init_file_refuses_pickled_code(toy_plugin, tlapp):
    import argparse

    torch.save({"x": argparse.Namespace(a=1)}, "evil.pt")  # unpickling it would run code from a module
    code, _, err = tlapp("run", "--plugin", "toy", "--output", "d", "--epochs", "1", "--init", "file:evil.pt")
    assert code == 2 and "cannot load weights file" in err


def test_evaluate_and_unknown_plugin(toy_plugin, tlapp):
    assert tlapp("run", "--plugin", "toy", "--output", "r", "--epochs", "1")[0] == 0
    code, out, err = tlapp("evaluate", "--run", "r")
    assert code == 0, err
    result = json.loads(out)
    run_metrics = read_metrics("r")["metrics"]
    assert result["metrics"]["accuracy"] == run_metrics["accuracy"]
    assert result["metrics"]["accuracy_ci"] == run_metrics["accuracy_ci"]  # same split, same resamples
    assert result["data"] == "test split of the run" and result["samples"] == 21
    code, _, err = tlapp("run", "--plugin", "nosuch")
    assert code == 2 and "no plugin named 'nosuch'" in err
