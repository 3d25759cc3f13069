"""Unlabelled texts (``Task.unlabelled_data``): what domain adaptation (``--target-data``) and semi-supervised
learning (``--unlabelled-data``) read, with hidden labels, a strong view, and the target test (``--target-test``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from tlcore import MISSING, DataError, EpochSeeded
from tlcore.methods import seeded_loader
from tlapp_text.task import SAMPLE_DATA

from text_helpers import task_job, write_csv, write_jsonl

CLASSES = ["account", "billing", "shipping", "technical"]


def sample_rows(split: str, per_class: int) -> list[list[str]]:
    """The first ``per_class`` (text, label) rows of each class of the bundled sample's ``split``."""
    with open(SAMPLE_DATA / f"{split}.csv", newline="", encoding="utf-8") as f:
        rows = [[r["text"], r["label"]] for r in csv.DictReader(f)]
    return [row for c in CLASSES for row in [r for r in rows if r[1] == c][:per_class]]


@pytest.fixture(scope="module")
def text_task():
    """(task, job, context) of the recipe: its tokenizer is loaded once per module by the registry's cache."""
    return task_job()


def read(text_task, path: Path, class_names=CLASSES, views: int = 1):
    task, job, context = text_task
    return task.unlabelled_data(job, context, path, class_names, views=views)


def context_tokenizer(text_task):
    task, job, context = text_task
    return task.tokenizer(job, context)


def test_texts_alone_give_training_like_items_without_hidden_labels(text_task, tmp_path):
    rows = sample_rows("test", 3)
    path = write_csv(tmp_path / "target.csv", [[t] for t, _ in rows], header=("text",))
    data = read(text_task, path)
    assert len(data.dataset) == len(rows) == 12 and isinstance(data.dataset, EpochSeeded)
    task, job, context = text_task
    training = task.build_data(job.model_copy(update={"data": job.data.model_copy(
        update={"path": str(write_csv(tmp_path / "labelled.csv", rows * 4))})}), context)
    ids, hidden = data.dataset[0]
    assert hidden == MISSING and ids.dtype == training.train[0][0].dtype and ids.dim() == 1
    assert ids[0] == context_tokenizer(text_task).cls_token_id  # tokenised as training texts: special tokens
    inputs, targets = data.collate_fn([data.dataset[i] for i in range(4)])
    train_inputs, _ = training.collate_fn([training.train[i] for i in range(4)])
    assert set(inputs) == set(train_inputs) == {"input_ids", "attention_mask"}
    assert targets.tolist() == [MISSING] * 4 and targets.dtype == torch.long
    assert data.summary["rows"] == 12 and data.summary["skipped_rows"] == 0
    assert data.summary["hidden_labels"]["found"] is False and data.summary["hidden_labels"]["missing"] == 12


def test_a_label_column_gives_hidden_class_indices_and_unknown_labels_are_missing(text_task, tmp_path):
    rows = [["my parcel is late", "shipping"], ["I was charged twice", "billing"], ["the app crashes", "weather"],
            ["I cannot log in", ""]]
    data = read(text_task, write_csv(tmp_path / "target.csv", rows))
    assert [data.dataset[i][1] for i in range(4)] == [2, 1, MISSING, MISSING]
    hidden = data.summary["hidden_labels"]
    assert hidden["found"] is True and hidden["missing"] == 2
    assert hidden["classes"] == {"account": 0, "billing": 1, "shipping": 1, "technical": 0}
    # a multi-task run's classes (by task) know no single label column: every hidden label is missing
    by_task = read(text_task, write_csv(tmp_path / "target.csv", rows), class_names={"label": CLASSES})
    assert {by_task.dataset[i][1] for i in range(4)} == {MISSING}


def test_jsonl_and_a_folder_of_split_files_are_read_whole(text_task, tmp_path):
    write_jsonl(tmp_path / "pool" / "train.jsonl", [{"text": "my parcel is late"}, {"text": "refund please"}])
    write_jsonl(tmp_path / "pool" / "test.jsonl", [{"text": "cannot log in", "label": "account"}])
    data = read(text_task, tmp_path / "pool")
    assert len(data.dataset) == 3 and [data.dataset[i][1] for i in range(3)] == [MISSING, MISSING, 0]
    assert [Path(f["file"]).name for f in data.summary["files"]] == ["train.jsonl", "test.jsonl"]


