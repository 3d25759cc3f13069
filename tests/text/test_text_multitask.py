"""Multi-task text classification: data.label_columns, a task per column on one encoder, missing labels masked
per task (an empty CSV cell, an absent JSONL key), metrics and predictions per task, errors naming the file."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import torch

from tlcore import MISSING, ConfigError, DataError
from helpers import cli_exit_code as cli

from text_helpers import SAMPLE, small_corpus, task_job, text_plugin_in, write_csv, write_jsonl

TASKS = "data.label_columns=[label,urgency]"
QUICK = ("--epochs", "1", "--set", "data.max_length=32", "--set", "train.batch_size=8",
         "--set", "evaluation.bootstrap=50")



def sample_cut(root: Path, rows: int = 24) -> Path:
    """The first ``rows`` rows of each of the sample's files (text, label, urgency; some urgency cells empty)."""
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test"):
        lines = (SAMPLE / f"{split}.csv").read_text(encoding="utf-8").splitlines(keepends=True)
        (root / f"{split}.csv").write_text("".join(lines[:rows + 1]), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def multitask_run(tmp_path_factory):
    """A quick two-task run on a cut of the sample, monitored by one task's metric."""
    root = tmp_path_factory.mktemp("text-multitask")
    with text_plugin_in(root):
        code = cli("run", "--plugin", "text", "--data", str(sample_cut(root / "cut")), "--output", "mt",
                   "--set", TASKS, *QUICK, "--set", "train.monitor=urgency.f1_macro",
                   "--set", "train.monitor_mode=max")
    assert code == 0
    return root / "mt"


def read_metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_metrics_history_and_summary_are_per_task(multitask_run):
    m = read_metrics(multitask_run)
    assert m["status"] == "completed" and m["evaluated_on"] == "test"
    assert m["class_names"] == {"label": ["account", "billing", "shipping", "technical"],
                                "urgency": ["routine", "urgent"]}
    metrics = m["metrics"]
    assert metrics["tasks"] == ["label", "urgency"]
    for task in ("label", "urgency"):
        for name in ("accuracy", "f1_macro", "auroc"):
            assert isinstance(metrics[task][name], float)
            low, high = metrics[task][f"{name}_ci"]
            assert low <= metrics[task][name] <= high
        assert set(metrics[task]["f1_per_class"]) == set(m["class_names"][task])
    assert {"f1_macro", "f1_macro_ci"} <= set(metrics)  # the mean over the tasks, with its interval
    assert {"urgency.f1_macro", "label.f1_macro", "f1_macro"} <= set(m["history"][0]["val"])
    data = m["data"]
    assert data["label_columns"] == ["label", "urgency"]
    assert data["multilabel"] == {"label": False, "urgency": False}
    # empty urgency cells leave those rows out of that task only
    labelled = data["labelled"]
    assert labelled["train"]["label"] == 24 and labelled["train"]["urgency"] < 24
    assert sum(data["classes"]["train"]["urgency"].values()) == labelled["train"]["urgency"]
    shown = (multitask_run / "train_batch0.html").read_text()
    assert "label: " in shown and "urgency: " in shown


def test_predict_writes_every_tasks_prediction(multitask_run, tmp_path, monkeypatch):
    monkeypatch.setenv("TLAPP_PLUGINS", "text")
    texts = tmp_path / "tickets.txt"
    texts.write_text("my parcel arrived crushed\nI forgot my password\n")
    table = tmp_path / "more.csv"
    table.write_text("text\nthe app crashes when I start it\n")
    assert cli("predict", "--run", str(multitask_run), "--output", str(tmp_path / "out"), str(texts), str(table)) == 0
    records = json.loads((tmp_path / "out" / "predictions.json").read_text())
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "predictions.csv").read_text())))
    assert [r["source"] for r in records] == [f"{texts}:1", f"{texts}:2", f"{table}:2"]
    for r in records:
        assert set(r["predictions"]) == {"label", "urgency"}
        assert r["predictions"]["urgency"]["predicted"] in ("routine", "urgent")
        assert abs(sum(r["predictions"]["label"]["probabilities"].values()) - 1) < 1e-4
    assert list(rows[0]) == ["source", "text", "label", "urgency", "p_label_account", "p_label_billing",
                             "p_label_shipping", "p_label_technical", "p_urgency_routine", "p_urgency_urgent",
                             "truncated"]
    assert [row["urgency"] for row in rows] == [r["predictions"]["urgency"]["predicted"] for r in records]


