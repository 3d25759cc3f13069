"""Reading texts: the three formats, splits, bad rows by file and line, labels, truncation, data check."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tlcore import ConfigError, DataError
from tlapp_text.formats import Columns

from text_helpers import small_corpus, task_job, write_csv, write_jsonl

ROWS = [
    ['Hello, my "premium" invoice is wrong', "billing"],
    ["The parcel\nnever came", "shipping"],  # a quoted multi-line field: the next row starts on line 4
    ["I cannot log in", "account"],
]


def test_csv_tsv_and_jsonl_give_the_same_rows_with_their_lines(tmp_path):
    csv_file = write_csv(tmp_path / "a.csv", ROWS)
    tsv_file = write_csv(tmp_path / "a.tsv", ROWS, sep="\t")
    jsonl_file = write_jsonl(tmp_path / "a.jsonl", [{"text": t, "label": lb} for t, lb in ROWS])
    _, _, context = task_job()
    got = {}
    for path, fmt in ((csv_file, "text-csv"), (tsv_file, "text-tsv"), (jsonl_file, "text-jsonl")):
        result = context.registry.dataset_formats[fmt].factory(path, **vars(Columns()))
        assert not result.problems, result.problems
        got[fmt] = [(r.text, r.labels) for r in result.records]
        lines = [r.line for r in result.records]
        assert lines == ([1, 2, 3] if fmt == "text-jsonl" else [2, 3, 5]), (fmt, lines)  # JSONL: no header
    assert got["text-csv"] == got["text-tsv"] == got["text-jsonl"] == [(t, [lb]) for t, lb in ROWS]


def split_files(root: Path):
    """A folder of train, val and test CSVs of the same small corpus, read: (task, job, context, data)."""
    rows = small_corpus(6)
    for split in ("train", "val", "test"):
        write_csv(root / f"{split}.csv", rows)
    task, job, context = task_job({"path": str(root)})
    return task, job, context, task.build_data(job, context)


def test_folder_of_split_files(tmp_path):
    _, _, _, data = split_files(tmp_path)
    assert data.summary["split_source"] == "files"
    assert data.summary["rows"] == {"train": 18, "val": 18, "test": 18}
    assert data.class_names == ["account", "billing", "shipping"]


def test_split_column_is_honoured(tmp_path):
    rows = small_corpus(6)
    splits = ["train", "train", "validation", "test", "train", "dev"] * 3
    write_csv(tmp_path / "all.csv", [r + [s] for r, s in zip(rows, splits)], header=("text", "label", "split"))
    task, job, context = task_job({"path": str(tmp_path / "all.csv")})
    data = task.build_data(job, context)
    assert data.summary["split_source"] == "column"
    assert data.summary["rows"] == {"train": 9, "val": 6, "test": 3}


def test_random_split_is_stratified_and_follows_the_seed(tmp_path):
    rows = small_corpus(20)
    write_csv(tmp_path / "all.csv", rows)
    task, job, context = task_job({"path": str(tmp_path / "all.csv"), "val_fraction": 0.2, "test_fraction": 0.25})
    parts = task._split(task._read(job, context)[2], "random", job).parts
    for split, per_class in (("val", 4), ("test", 5), ("train", 11)):
        assert Counter(r.labels[0] for r in parts[split]) == {c: per_class for c in ("billing", "shipping", "account")}
    again = task._split(task._read(job, context)[2], "random", job).parts
    assert [r.line for r in again["test"]] == [r.line for r in parts["test"]]
    _, other_seed, _ = task_job({"path": str(tmp_path / "all.csv")}, train={"seed": 5})
    other = task._split(task._read(other_seed, context)[2], "random", other_seed).parts
    assert [r.line for r in other["test"]] != [r.line for r in parts["test"]]


def bad_folder(root: Path) -> Path:
    rows = small_corpus(6)
    train = root / "train.csv"
    write_csv(train, rows)
    lines = train.read_text().splitlines()
    lines.insert(2, '"   ",billing')            # line 3: empty text
    lines.insert(4, "a text, with, commas,billing")  # line 5: unquoted delimiter
    lines.insert(6, "no label here,")          # line 7: no label
    train.write_text("\n".join(lines) + "\n")
    write_jsonl(root / "val.jsonl", [
        {"text": "where is my parcel", "label": "shipping"},
        '{"text": "broken json", "label": ',      # line 2
        '["a list"]',                             # line 3
        {"body": "no text field", "label": "billing"},  # line 4
        {"text": "is it going to rain", "label": "weather"},  # line 5: label unseen in train
        {"text": "reset my password", "label": "account"},
    ])
    return root


def test_bad_rows_are_reported_with_file_and_line(tmp_path, tlapp):
    root = bad_folder(tmp_path / "data")
    task, job, context = task_job({"path": str(root)})
    with pytest.raises(DataError) as err:
        task.build_data(job, context)
    message = str(err.value)
    train, val = root / "train.csv", root / "val.jsonl"
    for expected in (f"{train}:3: empty text", f"{train}:5: 4 fields, the header has 2",
                     f"{train}:7: no label", f"{val}:2: bad JSON", f"{val}:3: expected a JSON object",
                     f"{val}:4: no field 'text'", f"{val}:5: unknown label 'weather'"):
        assert expected in message, (expected, message)
    assert "7 bad row(s)" in message and "data.on_error=skip" in message
    code, _, stderr = tlapp("run", "--plugin", "text", "--data", str(root), "--epochs", "1")
    assert code == 2 and f"{train}:3: empty text" in stderr and "Traceback" not in stderr


def test_on_error_skip_drops_bad_rows_and_counts_them(tmp_path):
    root = bad_folder(tmp_path / "data")
    task, job, context = task_job({"path": str(root), "on_error": "skip"}, run_dir=tmp_path)
    data = task.build_data(job, context)
    assert data.summary["skipped_rows"] == 7
    assert data.summary["rows"]["train"] == 18 and data.summary["rows"]["val"] == 2
    skipped = json.loads((tmp_path / "skipped_rows.json").read_text())
    assert {(Path(s["file"]).name, s["line"]) for s in skipped} >= {("train.csv", 3), ("val.jsonl", 5)}


def test_configured_label_list_rejects_other_labels_and_orders_classes(tmp_path):
    write_csv(tmp_path / "train.csv", small_corpus(6))
    write_csv(tmp_path / "val.csv", small_corpus(2))
    task, job, context = task_job({"path": str(tmp_path), "labels": ["shipping", "billing"]})
    with pytest.raises(DataError, match=r"train\.csv:\d+: unknown label 'account' \(not in data.labels\)"):
        task.build_data(job, context)
    task, job, context = task_job({"path": str(tmp_path), "labels": ["shipping", "billing", "account"]})
    assert task.build_data(job, context).class_names == ["shipping", "billing", "account"]


def test_text_that_is_not_utf8_names_the_line(tmp_path):
    path = write_csv(tmp_path / "train.csv", small_corpus(3))
    path.write_bytes(path.read_bytes() + "caf\u00e9 bill,billing\n".encode("latin-1"))
    task, job, context = task_job({"path": str(path)})
    with pytest.raises(DataError, match=rf"{path}:11: not utf-8 text"):
        task.build_data(job, context)


def test_missing_text_column_names_the_columns(tmp_path):
    path = write_csv(tmp_path / "train.csv", small_corpus(3), header=("body", "label"))
    task, job, context = task_job({"path": str(path)})
    with pytest.raises(DataError, match=r"no column 'text' in the header \(columns: body, label\)") as err:
        task.build_data(job, context)
    assert "data.text_column" in err.value.fix


def test_multilabel_from_delimited_cells_and_json_lists(tmp_path):
    rows = [[t, lb + (";billing" if i % 3 == 0 else "")] for i, (t, lb) in enumerate(small_corpus(6))]
    write_csv(tmp_path / "train.csv", rows)
    write_jsonl(tmp_path / "val.jsonl", [{"text": "charged for a lost parcel", "label": ["shipping", "billing"]},
                                         {"text": "my login", "label": "account"}])
    task, job, context = task_job({"path": str(tmp_path)}, model={"multilabel": True})
    data = task.build_data(job, context)
    assert data.class_names == ["account", "billing", "shipping"]
    targets = {tuple(data.val[i][1].tolist()) for i in range(len(data.val))}
    assert targets == {(0.0, 1.0, 1.0), (1.0, 0.0, 0.0)}
    # Without multilabel, several labels in one row are an error naming the row.
    task, job, context = task_job({"path": str(tmp_path)})
    with pytest.raises(DataError, match=r"val\.jsonl:1: 2 labels \['shipping', 'billing'\] but model.multilabel"):
        task.build_data(job, context)


def test_long_texts_are_truncated_and_counted(tmp_path):
    rows = small_corpus(6)
    rows[0][0] = " ".join(["refund"] * 50)
    rows[7][0] = " ".join(["parcel"] * 30)
    write_csv(tmp_path / "train.csv", rows)
    write_csv(tmp_path / "val.csv", [[" ".join(["login"] * 40), "account"]] + small_corpus(1))
    task, job, context = task_job({"path": str(tmp_path), "max_length": 16})
    data = task.build_data(job, context)
    assert data.summary["truncated"] == {"train": 2, "val": 1, "test": 0, "total": 3}
    assert data.summary["max_length"] == 16 and data.summary["tokens"]["train"]["max"] == 16
    longest = max((data.train[i][0] for i in range(len(data.train))), key=len)
    assert len(longest) == 16 and longest[0].item() == 101 and longest[-1].item() == 102  # [CLS] ... [SEP]
    task, job, context = task_job({"path": str(tmp_path), "max_length": 600})
    with pytest.raises(ConfigError, match="exceeds the model's limit of 512"):
        task.build_data(job, context)


def test_data_check_reports_files_splits_classes_bad_rows_lengths(tmp_path, tlapp):
    root = bad_folder(tmp_path / "data")
    long_row = " ".join(["invoice"] * 40)
    with open(root / "train.csv", "a") as f:
        f.write(f"{long_row},billing\n")
    code, out, err = tlapp("data", "check", "--plugin", "text", "--data", str(root), "--set", "data.max_length=16",
                           "--json", "report.json")
    assert code == 0, err
    report = json.loads(Path("report.json").read_text())
    assert [(Path(f["file"]).name, f["rows"], f["bad_rows"]) for f in report["files"]] == [
        ("train.csv", 19, 3), ("val.jsonl", 3, 3)]
    assert report["rows"] == {"train": 19, "val": 2, "test": 0}
    assert report["class_counts"]["train"] == {"account": 6, "billing": 7, "shipping": 6}
    assert report["bad_rows"] == 7 and report["empty_texts"] == 1
    assert any(p.endswith("val.jsonl:5: unknown label 'weather' (not in the training split)")
               for p in report["problems"])
    assert report["tokens"]["train"]["max"] == 16 and report["truncated"]["train"] == 1
    assert report["max_length"] == 16


def test_classical_inputs_are_the_texts_of_each_split_in_served_order(tmp_path):
    task, job, context, data = split_files(tmp_path)
    inputs = task.classical_inputs(job, data, "test")
    assert "TF-IDF" in inputs.description
    assert len(inputs.evaluated) == len(data.test) and inputs.evaluated_targets == data.test.targets
    tokenizer = task.tokenizer(job, context)
    for i in (0, len(data.test) - 1):  # served shortest first: text i is what the dataset serves at i
        assert tokenizer(inputs.evaluated[i])["input_ids"] == data.test.ids[i].tolist()
    assert len(inputs.train) == len(data.train) and inputs.train_targets == data.train.targets
