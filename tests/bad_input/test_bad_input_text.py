"""Bad text inputs: each ends in exit 2 and one message naming the file and line, before any training."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import BadInput, check_bad_input

ROWS_OK = [(f"question {i} about my {topic}", topic) for i in range(4) for topic in ("billing", "shipping")]


def table(tmp: Path, extra: str = "", name: str = "train.csv", header: str = "text,label",
          rows=ROWS_OK) -> Path:
    path = tmp / "data" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + "".join(f"{t},{lb}\n" for t, lb in rows) + extra, encoding="utf-8")
    return path


def with_bytes(path: Path, raw: bytes) -> Path:
    with open(path, "ab") as f:
        f.write(raw)
    return path


def run(path: Path, *sets: str) -> list[str]:
    return ["run", "--plugin", "text", "--data", str(path), "--epochs", "1", "--output", str(path.parent / "o"),
            *[arg for s in sets for arg in ("--set", s)]]


def check(path: Path, *sets: str) -> list[str]:
    return ["data", "check", "--plugin", "text", "--data", str(path), *[arg for s in sets for arg in ("--set", s)]]


ROWS = [
    BadInput("empty text", lambda tmp: run(table(tmp, '"  ",billing\n')), ("train.csv:10: empty text",
                                                                             "data.on_error=skip")),
    BadInput("no label", lambda tmp: run(table(tmp, "a question,\n")), ("train.csv:10: no label",)),
    BadInput("unquoted delimiter", lambda tmp: run(table(tmp, "a, b, c,billing\n")),
             ("train.csv:10: 4 fields, the header has 2",)),
    BadInput("line not utf-8", lambda tmp: run(with_bytes(table(tmp), "caf\u00e9,billing\n".encode("latin-1"))),
             ("train.csv:10: not utf-8 text", "data.encoding")),
    BadInput("header not utf-8, even with skip", lambda tmp: run(_latin_header(tmp), "data.on_error=skip"),
             ("bad.csv:1: not utf-8 text",)),
    BadInput("unknown encoding", lambda tmp: run(table(tmp), "data.encoding=klingon"), ("klingon",
                                                                                        "data.encoding")),
    BadInput("bad json line", lambda tmp: run(_jsonl(tmp, '{"text": "broken", "label": ')),
             ("train.jsonl:2: bad JSON",)),
    BadInput("no text column", lambda tmp: run(table(tmp, header="body,label")),
             ("no column 'text'", "data.text_column")),
    BadInput("empty file", lambda tmp: run(_empty(tmp)), ("empty.csv is empty",)),
    BadInput("two unnamed files in a folder", lambda tmp: run(_two_files(tmp)),
             ("2 data files and none is named train/val/test",)),
    BadInput("unknown label", lambda tmp: run(table(tmp, "my login,account\n"), "data.labels=[billing,shipping]"),
             ("train.csv:10: unknown label 'account'",)),
    BadInput("several labels, not multilabel", lambda tmp: run(_jsonl(tmp, '{"text": "charged for a late parcel", '
                                                                          '"label": ["billing", "shipping"]}')),
             ("train.jsonl:2: 2 labels", "model.multilabel")),
    BadInput("a single class", lambda tmp: run(table(tmp, rows=[(f"text {i}", "billing") for i in range(8)])),
             ("1 class(es)", "at least two")),
    BadInput("listed class without rows", lambda tmp: run(table(tmp), "data.labels=[billing,shipping,account]"),
             ("['account']", "no training rows")),
    BadInput("on_error misspelt", lambda tmp: check(table(tmp), "data.on_error=ignore"), ("data.on_error",)),
    BadInput("dataset missing", lambda tmp: check(tmp / "nowhere.csv"), ("dataset not found", "nowhere.csv")),
    # Asked when the data is known, before the first step (not after an epoch, from the evaluator).
    BadInput("binary task, sensitivity asked, no positive class", lambda tmp: run(
        table(tmp), "model.metrics=[accuracy,sensitivity]"), ("positive class", "billing, shipping",
                                                                "model.positive_class=NAME")),
]


def _latin_header(tmp: Path) -> Path:
    path = tmp / "data" / "bad.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("t\u00e9xt,label\nhello,billing\n".encode("latin-1"))
    return path


def _jsonl(tmp: Path, second_line: str) -> Path:
    path = tmp / "data" / "train.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"text": "my parcel", "label": "shipping"}\n' + second_line + "\n")
    return path


def _two_files(tmp: Path) -> Path:
    table(tmp, name="a.csv")
    return table(tmp, name="b.csv").parent


def _empty(tmp: Path) -> Path:
    path = tmp / "data" / "empty.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    return path


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input(tlapp, tmp_path, monkeypatch, row):
    monkeypatch.setenv("TLAPP_PLUGINS", "text")
    check_bad_input(tlapp, tmp_path, row)
