"""Bad output paths: refused before anything is built; a disk that fails mid-run names the file it could not write."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from helpers import BadInput, check_bad_input
from tlcore import checkpoint
from tlcore.checkpoint import atomic_write_bytes, atomic_write_text
from tlcore.directories import check_output_file
from tlcore.errors import TlappError

RUN_FILES = ("config.yaml", "metrics.json", "train.log", ".tlapp", "checkpoints/best.pt", "checkpoints/last.pt")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """One tiny medical run (one epoch, random weights), shared by the module; tests copy it."""
    from tlcore.cli import main

    home = tmp_path_factory.mktemp("finished")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(home)
        with pytest.raises(SystemExit) as ended:
            main(["run", "--plugin", "medical", "--output", "run", "--epochs", "1", "--init", "none",
                  "--set", "train.batch_size=8"])
            raise SystemExit(0)
    assert ended.value.code == 0
    return home / "run"


def file_at(name: str, *args: str):
    def build(tmp: Path) -> list[str]:
        (tmp / name).write_text("mine\n")
        return ["run", "--plugin", "medical", "--output", str(tmp / name), *args]
    return build


def under_file(name: str):
    def build(tmp: Path) -> list[str]:
        (tmp / name).write_text("mine\n")
        return ["run", "--plugin", "medical", "--output", str(tmp / name / "run")]
    return build


def evaluate_to(relative: str):
    return lambda tmp: ["evaluate", "--run", str(tmp / "run"), "--output", str(tmp / "run" / relative)]


ROWS = [
    BadInput("output is an existing file", file_at("notes.txt"), ("notes.txt", "existing file", "--output")),
    BadInput("output under a file", under_file("notes.txt"), ("notes.txt", "is a file, not a folder", "--output")),
    *[BadInput(f"evaluate over the run's {name}", evaluate_to(name), ("refusing", name, "tlapp run directory"))
      for name in RUN_FILES],
    BadInput("evaluate into the run's checkpoints", evaluate_to("checkpoints/evaluation.json"),
             ("checkpoints/evaluation.json", "tlapp run directory")),
    BadInput("evaluate over another file of the run", evaluate_to("splits.json"), ("splits.json", "refusing")),
    BadInput("evaluate under a file", evaluate_to("config.yaml/evaluation.json"),
             ("config.yaml", "is a file, not a folder")),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_output(tlapp, tmp_path, finished_run, row):
    shutil.copytree(finished_run, tmp_path / "run")
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    check_bad_input(tlapp, tmp_path, row)
    after = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    assert after == before, "the run directory changed"
    if (tmp_path / "notes.txt").exists():
        assert (tmp_path / "notes.txt").read_text() == "mine\n"


def test_evaluate_may_replace_its_own_output(finished_run, tmp_path):
    shutil.copytree(finished_run, tmp_path / "run")
    (tmp_path / "run" / "evaluation.json").write_text("{}\n")
    check_output_file(tmp_path / "run" / "evaluation.json", may_replace=("evaluation.json",))
    check_output_file(tmp_path / "run" / "on-other-data.json")
    check_output_file(tmp_path / "elsewhere" / "evaluation.json")


def test_unwritable_output_folder(tlapp, tmp_path, monkeypatch):
    """We run as root, where permissions never refuse: make the file system refuse the folder instead."""
    target = tmp_path / "locked" / "run"
    real_mkdir = Path.mkdir

    def refuse(self, *args, **kwargs):
        if self.absolute() == target or target in self.absolute().parents:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse)
    row = BadInput("unwritable output folder", lambda tmp: ["run", "--plugin", "medical", "--output", str(target)],
                   ("cannot write", str(target), "permission denied", "--output"))
    check_bad_input(tlapp, tmp_path, row)


class _FailingFile:
    """A real file whose writes fail as on a full disk."""

    def __init__(self, real, error: int):
        self.real, self.error = real, error

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.real.close()

    def write(self, data):
        raise OSError(self.error, os.strerror(self.error))

    def __getattr__(self, name):
        return getattr(self.real, name)


@pytest.mark.parametrize("error, fix", [(errno.ENOSPC, "free disk space"), (errno.EROFS, "read-only"),
                                        (errno.EACCES, "permissions")])
def test_failed_write_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch, error, fix):
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "old\n")
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: _FailingFile(real_fdopen(fd, *a, **k), error))
    with pytest.raises(TlappError) as raised:
        atomic_write_bytes(target, b"new\n")
    monkeypatch.undo()
    assert str(target) in raised.value.what and fix in raised.value.fix
    assert ".metrics.json." not in str(raised.value), "the message names the temporary file"
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"], "a temporary file was left behind"


def test_checkpoint_that_fills_the_disk_names_it_and_keeps_the_previous_one(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    checkpoint.save(target, {"epoch": 1})
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: _FailingFile(real_fdopen(fd, *a, **k), errno.ENOSPC))
    with pytest.raises(TlappError) as raised:
        checkpoint.save(target, {"epoch": 2})
    monkeypatch.undo()
    assert str(target) in raised.value.what and "free disk space" in raised.value.fix
    assert checkpoint.load(target)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"], "a temporary file was left behind"


def test_failed_rename_leaves_no_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "config.yaml"

    def read_only(src, dst):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dst))

    monkeypatch.setattr(os, "replace", read_only)
    with pytest.raises(TlappError, match="cannot write .*config.yaml"):
        atomic_write_text(target, "plugin: medical\n")
    assert list(tmp_path.iterdir()) == []
