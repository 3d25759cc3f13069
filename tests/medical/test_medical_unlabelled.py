"""Unlabelled DICOM data (``DicomClassification.unlabelled_data``): what domain adaptation (``--target-data``) and
semi-supervised learning read, and end-to-end runs that adapt to a target domain."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from tlcore import MISSING, DataError, EpochSeeded
from tlapp_medical.task import SAMPLE_DATA
from helpers import read_metrics

CLASSES = ["nodule", "normal"]
# One multi-frame file (MF0004: 3 frames) among single-frame CT, DX and CR files.
FLAT = ["normal/IMG0001.dcm", "normal/DX0002.dcm", "nodule/IMG0003.dcm", "nodule/CR0013.dcm", "nodule/MF0004.dcm"]
LABELLED = ["normal/IMG0002.dcm", "normal/IMG0004.dcm", "nodule/IMG0005", "nodule/IMG0006.dcm", "nodule/CR0011"]


def copy_sample(root: Path, names: list[str], *, keep_classes: bool) -> Path:
    """Files of the bundled sample copied into ``root``: flat, or in their class folders."""
    for name in names:
        target = root / (name if keep_classes else Path(name).name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLE_DATA / name, target)
    return root


@pytest.fixture
def medical(tmp_path, monkeypatch):
    """``read(path, class_names=CLASSES, views=1, **data)``: the task's unlabelled data of ``path``, with a small
    image size and the run's default recipe otherwise (augmentation medical-light)."""
    monkeypatch.chdir(tmp_path)  # the decoded-pixel cache goes under it
    from tlcore.plugins import load_plugins
    from tlcore.run import make_context, resolve_job

    plugins = load_plugins("medical,vision")

    def read(path: Path, class_names=CLASSES, views: int = 1, sets: tuple[str, ...] = (), **data):
        task, job = resolve_job(plugins, plugin="medical", config_file=None, sets=sets,
                                overrides={"data": {"image_size": 32, **data}, "train": {"device": "cpu"}})
        return task.unlabelled_data(job, make_context(plugins, job), Path(path), class_names, views=views)

    return read


def test_a_flat_folder_yields_every_frame_as_training_items_without_labels(tmp_path, medical):
    flat = copy_sample(tmp_path / "flat", FLAT, keep_classes=False)
    data = medical(flat, frames="each")
    assert isinstance(data.dataset, EpochSeeded)
    assert len(data.dataset) == 7  # four single-frame files and the three frames of MF0004
    assert data.summary["files"] == 5 and data.summary["frames"] == 7 and data.summary["skipped_files"] == 0
    assert data.summary["hidden_labels"] is False and "classes" not in data.summary
    for i in range(len(data.dataset)):
        image, hidden = data.dataset[i]
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and torch.isfinite(image).all()
        assert hidden == MISSING
    images, hidden = next(iter(DataLoader(data.dataset, batch_size=4, collate_fn=data.collate_fn)))
    assert images.shape == (4, 3, 32, 32) and hidden.tolist() == [MISSING] * 4
    assert len(medical(flat).dataset) == 5  # frames: middle, the default: one sample per file


def test_unlabelled_items_are_the_training_items_of_the_same_files(tmp_path, medical):
    """Same decoding, normalisation and augmentation as the training split: under augment none the images
    equal those build_data gives the same files."""
    from tlcore.plugins import load_plugins
    from tlcore.run import make_context, resolve_job

    root = copy_sample(tmp_path / "labelled", LABELLED, keep_classes=True)
    plugins = load_plugins("medical,vision")
    task, job = resolve_job(plugins, plugin="medical", config_file=None, sets=("augment=null",),
                            overrides={"data": {"path": str(root), "image_size": 32}, "train": {"device": "cpu"}})
    bundle = task.build_data(job, make_context(plugins, job), for_training=False)
    unlabelled = medical(root, sets=("augment=null",))
    by_file = {item.path.name: bundle.test[i][0] for i, item in enumerate(bundle.test.items)}
    for i, item in enumerate(unlabelled.dataset.items):
        assert torch.equal(unlabelled.dataset[i][0], by_file[item.path.name])


def test_class_folders_named_like_the_run_s_classes_give_hidden_labels(tmp_path, medical):
    root = copy_sample(tmp_path / "target", LABELLED, keep_classes=True)
    copy_sample(root, ["normal/IMG0007.dcm"], keep_classes=False)  # a loose file: no hidden label
    data = medical(root)
    found = {item.path.name: data.dataset[i][1] for i, item in enumerate(data.dataset.items)}
    assert found == {"IMG0002.dcm": 1, "IMG0004.dcm": 1, "IMG0005": 0, "IMG0006.dcm": 0, "CR0011": 0,
                     "IMG0007.dcm": MISSING}
    assert data.summary["hidden_labels"] is True and data.summary["classes"] == {"nodule": 3, "normal": 2}
    # Folders the run does not know as classes, and multi-task runs, give none.
    other = medical(root, class_names=["effusion", "mass"])
    assert {other.dataset[i][1] for i in range(6)} == {MISSING} and other.summary["hidden_labels"] is False
    multitask = medical(root, class_names={"finding": CLASSES, "view": ["ap", "pa"]})
    assert {multitask.dataset[i][1] for i in range(6)} == {MISSING}