def tickets(root: Path, val_urgency: int = 2) -> Path:
    """Train, val and test CSVs with three tasks: label, a multi-label ``topics`` (delimited cells) and
    ``urgency``, of which only the first ``val_urgency`` validation rows have a label."""
    topics = {"billing": "money", "shipping": "delivery", "account": "access"}
    for split in ("train", "val", "test"):
        rows = []
        for i, (text, label) in enumerate(small_corpus(6 if split == "train" else 3)):
            both = topics[label] + (";delivery" if i % 3 == 0 and label != "shipping" else "")
            urgency = "" if split == "val" and i >= val_urgency else "urgent" if i % 2 else "routine"
            rows.append([text, label, both, urgency])
        write_csv(root / f"{split}.csv", rows, header=("text", "label", "topics", "urgency"))
    return root


def test_multilabel_column_masked_cells_and_learned_weights(tlapp, tmp_path):
    data = tickets(tmp_path / "tickets")
    code, _, err = tlapp("run", "--plugin", "text", "--data", str(data), "--output", "three", *QUICK,
                         "--set", "data.label_columns=[label,topics,urgency]",
                         "--set", "model.heads={label: linear, topics: {multilabel: true}, urgency: mlp}",
                         "--set", "train.task_weighting=uncertainty")
    assert code == 0, err
    m = read_metrics(Path("three"))
    assert m["class_names"]["topics"] == ["access", "delivery", "money"]
    assert m["data"]["multilabel"] == {"label": False, "topics": True, "urgency": False}
    assert m["data"]["labelled"]["val"] == {"label": 9, "topics": 9, "urgency": 2}
    assert m["metrics"]["topics"]["f1_macro"] is not None and m["metrics"]["urgency"]["accuracy"] is not None
    assert "urgency.loss" in m["history"][0]["val"]
    log = Path("three/train.log").read_text()
    assert "head.urgency" in log and "task_weights" in log


def test_a_task_without_labels_in_val_is_measured_as_undefined(tmp_path):
    data_dir = tickets(tmp_path / "tickets", val_urgency=0)
    task, job, context = task_job({"path": str(data_dir), "label_columns": ["label", "urgency"]})
    data = task.build_data(job, context)
    assert data.summary["labelled"]["val"]["urgency"] == 0
    assert any("'urgency'" in w and "val" in w for w in data.summary["warnings"])
    evaluator = task.evaluator(job, data, context)
    inputs, targets = data.collate_fn([data.val[i] for i in range(len(data.val))])
    logits = {t: torch.zeros(len(data.val), n) for t, n in data.num_outputs.items()}
    evaluator.update(lambda _: logits, (inputs, targets))
    measured = evaluator.compute()
    assert measured["urgency"]["accuracy"] is None and measured["urgency"]["auroc"] is None
    assert measured["urgency"]["undefined"]["auroc"] == "no labelled samples in this split"
    assert measured["label"]["accuracy"] is not None


