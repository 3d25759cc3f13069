"""Splits an evaluation can be trusted on: no test split carved beside the user's own val split unless asked,
every carved split keeps each class it can, and a run and `data check` say what they did."""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from helpers import read_metrics
from tlapp_medical.formats import Sample, _stratified_order, index_folders, split_by_patient
from tlapp_medical.task import SAMPLE_DATA, DicomData
from tlcore import ConfigError

NO_TEST = "final metrics are on the validation split"


@pytest.fixture(autouse=True)
def only_image_plugins(monkeypatch):
    monkeypatch.setenv("TLAPP_PLUGINS", "medical,vision")


def patients(sizes: dict[str, int], split: str | None = None, files: int = 2, start: int = 0) -> list[Sample]:
    """``sizes[label]`` single-label patients per class, ``files`` files each, all in ``split``."""
    samples, p = [], start
    for label, n in sizes.items():
        for _ in range(n):
            samples += [Sample(Path(f"/d/p{p:03d}/{i}.dcm"), (label,), f"MRN{p:03d}", split) for i in range(files)]
            p += 1
    return samples


def keys(items) -> set[str]:
    return {s.patient_key for s in items}


def classes(items) -> set[str]:
    return {label for s in items for label in s.labels}


# ------------------------------------------------------------------------------------------
# where each split comes from
# ------------------------------------------------------------------------------------------

def test_explicit_train_and_val_carve_no_test_unless_asked():
    """The issue's case: 3 training and 8 validation patients, no test split given."""
    data = patients({"nodule": 2, "normal": 1}, "train") + patients({"nodule": 4, "normal": 4}, "val", start=3)
    splits = split_by_patient(data, seed=0)
    assert not splits["test"] and len(keys(splits["train"])) == 3 and len(keys(splits["val"])) == 8
    assert splits.sources == {"train": "explicit", "val": "explicit", "test": "none"}

    asked = split_by_patient(data, test_fraction=0.2, seed=0)
    assert len(keys(asked["test"])) == 1 and keys(asked["test"]) < keys(splits["train"])  # from the train patients
    assert asked["val"] == splits["val"]
    assert asked.sources == {"train": "rest", "val": "explicit", "test": "carved"}


def test_without_val_or_test_both_are_carved_as_before():
    for split in (None, "train"):  # no split column, or every file marked train
        splits = split_by_patient(patients({"a": 10, "b": 10}, split), seed=3)
        assert len(keys(splits["test"])) == 4 and len(keys(splits["val"])) == 4
        assert splits.sources == {"train": "rest", "val": "carved", "test": "carved"}


def test_sources_of_explicit_and_partly_explicit_data():
    test = patients({"a": 2, "b": 2}, "test", start=50)
    splits = split_by_patient(patients({"a": 6, "b": 6}, "train") + test, seed=0)
    assert splits.sources == {"train": "rest", "val": "carved", "test": "explicit"} and splits["test"] == test
    full = patients({"a": 3, "b": 3}, "train") + patients({"a": 2, "b": 2}, "val", start=10) + test
    assert split_by_patient(full, seed=0).sources == {"train": "explicit", "val": "explicit", "test": "explicit"}
    # a blank file of an unsplit patient joins train, which is then not only the data's own
    blank = patients({"a": 1}, None, start=90)
    assert split_by_patient(full + blank, seed=0).sources["train"] == "rest"
    assert split_by_patient(patients({"a": 5, "b": 5}), 0.0, 0.0, seed=0).sources == {
        "train": "rest", "val": "none", "test": "none"}
    folded = split_by_patient(patients({"a": 5, "b": 5}), seed=0, folds=3, fold=1)
    assert folded.sources == {"train": "rest", "val": "folds", "test": "carved"}


