"""Splits: carved val/test keep every class they can, fixed splits say where the final metrics come from."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tlapp_driving.formats import ImageRecord
from tlapp_driving.task import DrivingDetection
from tlcore.plugins import load_plugins
from tlcore.run import make_context, resolve_job


def job_for(**data):
    plugins = load_plugins("driving")
    task, job = resolve_job(plugins, plugin="driving", config_file=None,
                            overrides={"data": data, "train": {"device": "cpu"}})
    return plugins, task, job


def records(classes_per_image: list[list[str]]) -> list[ImageRecord]:
    return [ImageRecord(Path(f"{i:03d}.png"), 96, 48, boxes=[(1.0, 1.0, 20.0, 20.0)] * len(classes),
                        classes=list(classes)) for i, classes in enumerate(classes_per_image)]


def held(split: list[ImageRecord]) -> set[str]:
    return {c for r in split for c in r.classes}


@pytest.mark.parametrize("seed", range(6))
def test_carved_splits_keep_every_class_with_enough_images(seed):
    # 30 images of cars; a Van in three, a Truck in two, a Cyclist in one.
    classes = [["Car"] for _ in range(30)]
    for i in (4, 17, 25):
        classes[i].append("Van")
    for i in (9, 22):
        classes[i].append("Truck")
    classes[13].append("Cyclist")
    _, _, job = job_for(val_fraction=0.1, test_fraction=0.1)
    job.train.seed = seed
    parts = DrivingDetection._split(records(classes), job, True)
    splits = parts.records
    assert sorted(r.path.name for s in splits.values() for r in s) == [f"{i:03d}.png" for i in range(30)]
    assert len(splits["test"]) == 3 and len(splits["val"]) == 3
    assert {"Van", "Truck"} <= held(splits["test"]) and "Van" in held(splits["val"])
    assert {"Van", "Truck"} <= held(splits["train"])  # training keeps what the carved splits took
    # Truck's two images went to test and train: val cannot have it, and says so; a one-image class is no
    # class any split can be asked to keep.
    assert parts.warnings == ["class 'Truck' could not be put in the val split: too few images of it (or the split "
                              "is too small for every class), so val metrics of 'Truck' are undefined"]
    assert parts.sources == {"train": "carved", "val": "carved", "test": "carved"}
    again = DrivingDetection._split(records(classes), job, True).records
    assert {s: [r.path for r in v] for s, v in again.items()} == {s: [r.path for r in v] for s, v in splits.items()}


def test_a_split_too_small_for_every_class_warns_about_the_class_it_lacks():
    classes = [["Car"] for _ in range(20)]
    for i in (1, 2, 3):
        classes[i] = ["Van"]
    for i in (5, 6, 7):
        classes[i] = ["Pedestrian"]
    _, _, job = job_for(val_fraction=0.05, test_fraction=0.05)  # one image each: it can hold one class
    parts = DrivingDetection._split(records(classes), job, True)
    for split in ("test", "val"):
        lacking = {"Car", "Van", "Pedestrian"} - held(parts.records[split])
        assert len(lacking) == 2
        for c in lacking:
            assert any(w.startswith(f"class {c!r} could not be put in the {split} split") for w in parts.warnings)
    assert len(parts.warnings) == 4


def test_fixed_train_and_val_without_test_say_so(make_kitti, tmp_path, caplog):
    train = make_kitti(4, name="ds/train")
    make_kitti(2, name="ds/val")
    plugins, task, job = job_for(path=str(train.parent))
    with caplog.at_level(logging.WARNING):
        data = task.build_data(job, make_context(plugins, job))
    assert data.summary["split_sources"] == {"train": "explicit", "val": "explicit", "test": "none"}
    assert "no test split given: final metrics are on the validation split" in caplog.text
    assert any("no test split given" in w for w in data.summary["warnings"])
    assert len(data.test) == 0 and len(data.val) == 2
    report = task.check_data(job, make_context(plugins, job))
    assert report["split_sources"] == data.summary["split_sources"]
    assert any("no test split given" in w for w in report["warnings"])


def test_data_check_warns_about_small_evaluation_splits(tlapp, make_kitti):
    root = make_kitti(10)
    code, out, err = tlapp("data", "check", "--plugin", "driving", "--data", str(root))
    assert code == 0, err
    report = json.loads(out)
    assert report["split_sources"] == {"train": "carved", "val": "carved", "test": "carved"}
    small = [w for w in report["warnings"] if "fewer than 30 samples" in w]
    assert [w.split(" split")[0] for w in small] == ["the val", "the test"]
    code, out, err = tlapp("data", "check", "--plugin", "driving", "--data", str(root),
                           "--set", "evaluation.min_samples=2", "--set", "data.test_fraction=0")
    report = json.loads(out)
    assert code == 0 and not any("fewer than" in w for w in report["warnings"])
    assert report["split_sources"]["test"] == "none" and any("no test split" in w for w in report["warnings"])
