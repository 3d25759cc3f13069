"""Bad ``--resume`` attempts: a damaged checkpoint, a changed job, a run without its record, each end in
exit 2 and one message, and leave the run as it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import BadInput, check_bad_input

RESUME = ["run", "--output", "r", "--resume"]


def _trained(*edits) -> Path:
    """A finished 1-epoch toy run in ./r, then ``edits`` applied to it."""
    from tlcore.cli import main

    try:
        main(["run", "--plugin", "toy", "--epochs", "1", "--output", "r"])
    except SystemExit as exc:
        assert not exc.code, "training the run to resume failed"
    for edit in edits:
        edit(Path("r"))
    return Path("r")


def _last(run: Path) -> Path:
    return run / "checkpoints" / "last.pt"


def _truncate(run: Path) -> None:
    data = _last(run).read_bytes()
    _last(run).write_bytes(data[: len(data) // 3])


def _without_job(run: Path) -> None:
    """A checkpoint as tlapp versions before stored jobs wrote it."""
    state = torch.load(_last(run), weights_only=True)
    del state["job"]
    torch.save(state, _last(run))


def _resume(*edits, flags: tuple[str, ...] = ()):
    return lambda tmp: (_trained(*edits), [*RESUME, *flags])[1]


ROWS = [
    BadInput("zero-byte last.pt", _resume(lambda r: _last(r).write_bytes(b"")),
             ("cannot load checkpoint", "last.pt", "empty (0 bytes)", "--overwrite")),
    BadInput("truncated last.pt", _resume(_truncate), ("cannot load checkpoint", "last.pt", "corrupt")),
    BadInput("last.pt is a bare state dict", _resume(lambda r: torch.save({"w": torch.zeros(1)}, _last(r))),
             ("last.pt", "not a checkpoint --resume can continue")),
    BadInput("changed lr and batch size", _resume(flags=("--lr", "0.05", "--batch-size", "4")),
             ("train.lr: 0.01 -> 0.05", "train.batch_size: 8 -> 4", "train.epochs may grow")),
    BadInput("changed strategy with --set", _resume(flags=("--set", "strategy.name=linear-probe")),
             ('strategy.name: "finetune" -> "linear-probe"',)),
    BadInput("config.yaml gone, checkpoint without its job",
             _resume(lambda r: (r / "config.yaml").unlink(), _without_job),
             ("config.yaml is missing", "put back the config.yaml")),
    BadInput("nothing there", lambda tmp: RESUME, ("nothing to resume", "no config.yaml")),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_resume(toy_plugin, tlapp, tmp_path, row):
    check_bad_input(tlapp, tmp_path, row)
    if Path("r/metrics.json").exists():  # refused before the run's record was touched
        assert json.loads(Path("r/metrics.json").read_text())["status"] == "completed"
