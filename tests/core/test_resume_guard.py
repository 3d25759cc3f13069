"""``--resume`` continues the same job: changed settings are refused by name, more epochs are the one
change allowed (also for a finished run), and the run's record (config.yaml, wall time) stays whole.

``--init`` sources that would train something else than asked (no tensor copied) are refused unless
the user consents."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from helpers import read_metrics

TOY = ("run", "--plugin", "toy", "--seed", "3")


def _last(run: str) -> dict:
    return torch.load(f"{run}/checkpoints/last.pt", weights_only=True)


def test_resume_refuses_changed_flags_naming_each_key(toy_plugin, tlapp):
    assert tlapp(*TOY, "--epochs", "1", "--output", "r")[0] == 0
    before = {p: Path(p).read_bytes() for p in ("r/metrics.json", "r/config.yaml", "r/checkpoints/last.pt")}
    code, _, err = tlapp(*TOY, "--output", "r", "--resume", "--batch-size", "4", "--lr", "0.05")
    assert code == 2, err
    assert "train.lr: 0.01 -> 0.05" in err and "train.batch_size: 8 -> 4" in err and "2 setting(s)" in err
    assert "--init run:r" in err  # what to do instead
    assert {p: Path(p).read_bytes() for p in before} == before  # the run is untouched


def test_resume_refuses_an_edited_config_yaml(toy_plugin, tlapp):
    assert tlapp(*TOY, "--epochs", "1", "--output", "r")[0] == 0
    saved = yaml.safe_load(Path("r/config.yaml").read_text())
    saved["train"]["schedule"]["name"] = "constant"
    Path("r/config.yaml").write_text(yaml.safe_dump(saved))
    code, _, err = tlapp("run", "--output", "r", "--resume")
    assert code == 2 and 'train.schedule.name: "cosine" -> "constant"' in err, err


def test_resume_refuses_fewer_epochs(toy_plugin, tlapp):
    assert tlapp(*TOY, "--epochs", "2", "--output", "r")[0] == 0
    code, _, err = tlapp("run", "--output", "r", "--resume", "--epochs", "1")
    assert code == 2 and "train.epochs: 2 -> 1" in err and "train.epochs may grow" in err


def test_resume_may_move_to_another_device_or_worker_count(toy_plugin, tlapp):
    """Where the run runs is not what it computes: a run continues on another machine."""
    assert tlapp(*TOY, "--epochs", "1", "--output", "r", "--device", "auto")[0] == 0
    code, _, err = tlapp(*TOY, "--output", "r", "--resume", "--epochs", "2", "--device", "cpu",
                         "--set", "train.num_workers=1", "--set", "train.num_threads=1")
    assert code == 0, err
    assert read_metrics("r")["epochs"] == 2


def test_resume_without_changes_keeps_the_record_and_adds_wall_time(toy_plugin, tlapp):
    assert tlapp(*TOY, "--epochs", "1", "--output", "r")[0] == 0
    first = read_metrics("r")
    assert _last("r")["job"]["train"]["lr"] == 0.01  # the resolved job travels in every checkpoint
    code, _, err = tlapp(*TOY, "--output", "r", "--resume", "--epochs", "1")  # same values given again: fine
    assert code == 0, err
    again = read_metrics("r")
    assert again["status"] == "completed" and again["history"] == first["history"]
    assert again["metrics"] == first["metrics"]
    assert again["wall_seconds"] > first["wall_seconds"]  # accumulated over both sessions, not reset


def test_finished_run_resumed_with_more_epochs_matches_a_longer_plan(toy_plugin, tlapp):
    """freeze-unfreeze with one head epoch: the second epoch is a new phase, so a 1-epoch run extended to 2
    epochs trains exactly what a 2-epoch run trains."""
    args = (*TOY, "--strategy", "freeze-unfreeze", "--set", "strategy.head_epochs=1")
    assert tlapp(*args, "--epochs", "2", "--output", "straight")[0] == 0
    assert tlapp(*args, "--epochs", "1", "--output", "grown")[0] == 0
    seconds = read_metrics("grown")["wall_seconds"]
    code, _, err = tlapp("run", "--output", "grown", "--resume", "--epochs", "2")
    assert code == 0, err
    straight, grown = _last("straight"), _last("grown")
    assert grown["epoch"] == 2
    for key, tensor in straight["model"].items():
        assert torch.equal(tensor, grown["model"][key]), key
    m = read_metrics("grown")
    assert [h["epoch"] for h in m["history"]] == [1, 2] and m["status"] == "completed"
    assert m["metrics"] == read_metrics("straight")["metrics"]
    assert m["wall_seconds"] > seconds
    assert yaml.safe_load(Path("grown/config.yaml").read_text())["train"]["epochs"] == 2
    assert grown["job"]["train"]["epochs"] == 2


def test_lengthened_phase_continues_on_the_longer_schedule(toy_plugin, tlapp):
    """finetune is one phase: more epochs lengthen it. Its schedule is rebuilt for the new length and
    advanced by the steps taken (the epochs before used the shorter one, so weights differ from a run
    planned long from the start); the schedule ends where a 2-epoch run's ends. A 1-epoch schedule here
    is plain cosine and a 2-epoch one has warm-up: restoring the old state used to fail on that."""
    assert tlapp(*TOY, "--epochs", "2", "--output", "straight")[0] == 0
    assert tlapp(*TOY, "--epochs", "1", "--output", "grown")[0] == 0
    code, _, err = tlapp(*TOY, "--output", "grown", "--resume", "--epochs", "2")
    assert code == 0, err
    straight, grown = _last("straight"), _last("grown")
    assert grown["scheduler"] == straight["scheduler"]
    assert [g["lr"] for g in grown["optimizer"]["param_groups"]] == \
        [g["lr"] for g in straight["optimizer"]["param_groups"]]
    m = read_metrics("grown")
    assert [h["epoch"] for h in m["history"]] == [1, 2]
    assert m["phases"][0]["end_epoch"] == 2


def test_interrupted_run_resumed_with_more_epochs(toy_plugin, tlapp, monkeypatch):
    monkeypatch.setenv("TLAPP_TOY_INTERRUPT_AFTER", "1")
    assert tlapp(*TOY, "--epochs", "2", "--output", "r")[0] == 130
    monkeypatch.delenv("TLAPP_TOY_INTERRUPT_AFTER")
    code, _, err = tlapp("run", "--output", "r", "--resume", "--epochs", "3")
    assert code == 0, err
    m = read_metrics("r")
    assert [h["epoch"] for h in m["history"]] == [1, 2, 3] and m["status"] == "completed"
    assert "error" not in m  # the interruption's record belongs to the session it ended


def test_resume_without_config_yaml_uses_the_job_in_the_checkpoint(toy_plugin, tlapp):
    assert tlapp(*TOY, "--epochs", "1", "--output", "r", "--set", "train.lr=0.02")[0] == 0
    Path("r/config.yaml").unlink()
    code, _, err = tlapp("run", "--output", "r", "--resume", "--epochs", "2")
    assert code == 0, err
    assert yaml.safe_load(Path("r/config.yaml").read_text())["train"] == {
        **_last("r")["job"]["train"], "epochs": 2, "lr": 0.02}


def test_init_that_copies_nothing_trains_only_with_consent(toy_plugin, tlapp):
    torch.save({"encoder.weight": torch.zeros(4, 4)}, "other.pt")
    code, _, err = tlapp(*TOY, "--epochs", "1", "--output", "a", "--init", "file:other.pt")
    assert code == 2 and "copied no tensor" in err
    code, _, err = tlapp(*TOY, "--epochs", "1", "--output", "b", "--init", "file:other.pt",
                         "--set", "model.init_allow_empty=true")
    assert code == 0, err
    assert "WARNING" in err and "copied no tensor" in err
    assert read_metrics("b")["init"]["loaded"] == 0


def test_backbone_state_dict_initialises_through_file(toy_plugin, tlapp):
    """What the cross-plugin refusal points to instead: a bare backbone state dict via file:."""
    assert tlapp(*TOY, "--epochs", "1", "--output", "src")[0] == 0
    state = _last("src")["model"]
    torch.save({k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}, "bb.pt")
    assert tlapp(*TOY, "--epochs", "1", "--output", "dst", "--init", "file:bb.pt")[0] == 0
    init = read_metrics("dst")["init"]
    assert init["loaded"] == sum(k.startswith("backbone.") for k in state) and not init["skipped"]


def test_early_stopped_run_stays_stopped_on_resume(toy_plugin, tlapp):
    args = (*TOY, "--output", "r", "--set", "train.early_stopping.patience=1",
            "--set", "train.early_stopping.min_delta=100")  # nothing after the first epoch counts as better
    assert tlapp(*args, "--epochs", "4")[0] == 0
    assert len(read_metrics("r")["history"]) == 2 and read_metrics("r")["early_stopped"]
    code, _, err = tlapp(*args, "--epochs", "6", "--resume")
    assert code == 0, err
    m = read_metrics("r")
    assert len(m["history"]) == 2 and m["early_stopped"] and m["status"] == "completed"
    assert "early stopping ended this run after epoch 2" in err


def test_run_initialised_from_a_deleted_run_still_resumes_and_evaluates(toy_plugin, tlapp):
    """The source of a run: init is read when the run starts; afterwards the run stands on its own."""
    import shutil

    assert tlapp(*TOY, "--epochs", "1", "--output", "src")[0] == 0
    assert tlapp(*TOY, "--epochs", "1", "--output", "r", "--init", "run:src")[0] == 0
    shutil.rmtree("src")
    code, _, err = tlapp(*TOY, "--output", "r", "--resume", "--epochs", "2")
    assert code == 0, err
    code, out, err = tlapp("evaluate", "--run", "r")
    assert code == 0 and '"metrics"' in out, err


def test_run_without_best_weights_says_it_evaluated_the_last(toy_plugin, tlapp, monkeypatch):
    """A monitored metric undefined on every epoch chooses no best weights: the report says so."""
    import tlcore.run

    monkeypatch.setattr(tlcore.run, "is_improvement", lambda *a, **k: False)
    code, _, err = tlapp(*TOY, "--epochs", "1", "--output", "r")
    assert code == 0, err
    assert read_metrics("r")["evaluated_weights"] == "last"
    assert "no best weights were chosen" in Path("r/train.log").read_text()
