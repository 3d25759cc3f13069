"""Self-supervised pretraining of the medical task (``tlapp pretrain --plugin medical --method simclr``) on a few
unlabelled DICOM files, then fine-tuning from it with ``--init run:DIR``: the backbone comes along, the head does
not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import read_metrics

SMALL = ("--epochs", "1", "--batch-size", "4", "--set", "data.image_size=32")
CLASSES = ("nodule", "normal")


@pytest.fixture(autouse=True)
def only_image_plugins(monkeypatch):
    monkeypatch.setenv("TLAPP_PLUGINS", "medical,vision")


def pixels(rng: np.random.Generator, label: str) -> np.ndarray:
    image = rng.normal(1000, 30, (24, 24))
    if label == "nodule":
        image[8:16, 8:16] += 400
    return np.clip(image, 0, 4095).astype(np.uint16)


@pytest.fixture
def unlabelled(tmp_path, make_dicom) -> Path:
    """Eight unlabelled CT slices in one flat folder: 6 to train on, 2 held out."""
    rng = np.random.default_rng(1)
    for i in range(8):
        make_dicom(tmp_path / "unlabelled" / f"U{i}.dcm", patient_id=f"U{i}", pixels=pixels(rng, CLASSES[i % 2]),
                   window=(40, 400))
    return tmp_path / "unlabelled"


@pytest.fixture
def labelled(tmp_path, make_dicom) -> Path:
    """A small labelled set: 6 patients x 2 classes x 2 files."""
    rng = np.random.default_rng(0)
    for p in range(6):
        for label in CLASSES:
            for i in range(2):
                make_dicom(tmp_path / "labelled" / label / f"P{p}_{i}.dcm", patient_id=f"P{p}",
                           pixels=pixels(rng, label), window=(40, 400))
    return tmp_path / "labelled"


def test_pretrain_on_dicom_files_then_fine_tune_from_its_backbone(unlabelled, labelled, tlapp):
    code, out, err = tlapp("pretrain", "--plugin", "medical", "--method", "simclr", "--data", str(unlabelled),
                           "--init", "none", "--output", "p", *SMALL)
    assert code == 0, err
    assert "--init run:p" in out
    m = read_metrics("p")
    assert m["status"] == "completed" and m["pretraining"]["method"] == "simclr"
    assert m["data"]["samples"] == 8 and m["data"]["train"] == 6 and m["data"]["val"] == 2
    assert m["evaluated_on"] == "val" and m["metrics"]["loss"] > 0
    assert m["strategy"] == "finetune"  # tlapp pretrain's default, not the medical recipe's auto
    best = torch.load("p/checkpoints/best.pt", weights_only=True)
    assert best["hands_on"] == "backbone."
    backbone = [k for k in best["model"] if k.startswith("backbone.")]
    assert backbone and len(backbone) < len(best["model"])

    code, _, err = tlapp("run", "--plugin", "medical", "--data", str(labelled), "--init", "run:p", "--output", "r",
                         "--strategy", "finetune", *SMALL)
    assert code == 0, err
    init = read_metrics("r")["init"]
    assert init["source"] == "run:p" and init["loaded"] == len(backbone) and not init["skipped"]
    assert any(name.startswith("head.") for name in init["not_initialised_examples"])