def test_an_unset_test_fraction_counts_as_its_default_in_the_sum_check():
    with pytest.raises(ConfigError, match="unset test_fraction counts as 0.2"):
        split_by_patient(patients({"a": 5, "b": 5}), 0.8, seed=0)
    assert split_by_patient(patients({"a": 5, "b": 5}), 0.8, 0.0, seed=0)["val"]
    with pytest.raises(ValidationError, match="test_fraction unset counts as 0.2"):
        DicomData(val_fraction=0.85)
    assert DicomData(val_fraction=0.85, test_fraction=0).test_fraction == 0
    assert DicomData().test_fraction is None


# ------------------------------------------------------------------------------------------
# carved splits keep every class they can
# ------------------------------------------------------------------------------------------

def _first_n_would_miss(samples, seed: int, n_test: int, n_val: int) -> bool:
    """Whether the old rule, the first n patients of the seeded order, left a class out of test or val."""
    labels = {s.patient_key: s.labels for s in samples}
    order = _stratified_order(sorted(labels), {k: (*v, "|", v[0]) for k, v in labels.items()}, seed, "split")
    every = {v[0] for v in labels.values()}
    return any({labels[k][0] for k in part} != every for part in (order[:n_test], order[n_test:n_test + n_val]))


@pytest.mark.parametrize("sizes", [{"a": 12, "b": 6, "c": 3}, {"a": 20, "b": 3, "c": 3, "d": 4}])
def test_carved_splits_keep_every_class_with_two_patients_to_spare(sizes):
    samples = patients(sizes, files=1)
    n = sum(sizes.values())
    old_misses = 0
    for seed in range(30):
        splits = split_by_patient(samples, 0.2, 0.2, seed=seed)
        assert not splits.missed and not splits.warnings
        for name in ("train", "val", "test"):
            assert classes(splits[name]) == set(sizes), (seed, name)
        old_misses += _first_n_would_miss(samples, seed, round(0.2 * n), round(0.2 * n))
    assert old_misses  # the layouts are ones the old rule got wrong


def test_multilabel_coverage_or_a_named_miss_over_seeds():
    rng = random.Random(7)
    samples = []
    for p in range(30):
        labels = tuple(sorted(rng.sample(["effusion", "nodule", "mass", "none"], rng.choice([1, 1, 2]))))
        samples += [Sample(Path(f"/d/{p}/{i}.dcm"), labels, f"K{p}") for i in range(2)]
    per_patient = {s.patient_key: set(s.labels) for s in samples}
    for seed in range(20):
        splits = split_by_patient(samples, 0.2, 0.2, seed=seed)
        test_pool = set(per_patient)
        val_pool = test_pool - keys(splits["test"])
        for name, pool in (("test", test_pool), ("val", val_pool)):
            counts = Counter(c for k in pool for c in per_patient[k])
            needed = {c for c, m in counts.items() if m >= 2}
            assert needed <= classes(splits[name]) | set(splits.missed.get(name, ())), (seed, name)
        assert classes(splits["train"]) == classes(samples)  # what stays behind keeps every class


def test_a_split_too_small_for_every_class_names_the_class_and_split():
    splits = split_by_patient(patients({"a": 3, "b": 2}), seed=0)  # test and val of one patient each
    assert set(splits.missed) == {"test", "val"}
    for split, missed in splits.missed.items():
        (cls,) = missed
        assert cls not in classes(splits[split])
        assert any(f"class {cls!r} could not be put in the {split} split" in w for w in splits.warnings)


def test_a_fold_without_a_class_is_named():
    samples = patients({"a": 8, "rare": 2})
    lacking = 0
    for fold in range(5):
        splits = split_by_patient(samples, 0.2, 0.0, seed=0, folds=5, fold=fold)
        if "rare" in classes(splits["val"]):
            assert not splits.missed
        else:
            lacking += 1
            assert splits.missed == {"val": ["rare"]}
            assert "class 'rare' could not be put in the val split" in splits.warnings[0]
    assert lacking == 3  # two patients, five folds


