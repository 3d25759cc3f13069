"""Bad job specs: each fails when the job is resolved, before any data is read or a model is built."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import BadInput, check_bad_input


def medical(*args: str):
    return lambda tmp: ["run", "--plugin", "medical", "--output", str(tmp / "o"), *args]


def config_file(name: str, content: bytes, *args: str):
    def build(tmp: Path) -> list[str]:
        path = tmp / name
        path.write_bytes(content)
        return ["run", "--plugin", "medical", "--config", str(path), "--output", str(tmp / "o"), *args]
    return build


ROWS = [
    BadInput("infinite lr", medical("--set", "train.lr=.inf"), ("train.lr", "finite")),
    BadInput("infinite weight decay", medical("--set", "train.weight_decay=.inf"), ("train.weight_decay", "finite")),
    BadInput("nan lr", medical("--set", "train.lr=.nan"), ("train.lr", "finite")),
    BadInput("infinite lr flag", medical("--lr", "inf"), ("train.lr", "finite")),
    BadInput("infinite option in a free-form section", medical("--set", "model.head_options.dropout=.inf"),
             ("model.head_options.dropout", "finite")),
    BadInput("infinite strategy option given as text",
             medical("--strategy", "finetune", "--set", "strategy.lr_mult.head=inf"),
             ("strategy.lr_mult.head", "finite")),
    BadInput("seed beyond 64 bits", medical("--seed", "99999999999999999999999"), ("train.seed", "4294967295")),
    BadInput("seed beyond numpy's 32 bits", medical("--seed", str(2**32)), ("train.seed", "4294967295")),
    BadInput("negative seed", medical("--seed", "-1"), ("train.seed", "greater than or equal to 0")),
    BadInput("boolean epochs", medical("--set", "train.epochs=true"), ("train.epochs", "boolean is not a number")),
    BadInput("boolean lr", medical("--set", "train.lr=true"), ("train.lr", "boolean is not a number")),
    BadInput("boolean optional int", medical("--set", "train.num_threads=yes"),
             ("train.num_threads", "boolean is not a number")),
    BadInput("boolean strategy option", medical("--set", "strategy.name=freeze-unfreeze",
                                                "--set", "strategy.head_epochs=true"),
             ("strategy.head_epochs", "boolean is not a number")),
    BadInput("duplicate key in config file",
             config_file("dup.yaml", b"train:\n  lr: 0.01\n  epochs: 2\n  lr: 0.1\n"),
             ("duplicate key 'lr'", "line 2", "dup.yaml:4")),
    BadInput("duplicate section in config file",
             config_file("dup.yaml", b"train: {lr: 0.01}\nmodel: {init: none}\ntrain: {epochs: 1}\n"),
             ("duplicate key 'train'", "dup.yaml:3")),
    BadInput("config file not UTF-8", config_file("latin1.yaml", "train:\n  device: cpu # Gerät\n".encode("latin-1")),
             ("latin1.yaml:2", "not UTF-8", "byte position 26", "0xe4")),
    BadInput("impossible date in config file", config_file("date.yaml", b"plugin: medical\nnote: 2024-13-45\n"),
             ("date.yaml:2", "2024-13-45")),
    BadInput("unknown augment option", medical("--set", "augment_options.bogus=1"),
             ("augment_options.bogus", "medical-light", "hflip")),
    BadInput("misspelt augment option", medical("--set", "augment_options.hfip=true"),
             ("augment_options.hfip", "did you mean 'augment_options.hflip'")),
    BadInput("unknown augmentation", medical("--set", "augment=medical-lite"), ("medical-lite", "medical-light")),
    BadInput("misspelt monitor", medical("--set", "train.monitor=aurok"),
             ("train.monitor", "aurok", "did you mean 'auroc'")),
    BadInput("monitor not among the job's metrics", medical("--set", "train.monitor=auroc",
                                                            "--set", "model.metrics=[accuracy]"),
             ("train.monitor", "'auroc'", "loss, accuracy")),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input(tlapp, tmp_path, row):
    check_bad_input(tlapp, tmp_path, row)
    assert not (tmp_path / "o").exists(), "the run directory was made before the job spec was checked"