def test_two_views_mask_some_tokens_per_epoch_and_index_and_collate_as_a_pair(text_task, tmp_path):
    rows = sample_rows("test", 2)
    data = read(text_task, write_csv(tmp_path / "target.csv", rows), views=2)
    dataset = data.dataset
    tokenizer = context_tokenizer(text_task)
    (weak, strong), hidden = dataset[0]
    assert hidden == 0 and weak.shape == strong.shape and not torch.equal(weak, strong)
    changed = weak != strong
    assert (strong[changed] == tokenizer.mask_token_id).all()
    assert weak[0] == strong[0] == tokenizer.cls_token_id and weak[-1] == strong[-1] == tokenizer.sep_token_id
    ordinary = len(weak) - 2
    assert 1 <= int(changed.sum()) <= max(1, round(0.15 * ordinary)) + 1
    assert torch.equal(dataset[0][0][1], strong)  # the same (epoch, index): the same draw
    draws = {}
    for epoch in range(3):
        dataset.set_epoch(epoch)
        draws[epoch] = [dataset[i][0][1] for i in range(len(dataset))]
    assert any(not torch.equal(a, b) for a, b in zip(draws[0], draws[1]))
    dataset.set_epoch(1)
    again = read(text_task, write_csv(tmp_path / "target.csv", rows), views=2).dataset
    again.set_epoch(1)  # a resumed run's fresh dataset draws the same views
    assert all(torch.equal(again[i][0][1], draws[1][i]) for i in range(len(again)))
    assert "masked with [MASK]" in data.summary["strong_view"]

    batch = next(iter(seeded_loader(dataset, 4, 0, 1, collate_fn=data.collate_fn, drop_last=True)))
    (weak_inputs, strong_inputs), targets = batch
    assert set(weak_inputs) == set(strong_inputs) == {"input_ids", "attention_mask"}
    assert weak_inputs["input_ids"].shape == strong_inputs["input_ids"].shape == weak_inputs["attention_mask"].shape
    assert torch.equal(weak_inputs["attention_mask"], strong_inputs["attention_mask"])
    assert not torch.equal(weak_inputs["input_ids"], strong_inputs["input_ids"]) and targets.shape == (4,)


def test_without_a_mask_token_the_strong_view_drops_tokens(text_task, tmp_path):
    data = read(text_task, write_csv(tmp_path / "target.csv", sample_rows("test", 1)), views=2)
    dataset = data.dataset
    dataset.mask_id = None  # what a tokenizer without a mask token gives
    (weak, strong), _ = dataset[0]
    assert len(strong) < len(weak) and strong[0] == weak[0] and strong[-1] == weak[-1]
    (weak_inputs, strong_inputs), _ = data.collate_fn([dataset[i] for i in range(4)])
    assert strong_inputs["attention_mask"].sum() < weak_inputs["attention_mask"].sum()


def test_missing_path_empty_file_and_bad_rows_are_data_errors_with_a_fix(text_task, tmp_path):
    with pytest.raises(DataError, match="unlabelled data not found") as err:
        read(text_task, tmp_path / "nowhere.csv")
    assert "--target-data" in (err.value.fix or "")
    header_only = tmp_path / "header.csv"
    header_only.write_text("text,label\n")
    with pytest.raises(DataError, match="no text rows") as err:
        read(text_task, header_only)
    assert err.value.fix and err.value.where == str(header_only)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="is empty") as err:
        read(text_task, tmp_path / "empty.csv")
    assert err.value.fix
    bad = write_csv(tmp_path / "bad.csv", [["fine text", "1"], ["", "2"], ["another", "3"]], header=("text", "id"))
    with pytest.raises(DataError, match=r"bad\.csv:3: empty text") as err:  # as build_data reports bad rows
        read(text_task, bad)
    assert "data.on_error=skip" in (err.value.fix or "")
    task, job, context = text_task
    skipping = job.model_copy(update={"data": job.data.model_copy(update={"on_error": "skip"})})
    data = task.unlabelled_data(skipping, context, bad, CLASSES)
    assert len(data.dataset) == 2 and data.summary["skipped_rows"] == 1