def test_folds_reach_every_class_with_a_patient_per_fold():
    samples = patients({"a": 11, "b": 6, "c": 5})
    for seed in range(10):
        sizes = []
        for fold in range(5):
            splits = split_by_patient(samples, 0.2, 0.0, seed=seed, folds=5, fold=fold)
            assert classes(splits["val"]) == {"a", "b", "c"} and not splits.missed, (seed, fold)
            sizes.append(len(keys(splits["val"])))
        assert max(sizes) - min(sizes) <= 1


# ------------------------------------------------------------------------------------------
# the task: notes, summary, groups
# ------------------------------------------------------------------------------------------

def pixels(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(900, 1100, (16, 16)).astype(np.uint16)


@pytest.fixture
def folders(tmp_path, make_dicom) -> Path:
    """nodule and normal of 6 patients each, mass of 2; one 3-frame file."""
    root = tmp_path / "data"
    for label, n in (("nodule", 6), ("normal", 6), ("mass", 2)):
        for p in range(n):
            for i in range(2):
                make_dicom(root / label / f"{p}_{i}.dcm", patient_id=f"SECRET-{label}-{p}", pixels=pixels(p + i))
    make_dicom(root / "nodule" / "multi.dcm", patient_id="SECRET-nodule-0", pixels=pixels(99), frames=3)
    return root


def build(root: Path, for_training: bool = True, **data):
    from tlcore.plugins import load_plugins
    from tlcore.run import make_context, resolve_job

    plugins = load_plugins("medical,vision")
    task, job = resolve_job(plugins, plugin="medical", config_file=None,
                            overrides={"data": {"path": str(root), "image_size": 16, **data},
                                       "train": {"device": "cpu"}})
    return task.build_data(job, make_context(plugins, job), for_training=for_training)


def test_a_class_of_two_patients_is_warned_about_once_per_split(folders, tlapp):
    code, out, err = tlapp("data", "check", "--plugin", "medical", "--data", str(folders))
    assert code == 0, err
    report = json.loads(out)
    data = build(folders)
    for warnings in (report["warnings"], data.summary["warnings"]):
        # test takes one of mass's two patients; the other must stay for training, so val has none
        about_val = [w for w in warnings if "mass" in w and "val split" in w]
        assert len(about_val) == 1, warnings
        assert not any("mass" in w and "test split" in w for w in warnings)
    assert report["split_sources"] == data.summary["split_sources"] == {
        "train": "rest", "val": "carved", "test": "carved"}
    assert "SECRET" not in out and "SECRET" not in json.dumps(data.summary)


def test_data_check_warns_about_small_evaluation_splits(folders, tlapp):
    code, out, err = tlapp("data", "check", "--plugin", "medical", "--data", str(folders))
    report = json.loads(out)
    for split in ("val", "test"):
        patients_there = report["splits"][split]["patients"]
        assert any(w.startswith(f"the {split} split has") and f"from {patients_there} patients" in w
                   for w in report["warnings"]), report["warnings"]
    code, out, err = tlapp("data", "check", "--plugin", "medical", "--data", str(folders),
                           "--set", "evaluation.min_samples=1", "--set", "evaluation.min_groups=1")
    assert code == 0, err
    assert not any("mostly noise" in w for w in json.loads(out)["warnings"])


def test_groups_name_the_patient_of_every_frame(folders):
    data = build(folders, frames="each")
    assert data.group_unit == "patient"
    owner = {p: p.name.split("_")[0] if p.name != "multi.dcm" else "0" for p in folders.rglob("*.dcm")}
    owner = {p: f"{p.parent.name}-{n}" for p, n in owner.items()}
    for split in ("train", "val", "test"):  # train too: auto's k-fold race keeps whole patients per fold
        dataset, groups = getattr(data, split), list(data.groups[split])
        assert len(groups) == len(dataset) > 0
        for i, item in enumerate(dataset.items):
            for j, other in enumerate(dataset.items):
                assert (groups[i] == groups[j]) == (owner[item.path] == owner[other.path])
        assert not any(isinstance(g, str) for g in groups)  # raw patient IDs stay with the task
    frames_of_multi = [item for split in ("train", "val", "test") for item in getattr(data, split).items
                       if item.path.name == "multi.dcm"]
    assert len(frames_of_multi) == 3
    assert set(data.groups["val"]).isdisjoint(data.groups["test"])
    assert set(data.groups["train"]).isdisjoint(set(data.groups["val"]) | set(data.groups["test"]))

    everything = build(folders, for_training=False)
    assert len(everything.groups["test"]) == len(everything.test) and not everything.groups["val"]
    assert everything.summary["split_sources"]["test"] == "all"


# ------------------------------------------------------------------------------------------
# the scenario, end to end on the bundled sample
# ------------------------------------------------------------------------------------------

@pytest.fixture
def train_and_val_manifest(tmp_path) -> Path:
    """The sample's files of 3 patients marked train and of 8 marked val; no test."""
    root = tmp_path / "ds"
    shutil.copytree(SAMPLE_DATA, root)
    samples = index_folders(root)
    ordered = sorted({s.patient_key for s in samples})
    split = {k: "train" for k in ordered[:3]} | {k: "val" for k in ordered[3:11]}
    rows = ["path,label,split"] + [f"{s.path.relative_to(root).as_posix()},{s.labels[0]},{split[s.patient_key]}"
                                   for s in samples if s.patient_key in split]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


@pytest.mark.skipif(not SAMPLE_DATA.is_dir(), reason="the medical sample data is not generated")
def test_train_and_val_only_evaluates_on_val_and_says_so(train_and_val_manifest, tlapp):
    code, out, err = tlapp("data", "check", "--plugin", "medical", "--data", str(train_and_val_manifest))
    assert code == 0, err
    report = json.loads(out)
    assert report["split_sources"] == {"train": "explicit", "val": "explicit", "test": "none"}
    assert report["splits"]["test"]["files"] == 0 and report["splits"]["train"]["patients"] == 3
    assert any(NO_TEST in w and "data.test_fraction" in w for w in report["warnings"])
    assert any(w.startswith("the val split has") and "from 8 patients" in w for w in report["warnings"])

    code, _, err = tlapp("run", "--plugin", "medical", "--data", str(train_and_val_manifest), "--output", "r",
                         "--epochs", "1", "--batch-size", "16", "--set", "data.image_size=32")
    assert code == 0, err
    m = read_metrics("r")
    assert m["evaluated_on"] == "val"
    assert m["data"]["split_sources"]["test"] == "none" and m["data"]["splits"]["test"]["files"] == 0
    assert any(NO_TEST in w for w in m["data"]["warnings"])

    code, out, err = tlapp("data", "check", "--plugin", "medical", "--data", str(train_and_val_manifest),
                           "--set", "data.test_fraction=0.2")
    assert code == 0, err
    report = json.loads(out)
    assert report["split_sources"] == {"train": "rest", "val": "explicit", "test": "carved"}
    assert report["splits"]["test"]["patients"] == 1 and report["splits"]["train"]["patients"] == 2
    assert not any(NO_TEST in w for w in report["warnings"])
    assert any(w.startswith("the test split has") for w in report["warnings"])


def test_classical_inputs_are_the_frames_of_each_split_in_dataset_order(folders):
    from tlapp_medical.task import DicomClassification

    data = build(folders, frames="each")

    inputs = DicomClassification().classical_inputs(_job(folders), data, "test")
    assert inputs.train.shape == (len(data.train), 32 * 32) and inputs.evaluated.shape == (len(data.test), 32 * 32)
    assert inputs.evaluated_targets == [item.target for item in data.test.items]
    # the grey level of a frame survives shrinking: the first test frame's mean is the mean of its pixels
    first = data.test.items[0]
    assert abs(inputs.evaluated[0].mean() - data.test.load(first.path)[first.frame].mean()) < 1e-5


def _job(root: Path):
    from tlcore.plugins import load_plugins
    from tlcore.run import resolve_job

    return resolve_job(load_plugins("medical,vision"), plugin="medical", config_file=None,
                       overrides={"data": {"path": str(root), "image_size": 16}})[1]