def test_two_views_are_weak_and_strong_and_drawn_from_seed_epoch_and_index(tmp_path, medical):
    flat = copy_sample(tmp_path / "flat", FLAT, keep_classes=False)
    data = medical(flat, views=2)
    (weak, strong), hidden = data.dataset[0]
    assert weak.shape == strong.shape == (3, 32, 32) and hidden == MISSING
    assert not torch.equal(weak, strong)
    again = medical(flat, views=2).dataset  # a resumed run reads the data anew
    for i in range(len(data.dataset)):
        (w1, s1), _ = data.dataset[i]
        (w2, s2), _ = again[i]
        assert torch.equal(w1, w2) and torch.equal(s1, s2)
    draws = []
    for epoch in (0, 1):
        data.dataset.set_epoch(epoch)
        draws.append([torch.cat(data.dataset[i][0]) for i in range(len(data.dataset))])
    assert any(not torch.equal(a, b) for a, b in zip(*draws))
    # The default collate batches the pair view by view.
    (weaks, strongs), hidden = next(iter(DataLoader(data.dataset, batch_size=3, collate_fn=data.collate_fn)))
    assert weaks.shape == strongs.shape == (3, 3, 32, 32) and hidden.tolist() == [MISSING] * 3
    # Without a training augmentation the weak view is medical-light's, still augmented.
    plain = medical(flat, views=2, sets=("augment=null",)).dataset
    unaugmented = medical(flat, sets=("augment=null",)).dataset
    assert any(not torch.equal(plain[i][0][0], unaugmented[i][0]) for i in range(len(plain)))


def test_missing_and_empty_folders_are_data_errors_with_a_fix(tmp_path, medical):
    with pytest.raises(DataError) as missing:
        medical(tmp_path / "nowhere")
    assert "not found" in missing.value.what and missing.value.fix and "nowhere" in str(missing.value.where)
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "README.md").write_text("no images here")
    with pytest.raises(DataError) as none:
        medical(empty)
    assert str(empty) in none.value.what and none.value.fix
    (empty / "notes").write_text("not an image")
    with pytest.raises(DataError) as unreadable:  # data.on_error=fail: the file is named, the skip offered
        medical(empty)
    assert "notes" in unreadable.value.what and "on_error=skip" in unreadable.value.fix
    with pytest.raises(DataError) as skipped:
        medical(empty, on_error="skip")
    assert "none of the 1 files" in skipped.value.what and skipped.value.fix


def test_unreadable_files_are_skipped_under_on_error_skip(tmp_path, medical):
    flat = copy_sample(tmp_path / "flat", FLAT[:2], keep_classes=False)
    (flat / "broken.dcm").write_bytes(b"DICM" * 10)
    data = medical(flat, on_error="skip")
    assert len(data.dataset) == 2 and data.summary["skipped_files"] == 1 and data.summary["files"] == 2


# ------------------------------------------------------------------------------------------
# end to end: tlapp run --target-data
# ------------------------------------------------------------------------------------------

QUICK = ("--epochs", "1", "--batch-size", "8", "--strategy", "finetune", "--set", "data.image_size=32")


@pytest.fixture
def source(tmp_path, make_dicom) -> Path:
    """A small labelled source domain: 6 patients x 2 classes x 2 files of 24x24 pixels."""
    root = tmp_path / "source"
    rng = np.random.default_rng(0)
    for p in range(6):
        for label in CLASSES:
            for i in range(2):
                pixels = rng.normal(1000, 30, (24, 24))
                if label == "nodule":
                    pixels[8:16, 8:16] += 400
                make_dicom(root / label / f"P{p}_{i}.dcm", patient_id=f"P{p}",
                           pixels=np.clip(pixels, 0, 4095).astype(np.uint16), window=(40, 400))
    return root


@pytest.fixture(autouse=True)
def only_image_plugins(monkeypatch):
    monkeypatch.setenv("TLAPP_PLUGINS", "medical,vision")


def target_summary(adaptation: dict) -> dict:
    """The unlabelled data's summary in metrics.json's ``adaptation`` block (``summary``, or ``target_data``)."""
    found = [v for v in adaptation.values() if isinstance(v, dict) and "hidden_labels" in v]
    assert len(found) == 1, adaptation
    return found[0]


def test_coral_run_adapts_to_a_flat_target_folder(tmp_path, source, tlapp):
    target = copy_sample(tmp_path / "target", FLAT, keep_classes=False)
    code, _, err = tlapp("run", "--plugin", "medical", "--data", str(source), "--target-data", str(target),
                         "--set", "adapt.method=coral", "--output", "r", *QUICK)
    assert code == 0, err
    m = read_metrics("r")
    assert m["adaptation"]["method"] == "coral"
    assert {"files": 5, "frames": 5, "hidden_labels": False}.items() <= target_summary(m["adaptation"]).items()
    assert any("alignment_loss" in entry.get("adapt", {}) for entry in m["history"])


def test_dann_run_is_measured_on_a_labelled_target_test(tmp_path, source, tlapp):
    target = copy_sample(tmp_path / "target", FLAT, keep_classes=False)
    target_test = copy_sample(tmp_path / "target_test", LABELLED, keep_classes=True)
    code, _, err = tlapp("run", "--plugin", "medical", "--data", str(source), "--target-data", str(target),
                         "--target-test", str(target_test), "--set", "adapt.method=dann", "--output", "r", *QUICK)
    assert code == 0, err
    m = read_metrics("r")
    assert m["adaptation"]["method"] == "dann"
    assert "accuracy" in m["target_test"]["metrics"] and m["target_test"]["samples"] == 5
    assert any("alignment_loss" in entry.get("adapt", {}) for entry in m["history"])
