"""What training sees: the train_batch previews of a run, and ``tlapp augment-preview``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import tlcore.run as engine
from helpers import read_metrics
from tlcore import ClassificationTask, Task, image_grid


def test_a_run_previews_exactly_the_batches_training_receives_first(toy_plugin, tlapp, monkeypatch):
    received = []
    original = engine.train_one_epoch

    def spy(model, loss_fn, loader, *args, **kwargs):
        def recording(m, batch):
            received.append(batch)
            return loss_fn(m, batch)
        return original(model, recording, loader, *args, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", spy)
    args = ("run", "--plugin", "toy", "--epochs", "1", "--set", "augment=toy-noise")
    code, out, err = tlapp(*args, "--output", "p")
    assert code == 0, err
    assert sorted(p.name for p in Path("p").glob("train_batch*")) == ["train_batch0.pt", "train_batch1.pt"]
    for i in (0, 1):
        shown = torch.load(f"p/train_batch{i}.pt")
        assert all(torch.equal(a, b) for a, b in zip(shown, received[i]))  # augmented, in training's order
    assert "what training sees: train_batch0.pt, train_batch1.pt" in out + err
    # Drawing the previews moves no random state: the run trains as one without previews.
    assert tlapp(*args, "--set", "train.preview_batches=0", "--output", "q")[0] == 0
    assert not list(Path("q").glob("train_batch*"))
    with_previews, without = read_metrics("p"), read_metrics("q")
    assert [h["train_loss"] for h in with_previews["history"]] == [h["train_loss"] for h in without["history"]]
    assert with_previews["metrics"] == without["metrics"]


def test_augment_preview_draws_training_samples_without_training(toy_plugin, tlapp):
    code, out, err = tlapp("augment-preview", "--plugin", "toy", "--augment", "toy-noise", "--n", "5",
                           "--output", "a")
    assert code == 0, err
    images, labels = torch.load("a/train_batch0.pt")
    assert len(images) == len(labels) == 5 and "5 training samples, augment toy-noise" in out
    assert not Path("a/checkpoints").exists()
    code, _, err = tlapp("augment-preview", "--plugin", "toy", "--augment", "toy-nois", "--output", "b")
    assert code == 2 and "toy-noise" in err


def test_augment_preview_says_when_a_task_cannot_draw_its_inputs(toy_plugin, tlapp, monkeypatch):
    import tlapp_toy

    monkeypatch.setattr(tlapp_toy.ToyTask, "preview", Task.preview)
    code, _, err = tlapp("augment-preview", "--plugin", "toy", "--output", "c")
    assert code == 2 and "does not draw its inputs" in err and "Task.preview" in err


def test_image_grid_writes_one_png_of_every_image_with_its_caption(tmp_path):
    images = [np.full((20, 40, 3), 200, np.uint8), torch.rand(3, 20, 40), torch.zeros(3, 20, 40, dtype=torch.uint8)]
    out = image_grid(images, ["a", "b", "c"], tmp_path / "grid", title="t")
    assert out == tmp_path / "grid.png" and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_targets_are_captioned_by_class_name():
    names = ["normal", "nodule", "effusion"]
    assert ClassificationTask.target_name(torch.tensor(1), names) == "nodule"
    assert ClassificationTask.target_name(torch.tensor([1.0, 0.0, 1.0]), names) == "normal+effusion"
    assert ClassificationTask.target_name(torch.zeros(3), names) == "(none)"