def test_jsonl_missing_key_is_a_missing_label_for_that_task_only(tmp_path):
    rows = small_corpus(4)
    objects = [{"text": t, "label": lb, **({"urgency": "urgent" if i % 2 else "routine"} if i % 3 else {})}
               for i, (t, lb) in enumerate(rows)]
    objects.append({"text": "my invoice and my parcel", "urgency": ["urgent"]})  # no label: for urgency only
    write_jsonl(tmp_path / "train.jsonl", objects)
    write_jsonl(tmp_path / "val.jsonl", objects[:6])
    task, job, context = task_job({"path": str(tmp_path), "label_columns": ["label", "urgency"]})
    data = task.build_data(job, context)
    assert data.num_outputs == {"label": 3, "urgency": 2}
    targets = [data.train[i][1] for i in range(len(data.train))]
    assert sum(int(t["urgency"]) == MISSING for t in targets) == sum(1 for o in objects if "urgency" not in o)
    assert sum(int(t["label"]) == MISSING for t in targets) == 1
    assert data.summary["labelled"]["train"] == {"label": 12, "urgency": 9}
    assert task.classical_inputs(job, data, "val") is None  # the TF-IDF baseline is single-task
    batch = data.collate_fn([data.train[i] for i in range(4)])
    assert set(batch[1]) == {"label", "urgency"} and batch[1]["urgency"].dtype == torch.long


def test_single_label_column_keeps_its_behaviour(tmp_path):
    write_csv(tmp_path / "train.csv", small_corpus(6))
    write_csv(tmp_path / "val.csv", small_corpus(2))
    task, job, context = task_job({"path": str(tmp_path)})
    data = task.build_data(job, context)
    assert data.class_names == ["account", "billing", "shipping"] and data.num_outputs == 3
    assert isinstance(data.train[0][1], int) and "labelled" not in data.summary
    assert task.metric_names(job) == ["loss", *job.model.metrics]


def test_misspelt_label_column_names_the_file_and_the_columns(tlapp, tmp_path):
    cut = sample_cut(tmp_path / "cut", rows=4)
    code, _, err = tlapp("run", "--plugin", "text", "--data", str(cut), "--set", "data.label_columns=[label,urgncy]")
    assert code == 2
    assert "train.csv:1: no column 'urgncy' in the header (columns: text, label, urgency)" in err
    assert "did you mean 'urgency'?" in err and "data.label_columns" in err
    write_jsonl(tmp_path / "tickets.jsonl", [{"text": t, "label": lb, "Urgency": "routine"}
                                             for t, lb in small_corpus(3)])
    task, job, context = task_job({"path": str(tmp_path / "tickets.jsonl"), "label_columns": ["label", "urgency"]})
    with pytest.raises(DataError, match=r"tickets\.jsonl has the label field 'urgency'") as found:
        task.build_data(job, context)
    assert "fields: text, label, Urgency" in found.value.what and "did you mean 'Urgency'?" in found.value.fix


def test_bad_label_cells_name_the_file_and_row(tmp_path):
    rows = [[t, lb, ["routine", "urgent"][i % 2]] for i, (t, lb) in enumerate(small_corpus(4))]
    rows[5][1:] = ["", ""]  # no label in any column
    write_csv(tmp_path / "train.csv", rows, header=("text", "label", "urgency"))
    write_csv(tmp_path / "val.csv", [["a late parcel", "shipping", "urgnt"]], header=("text", "label", "urgency"))
    task, job, context = task_job({"path": str(tmp_path), "label_columns": ["label", "urgency"]})
    with pytest.raises(DataError) as found:
        task.build_data(job, context)
    what = found.value.what
    assert f"{tmp_path / 'train.csv'}:7: no label in any label column (label, urgency)" in what
    assert f"{tmp_path / 'val.csv'}:2: unknown label 'urgnt' in column 'urgency' (not in the training split)" in what
    objects = [{"text": t, "label": lb, "urgency": "routine"} for t, lb in small_corpus(4)]
    objects[1]["urgency"] = ["urgent", "routine"]  # two labels in a single-label field
    objects[2]["label"] = {"billing": 1}
    path = write_jsonl(tmp_path / "tickets.jsonl", objects)
    task, job, context = task_job({"path": str(path), "label_columns": ["label", "urgency"]})
    with pytest.raises(DataError) as found:
        task.build_data(job, context)
    what = found.value.what
    assert f"{path}:2: column 'urgency': 2 labels ['urgent', 'routine'] but model.heads.urgency.multilabel " \
           "is false" in what
    assert f"{path}:3: column 'label': label is dict" in what


