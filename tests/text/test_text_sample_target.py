"""The text plugin's shifted target domain (``sample_target/``) is what ``scripts/make_text_sample.py`` writes."""

import csv
import importlib.util
from pathlib import Path

import pytest

from tlapp_text.formats import Columns, read_file

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "plugins" / "tlapp_text" / "sample_data"
TARGET = ROOT / "plugins" / "tlapp_text" / "sample_target"


@pytest.fixture(scope="module")
def make():
    spec = importlib.util.spec_from_file_location("make_text_sample", ROOT / "scripts" / "make_text_sample.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("name", ["unlabelled.csv", "test.csv", "README.md"])
def test_committed_target_is_what_the_generator_writes(make, tmp_path, name):
    make.write_target(tmp_path, 7)
    assert (tmp_path / name).read_bytes() == (TARGET / name).read_bytes()


@pytest.mark.parametrize("name", ["train.csv", "val.csv", "test.csv", "README.md"])
def test_source_corpus_does_not_move_with_the_target(make, tmp_path, name):
    make.write_source(tmp_path, 7)
    assert (tmp_path / name).read_bytes() == (SOURCE / name).read_bytes()


def test_layout():
    unlabelled, test = rows(TARGET / "unlabelled.csv"), rows(TARGET / "test.csv")
    assert list(unlabelled[0]) == ["text"]
    assert list(test[0]) == ["text", "label"]
    assert len(unlabelled) == 300 and len(test) == 160
    source_classes = {r["label"] for r in rows(SOURCE / "train.csv")}
    assert {r["label"] for r in test} == source_classes == {"billing", "technical", "shipping", "account"}
    assert not {r["text"] for r in unlabelled} & {r["text"] for r in test}


def test_no_target_text_is_a_source_text():
    source = {r["text"].lower() for split in ("train", "val", "test") for r in rows(SOURCE / f"{split}.csv")}
    target = [r["text"].lower() for name in ("unlabelled.csv", "test.csv") for r in rows(TARGET / name)]
    assert not source & set(target)


def test_test_file_reads_as_labelled_evaluation_data():
    result = read_file(TARGET / "test.csv", Columns())
    assert not result.problems and len(result.records) == 160
    assert all(len(r.labels) == 1 for r in result.records)
