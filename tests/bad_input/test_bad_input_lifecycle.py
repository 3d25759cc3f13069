"""The bad-input table for a run's life cycle: existing output folders, resuming what cannot be resumed,
a data error after the run folder was made. No message may send the user to a command that fails in turn."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import TEST_PLUGINS, BadInput, check_bad_input, install_distribution
from tlcore.directories import mark


@pytest.fixture
def lifecycle(toy_plugin, monkeypatch):
    install_distribution(toy_plugin, "tlapp-lifecycle", {"tlapp_lifecycle": TEST_PLUGINS / "tlapp_lifecycle.py"},
                         {"lifecycle": "tlapp_lifecycle"})
    monkeypatch.setenv("TLAPP_PLUGINS", "toy,lifecycle")


def _folder(tmp: Path) -> Path:
    folder = tmp / "notes"
    folder.mkdir()
    (folder / "thesis.txt").write_text("draft\n")
    return folder


def _run_dir(tmp: Path, *, finished: bool) -> Path:
    """A run folder as a run leaves it: finished (it has last.pt) or stopped before its first checkpoint."""
    run = tmp / "r"
    mark(run, "run")
    (run / "config.yaml").write_text("plugin: toy\n")
    (run / "train.log").write_text("error: no dataset at x\n")
    (run / "checkpoints").mkdir()
    if finished:
        (run / "checkpoints" / "last.pt").write_bytes(b"")
    return run


def _failing(tmp: Path, folder: Path | None = None) -> list[str]:
    return ["run", "--plugin", "lifecycle", "--epochs", "1", "--output", str(folder or tmp / "r"),
            "--data", str(tmp / "missing")]


ROWS = [
    BadInput("run into a folder that is not a run", lambda tmp: ["run", "--plugin", "toy", "--output",
                                                                  str(_folder(tmp))],
             ("already exists", "choose another --output")),
    BadInput("run into a finished run", lambda tmp: ["run", "--plugin", "toy", "--output",
                                                      str(_run_dir(tmp, finished=True))],
             ("already exists", "--resume", "--overwrite")),
    BadInput("resume a folder that is not a run", lambda tmp: ["run", "--plugin", "toy", "--output",
                                                                str(_folder(tmp)), "--resume"],
             ("nothing to resume", "no checkpoints/last.pt")),
    BadInput("resume a run that stopped before its first checkpoint",
             lambda tmp: ["run", "--output", str(_run_dir(tmp, finished=False)), "--resume"],
             ("nothing to resume", "before its first checkpoint", "without --resume")),
    BadInput("data error after the run folder was made", _failing, ("no dataset at", "missing", "data.path")),
    BadInput("the same data error in the folder of the failed attempt",
             lambda tmp: _failing(tmp, _run_dir(tmp, finished=False)), ("no dataset at", "data.path")),
]

# Hints that would fail in turn: a folder that is not a run can be neither resumed nor overwritten.
NEVER_SAYS = {"run into a folder that is not a run": ("--resume", "--overwrite"),
              "the same data error in the folder of the failed attempt": ("already exists",)}


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input(lifecycle, tlapp, tmp_path, row):
    message = check_bad_input(tlapp, tmp_path, row)
    for fragment in NEVER_SAYS.get(row.id, ()):
        assert fragment not in message, f"{row.id}: {fragment!r} in\n{message}"