def test_a_task_with_one_class_or_no_labels_fails_before_training(tmp_path):
    write_csv(tmp_path / "train.csv", [[t, lb, "routine"] for t, lb in small_corpus(4)],
              header=("text", "label", "urgency"))
    write_csv(tmp_path / "val.csv", small_corpus(2), header=("text", "label"))
    task, job, context = task_job({"path": str(tmp_path), "label_columns": ["label", "urgency"]})
    with pytest.raises(DataError, match="no column 'urgency' in the header"):  # every file needs the column
        task.build_data(job, context)
    write_csv(tmp_path / "val.csv", [[t, lb, ""] for t, lb in small_corpus(2)], header=("text", "label", "urgency"))
    with pytest.raises(DataError, match=r"task 'urgency' has 1 class\(es\) \(routine\)"):
        task.build_data(job, context)
    report = task.check_data(job, context)
    assert "task 'urgency' has 1 class(es)" in report["error"] and report["labelled"]["val"]["urgency"] == 0


def test_job_errors_come_before_any_data_is_read(tmp_path):
    with pytest.raises(ConfigError, match="model.heads names task 'urgncy'") as found:
        task_job({"path": str(tmp_path), "label_columns": ["label", "urgency"]}, model={"heads": {"urgncy": "mlp"}})
    assert "did you mean 'urgency'?" in found.value.fix
    with pytest.raises(ConfigError, match="label column 'label' .* has no head in model.heads"):
        task_job({"label_columns": ["label", "urgency"]}, model={"heads": {"urgency": "mlp"}})  # all or none
    with pytest.raises(ConfigError, match="urgency.f1"):
        task_job({"label_columns": ["label", "urgency"]}, train={"monitor": "urgency.f1"})
    with pytest.raises(ConfigError, match="data.labels fixes the classes"):
        task_job({"label_columns": ["label", "urgency"], "labels": ["a", "b"]})
    with pytest.raises(ConfigError, match="repeats a column"):
        task_job({"label_columns": ["label", "label"]})
    # model.heads alone declares the tasks, its names the label columns
    task, job, _ = task_job(model={"heads": {"label": "linear", "urgency": "mlp"}})
    assert list(task.task_specs(job)) == ["label", "urgency"]
    assert "urgency.f1_macro" in task.metric_names(job)


def test_random_split_is_stratified_by_the_first_column(tmp_path):
    rows = [[t, lb, ["routine", "urgent", ""][i % 3]] for i, (t, lb) in enumerate(small_corpus(10))]
    write_csv(tmp_path / "all.csv", rows, header=("text", "label", "urgency"))
    task, job, context = task_job({"path": str(tmp_path / "all.csv"), "label_columns": ["label", "urgency"]})
    prepared = task._prepare(job, context, for_training=True)
    assert any("first label column 'label'" in note for note in prepared.notes)
    for split in ("train", "val", "test"):
        assert {r.labels[0] for r in prepared.parts[split]} == {"account", "billing", "shipping"}


def test_the_bundled_sample_has_an_urgency_column():
    table = list(csv.reader(io.StringIO((SAMPLE / "train.csv").read_text(encoding="utf-8"))))
    assert table[0] == ["text", "label", "urgency"]
    urgency = [row[2] for row in table[1:]]
    assert set(urgency) == {"routine", "urgent", ""} and urgency.count("") == 40
    task, job, context = task_job({"label_columns": ["label", "urgency"]})
    report = task.check_data(job, context)
    assert report["labelled"]["test"] == {"label": 160, "urgency": 160} and "error" not in report
