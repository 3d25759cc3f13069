"""The bad-input table of the medical plugin: each row fails before training, with exit 2 and one message."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from helpers import BadInput, check_bad_input
from tlapp_medical.task import SAMPLE_DATA

A_SAMPLE_FILE = SAMPLE_DATA / "nodule" / "IMG0004.dcm"


def run(data: Path | str, tmp: Path, *extra: str) -> list[str]:
    return ["run", "--plugin", "medical", "--data", str(data), "--output", str(tmp / "out"), "--epochs", "1",
            *extra]


def manifest(tmp: Path, *paths: str) -> Path:
    root = tmp / "ds"
    root.mkdir(exist_ok=True)
    (root / "labels.csv").write_text("path,label\n" + "".join(f"{p},nodule\n" for p in paths))
    return root / "labels.csv"


def climbing_manifest(tmp: Path) -> list[str]:
    return run(manifest(tmp, "../secret.dcm"), tmp)


def absolute_manifest(tmp: Path) -> list[str]:
    return run(manifest(tmp, str(A_SAMPLE_FILE)), tmp)


def symlink_out_of_folders(tmp: Path) -> list[str]:
    for label in ("nodule", "normal"):
        (tmp / "ds" / label).mkdir(parents=True)
        (tmp / "ds" / label / "scan.dcm").symlink_to(A_SAMPLE_FILE)
    return run(tmp / "ds", tmp)


def classes_without_a_negative_name(tmp: Path) -> list[str]:
    for label, source in (("lesion", "nodule"), ("clear", "normal")):
        (tmp / "ds" / label).mkdir(parents=True)
        for file in sorted((SAMPLE_DATA / source).iterdir())[:4]:
            shutil.copyfile(file, tmp / "ds" / label / file.name)
    return run(tmp / "ds", tmp)


ROWS = [
    BadInput("manifest path climbs out", climbing_manifest,
             ("../secret.dcm", "outside the dataset folder", "labels.csv:2", "data.allow_outside_root=true")),
    BadInput("manifest path absolute outside", absolute_manifest,
             ("is absolute", "outside the dataset folder", "data.allow_outside_root=true")),
    BadInput("folder symlink leads outside", symlink_out_of_folders,
             ("symlink", "outside the dataset folder", "data.allow_outside_root=true")),
    BadInput("positive class ambiguous", classes_without_a_negative_name,
             ("positive class", "lesion", "clear", "--set model.positive_class=NAME")),
    BadInput("positive class unknown", lambda tmp: run(SAMPLE_DATA, tmp, "--set", "model.positive_class=tumour"),
             ("'tumour'", "nodule", "normal", "model.positive_class")),
    BadInput("positive class in multi-label", lambda tmp: run(SAMPLE_DATA, tmp, "--set", "model.multilabel=true",
                                                              "--set", "model.positive_class=nodule"),
             ("single-label", "model.positive_class")),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input(tlapp, tmp_path, row):
    check_bad_input(tlapp, tmp_path, row)
    assert not (tmp_path / "out" / "checkpoints" / "last.pt").exists()  # stopped before training
