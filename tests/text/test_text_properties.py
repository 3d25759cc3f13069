"""Property tests of the CSV/TSV/JSONL readers: whatever a file holds, reading it gives records and located
problems, or one DataError, never another exception."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tlapp_text.formats import Columns, read_file
from tlcore import DataError

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SUFFIX = {"csv": ".csv", "tsv": ".tsv", "jsonl": ".jsonl"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10)
# Text built from the characters that matter to the parsers, so that examples reach rows and not only the header.
table_text = st.builds(lambda pieces: "text,label,split\n" + "".join(pieces),
                       st.lists(st.sampled_from(list('ab ,;\t"\n\r\x00\\{}[]é') + ["train", "val", "x"]),
                                max_size=80))
jsonl_objects = st.lists(st.one_of(
    st.fixed_dictionaries({}, optional={"text": json_values, "label": json_values, "split": json_values}),
    json_values), max_size=6)
columns = st.builds(Columns, multilabel=st.booleans(), require_labels=st.booleans(),
                    split_column=st.sampled_from(["split", None]))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("texts")


def read_or_data_error(path, fmt: str, cols: Columns) -> None:
    try:
        result = read_file(path, cols, fmt)
    except DataError as exc:
        assert exc.what and exc.where
        return
    for record in result.records:
        assert isinstance(record.text, str) and record.text.strip() and record.line >= 1
        assert all(isinstance(lb, str) and lb for lb in record.labels)
        assert cols.multilabel or len(record.labels) <= 1
        assert record.split in (None, "train", "val", "test")
    assert all(p.line >= 1 and p.reason for p in result.problems)


@SETTINGS
@given(raw=st.binary(max_size=160), fmt=st.sampled_from(["csv", "tsv", "jsonl"]), cols=columns)
def test_arbitrary_bytes(folder, raw, fmt, cols):
    path = folder / f"data{SUFFIX[fmt]}"
    path.write_bytes(raw)
    read_or_data_error(path, fmt, cols)


@SETTINGS
@given(text=table_text, fmt=st.sampled_from(["csv", "tsv"]), cols=columns)
def test_tables(folder, text, fmt, cols):
    path = folder / f"data{SUFFIX[fmt]}"
    path.write_text(text.replace(",", "\t") if fmt == "tsv" else text, encoding="utf-8")
    read_or_data_error(path, fmt, cols)


@SETTINGS
@given(objects=jsonl_objects, noise=st.lists(st.text(max_size=12), max_size=2), cols=columns)
def test_json_lines(folder, objects, noise, cols):
    path = folder / "data.jsonl"
    path.write_text("\n".join([json.dumps(o) for o in objects] + noise), encoding="utf-8")
    read_or_data_error(path, "jsonl", cols)
