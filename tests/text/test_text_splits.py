"""Carved splits keep every class that can be kept, say which they could not, and where each split came from."""

from __future__ import annotations

import json
import logging
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from tlapp_text.formats import Record, stratified_split

from text_helpers import small_corpus, task_job, write_csv

FRACTIONS = {"val": 0.15, "test": 0.15}  # the defaults of data.val_fraction and data.test_fraction


def records(sizes: dict[str, int]) -> list[Record]:
    return [Record(f"{c} {i}", [c], "all.csv", 2 + n) for n, (c, i) in
            enumerate((c, i) for c, size in sizes.items() for i in range(size))]


def per_class(rows: list[Record]) -> Counter:
    return Counter(lb for r in rows for lb in r.labels)


def test_a_class_of_three_rows_gives_one_to_val_and_one_to_test_and_keeps_one():
    parts, missed = stratified_split(records({"common": 40, "rare": 3}), FRACTIONS, seed=0)
    assert {s: per_class(rs)["rare"] for s, rs in parts.items()} == {"train": 1, "val": 1, "test": 1}
    assert {s: per_class(rs)["common"] for s, rs in parts.items()} == {"train": 28, "val": 6, "test": 6}
    assert missed == {"val": [], "test": []}


def test_a_class_of_two_rows_is_missed_by_one_carved_split_which_warns(tmp_path, tlapp, caplog):
    path = write_csv(tmp_path / "all.csv", small_corpus(8) + [["my phone overheats", "hardware"],
                                                              ["the screen flickers", "hardware"]])
    task, job, context = task_job({"path": str(path)})
    prepared = task._prepare(job, context, for_training=True)
    assert {s: per_class(rs)["hardware"] for s, rs in prepared.parts.items()} == {"train": 1, "val": 1, "test": 0}
    expected = "class 'hardware' could not be put in the test split: too few rows of it"
    missing = [w for w in prepared.warnings if "could not be put" in w]
    assert len(missing) == 1 and missing[0].startswith(expected)
    with caplog.at_level(logging.WARNING):
        task.build_data(job, context)
    assert expected in caplog.text
    code, out, err = tlapp("data", "check", "--plugin", "text", "--data", str(path))
    assert code == 0, err
    report = json.loads(out)
    assert any(w.startswith(expected) for w in report["warnings"])
    assert report["split_sources"] == {"train": "carved", "val": "carved", "test": "carved"}
    # evaluation.min_samples (30) warns about the small val and test splits, as the run's engine does
    assert any(w.startswith("the val split has 4 samples, fewer than 30 samples") for w in report["warnings"])
    assert any(w.startswith("the test split has 3 samples") for w in report["warnings"])


def test_a_single_row_class_is_missed_by_both_carved_splits():
    parts, missed = stratified_split(records({"common": 10, "once": 1}), FRACTIONS, seed=3)
    assert per_class(parts["train"])["once"] == 1 and missed == {"val": ["once"], "test": ["once"]}


def test_a_zero_fraction_carves_nothing_and_warns_about_nothing():
    parts, missed = stratified_split(records({"a": 10, "b": 2}), {"val": 0.2, "test": 0.0}, seed=0)
    assert not parts["test"] and "test" not in missed and missed["val"] == []


def test_explicit_train_and_val_without_test_record_that_the_final_metrics_are_on_val(tmp_path, tlapp):
    write_csv(tmp_path / "train.csv", small_corpus(6))
    write_csv(tmp_path / "val.csv", small_corpus(3))
    task, job, context = task_job({"path": str(tmp_path)})
    data = task.build_data(job, context)
    assert data.test is None
    assert data.summary["split_source"] == "files"
    assert data.summary["split_sources"] == {"train": "explicit", "val": "explicit", "test": "none"}
    note = data.summary["notes"][-1]
    for part in ("no test split", "validation split", "best epoch", "optimistic", "add a test file",
                 "pass one file without splits"):
        assert part in note, (part, note)
    code, out, err = tlapp("data", "check", "--plugin", "text", "--data", str(tmp_path))
    assert code == 0, err
    report = json.loads(out)
    assert report["split_sources"] == data.summary["split_sources"] and note in report["notes"]


def test_split_sources_of_a_split_column_without_val_or_test(tmp_path):
    rows = [r + ["train"] for r in small_corpus(6)]
    path = write_csv(tmp_path / "all.csv", rows, header=("text", "label", "split"))
    task, job, context = task_job({"path": str(path)})
    prepared = task._prepare(job, context, for_training=True)
    assert prepared.sources == {"train": "explicit", "val": "carved", "test": "none"}
    assert all(per_class(prepared.parts["val"])[c] == 1 for c in ("account", "billing", "shipping"))
    assert "'split' column" in prepared.notes[-1] and "data.split_column=null" in prepared.notes[-1]
    _, no_test, _ = task_job({"path": str(path), "split_column": None, "test_fraction": 0})
    prepared = task._prepare(no_test, context, for_training=True)
    assert prepared.sources == {"train": "carved", "val": "carved", "test": "none"}
    assert "set data.test_fraction above 0" in prepared.notes[-1]


@settings(max_examples=150, deadline=None)
@given(sizes=st.lists(st.integers(1, 12), min_size=1, max_size=6), seed=st.integers(0, 2**32 - 1),
       val=st.sampled_from([0.05, 0.15, 0.3, 0.45]), test=st.sampled_from([0.05, 0.15, 0.3, 0.45]))
def test_every_class_of_three_rows_or_more_is_in_every_carved_split(sizes, seed, val, test):
    rows = records({f"c{i}": n for i, n in enumerate(sizes)})
    parts, missed = stratified_split(rows, {"val": val, "test": test}, seed=seed)
    assert sorted(id(r) for rs in parts.values() for r in rs) == sorted(id(r) for r in rows)
    for i, n in enumerate(sizes):
        found = {s: per_class(rs)[f"c{i}"] for s, rs in parts.items()}
        assert found["train"] >= 1
        if n >= 3:
            assert found["val"] >= 1 and found["test"] >= 1
        elif n == 2:
            assert found == {"train": 1, "val": 1, "test": 0}
    for split in ("val", "test"):
        assert missed[split] == sorted(c for c in per_class(rows) if not per_class(parts[split])[c])
    assert stratified_split(rows, {"val": val, "test": test}, seed=seed)[0] == parts


label_sets = st.lists(st.sets(st.sampled_from("abcdef"), min_size=1, max_size=3), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(sets=label_sets, seed=st.integers(0, 2**32 - 1))
def test_multilabel_train_keeps_every_label_and_misses_are_exact(sets, seed):
    rows = [Record(f"text {i}", sorted(s), "all.jsonl", i + 1) for i, s in enumerate(sets)]
    parts, missed = stratified_split(rows, FRACTIONS, seed=seed)
    assert sorted(id(r) for rs in parts.values() for r in rs) == sorted(id(r) for r in rows)
    assert set(per_class(parts["train"])) == set(per_class(rows))
    for split in ("val", "test"):
        assert missed[split] == sorted(c for c in per_class(rows) if not per_class(parts[split])[c])
    alone = Counter(r.labels[0] for r in rows if len(r.labels) == 1)
    for label, n in alone.items():  # a label with three rows of its own is in every split
        if n >= 3:
            assert all(per_class(rs)[label] for rs in parts.values()), label
