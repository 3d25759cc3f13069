"""Unreadable lines under on_error, warnings about rare classes, and prediction inputs from folders."""

from __future__ import annotations

import json
import logging

import pytest

from tlcore import DataError

from text_helpers import small_corpus, task_job, write_csv, write_jsonl


def latin1_line(path, text: str) -> None:
    with open(path, "ab") as f:
        f.write(text.encode("latin-1") + b"\n")


def test_undecodable_lines_are_bad_rows_that_skip_leaves_out(tmp_path):
    path = write_csv(tmp_path / "train.csv", small_corpus(4))
    latin1_line(path, "caf\u00e9 bill,billing")
    with open(path, "a", encoding="utf-8") as f:
        f.write("my parcel is late,shipping\n")
    latin1_line(path, "na\u00efve login,account")
    task, job, context = task_job({"path": str(path)})
    with pytest.raises(DataError) as err:
        task.build_data(job, context)
    message = str(err.value)
    assert "2 bad row(s)" in message and f"{path}:14: not utf-8 text" in message and f"{path}:16:" in message
    assert "data.encoding" in message and "data.on_error=skip" in message
    task, job, context = task_job({"path": str(path), "on_error": "skip"})
    data = task.build_data(job, context)
    assert data.summary["skipped_rows"] == 2 and sum(data.summary["rows"].values()) == 13
    task, job, context = task_job({"path": str(path), "encoding": "latin-1"})
    assert task.build_data(job, context).summary["skipped_rows"] == 0


def test_an_undecodable_header_fails_the_file(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes("t\u00e9xt,label\n".encode("latin-1") + b"hello,billing\n")
    task, job, context = task_job({"path": str(path), "on_error": "skip"})
    with pytest.raises(DataError, match=rf"{path}:1: not utf-8 text"):
        task.build_data(job, context)


def test_rare_classes_are_warned_about_in_the_log_and_data_check(tmp_path, tlapp, caplog):
    rows = small_corpus(6) + [["my phone overheats", "hardware"]]
    path = write_csv(tmp_path / "train.csv", rows)
    task, job, context = task_job({"path": str(path)})
    with caplog.at_level(logging.WARNING):
        task.build_data(job, context)
    assert "['hardware'] have a single example" in caplog.text
    code, out, err = tlapp("data", "check", "--plugin", "text", "--data", str(path),
                           "--set", "data.labels=[account,billing,shipping,hardware,weather]")
    assert code == 0, err
    warnings = json.loads(out)["warnings"]
    assert any("['weather'] of data.labels have no examples" in w for w in warnings)
    assert any("['hardware'] have a single example" in w for w in warnings)


def test_predict_reads_a_folder_of_documents_and_tables(tmp_path):
    folder = tmp_path / "inbox"
    (folder / "older").mkdir(parents=True)
    (folder / "a.txt").write_text("my parcel never arrived.\nThe courier does not answer.\n")
    (folder / "older" / "b.txt").write_text("I was charged twice\n")
    write_jsonl(folder / "c.jsonl", [{"text": "reset my password"}, {"text": "the app crashes"}])
    (folder / "notes.md").write_text("not an input")
    (folder / ".hidden.txt").write_text("editor backup")
    task, job, context = task_job()
    items = task._prediction_inputs(job, context, [str(folder)])
    assert items == [(str(folder / "a.txt"), "my parcel never arrived.\nThe courier does not answer."),
                     (f"{folder / 'c.jsonl'}:1", "reset my password"), (f"{folder / 'c.jsonl'}:2", "the app crashes"),
                     (str(folder / "older" / "b.txt"), "I was charged twice")]
    # A .txt file named on its own is still one text per line.
    assert len(task._prediction_inputs(job, context, [str(folder / "a.txt")])) == 2


@pytest.mark.parametrize("make,says", [
    (lambda folder: (folder / "x.pdf").write_bytes(b"%PDF"), "no text files (.txt, .csv, .tsv, .jsonl) among"),
    (lambda folder: (folder / "empty.txt").write_text("  \n"), "empty.txt:1: empty document"),
])
def test_predict_folder_problems_are_exact(tmp_path, make, says):
    folder = tmp_path / "inbox"
    folder.mkdir()
    make(folder)
    task, job, context = task_job()
    with pytest.raises(DataError) as err:
        task._prediction_inputs(job, context, [str(folder)])
    assert says in str(err.value)