# ---------------------------------------------------------------- end to end

def domain_files(root: Path) -> dict[str, Path]:
    """A small source dataset (the sample's training wordings) and a target domain (its paraphrased test
    texts): unlabelled texts, and labelled ones with every class, and lacking one."""
    source = [row + ["train"] for row in sample_rows("train", 8)] + [row + ["val"] for row in sample_rows("val", 2)]
    target = sample_rows("test", 4)
    return {"source": write_csv(root / "source.csv", source, header=("text", "label", "split")),
            "target": write_csv(root / "target.csv", [[t] for t, _ in target], header=("text",)),
            "target_test": write_csv(root / "target_test.csv", target),
            "lacking": write_csv(root / "lacking.csv", [r for r in target if r[1] != "technical"])}


SHORT = ("--epochs", "1", "--set", "train.batch_size=8")


def test_dann_on_text_reports_adaptation_and_the_target_test(tlapp, tmp_path, monkeypatch):
    monkeypatch.setenv("TLAPP_PLUGINS", "text")
    files = domain_files(tmp_path)
    code, _, err = tlapp("run", "--plugin", "text", "--data", str(files["source"]), "--output", "dann", *SHORT,
                         "--target-data", str(files["target"]), "--set", "adapt.method=dann",
                         "--set", "adapt.hidden=32", "--target-test", str(files["target_test"]))
    assert code == 0, err
    m = json.loads(Path("dann/metrics.json").read_text())
    assert m["status"] == "completed" and m["method"]["name"] == "dann"
    assert m["adaptation"]["method"] == "dann"
    # the text task's summary of the target data, wherever the core's report puts it
    summary = next(v for v in m["adaptation"].values() if isinstance(v, dict) and "hidden_labels" in v)
    assert summary["rows"] == 16 and summary["hidden_labels"]["found"] is False
    assert m["target_test"]["samples"] == 16 and "accuracy" in m["target_test"]["metrics"]
    assert all("domain_accuracy" in entry["adapt"] for entry in m["history"])


def test_a_target_test_lacking_a_class_is_measured_with_the_run_s_classes(tlapp, tmp_path, monkeypatch):
    # As `tlapp evaluate --data` measures a subset of the classes: the core hands the run's classes over.
    monkeypatch.setenv("TLAPP_PLUGINS", "text")
    files = domain_files(tmp_path)
    code, _, err = tlapp("run", "--plugin", "text", "--data", str(files["source"]), "--output", "lacking", *SHORT,
                         "--target-test", str(files["lacking"]))
    assert code == 0, err
    m = json.loads(Path("lacking/metrics.json").read_text())
    recall = m["target_test"]["metrics"]["recall_per_class"]
    assert m["class_names"] == CLASSES and list(recall) == CLASSES and None in recall.values()


def test_fixmatch_on_text_trains_on_the_weak_and_strong_views(tlapp, tmp_path, monkeypatch):
    monkeypatch.setenv("TLAPP_PLUGINS", "text")
    files = domain_files(tmp_path)
    code, _, err = tlapp("run", "--plugin", "text", "--data", str(files["source"]), "--output", "fixmatch", *SHORT,
                         "--unlabelled-data", str(files["target_test"]), "--set", "semi.method=fixmatch",
                         "--set", "semi.threshold=0.3")
    assert code == 0, err
    m = json.loads(Path("fixmatch/metrics.json").read_text())
    assert m["status"] == "completed" and m["method"]["name"] == "fixmatch"
    summary = next(v for v in m["semi_supervised"].values() if isinstance(v, dict) and "hidden_labels" in v)
    assert summary["views"] == 2 and summary["hidden_labels"]["classes"] == dict.fromkeys(CLASSES, 4)
    assert all("pseudo_label_rate" in entry["semi"] for entry in m["history"])
