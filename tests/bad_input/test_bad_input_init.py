"""Bad ``--init`` sources: every unusable weights file or earlier run ends in exit 2 and one message.

Never a traceback, never torch's advice to load the file unsafely, and never a run that silently
trains from random weights or adopts an architecture its task cannot train.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
import yaml

from helpers import BadInput, check_bad_input

TOY = ["run", "--plugin", "toy", "--epochs", "1", "--output", "out"]


def _file(name: str, content: bytes | str) -> Path:
    path = Path(name)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def _saved(name: str, obj) -> Path:
    torch.save(obj, name)
    return Path(name)


def _truncated(name: str) -> Path:
    torch.save({"layer.weight": torch.zeros(64, 64)}, name)
    data = Path(name).read_bytes()
    return _file(name, data[: len(data) // 2])


def _fake_run(name: str, *, plugin: str = "toy", task: str = "vectors", backbone: str = "toy-mlp",
              checkpoint: bytes | None = None) -> Path:
    """A run directory as `tlapp run` leaves it, without training: its config.yaml and maybe a checkpoint."""
    run = Path(name)
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"plugin": plugin, "task": task, "model": {
        "backbone": backbone, "init": "none"}, "train": {"epochs": 1}}))
    if checkpoint is not None:
        (run / "checkpoints" / "best.pt").write_bytes(checkpoint)
    return run


def _init(source: str, *extra: str) -> list[str]:
    return [*TOY, "--init", source, *extra]


ROWS = [
    BadInput("file: a text file", lambda tmp: _init(f"file:{_file('notes.txt', 'just some notes')}"),
             ("cannot load weights file", "notes.txt", "not a pytorch weights file")),
    BadInput("file: an empty file", lambda tmp: _init(f"file:{_file('empty.pt', b'')}"),
             ("empty.pt", "empty (0 bytes)")),
    BadInput("file: a truncated file", lambda tmp: _init(f"file:{_truncated('cut.pt')}"),
             ("cut.pt", "truncated or corrupt")),
    BadInput("file: a directory", lambda tmp: (Path("weights").mkdir(), _init("file:weights"))[1],
             ("weights", "is a directory")),
    BadInput("file: a run directory", lambda tmp: _init(f"file:{_fake_run('earlier')}"),
             ("is a directory", "run:earlier")),
    BadInput("file: a dict without tensors", lambda tmp: _init(f"file:{_saved('meta.pt', {'epoch': 3, 'lr': 0.1})}"),
             ("meta.pt", "holds no tensors", "'epoch'")),
    BadInput("file: a list, not a state dict", lambda tmp: _init(f"file:{_saved('list.pt', [torch.zeros(2)])}"),
             ("list.pt", "no state dict", "list")),
    BadInput("file: a pickled object (unsafe to load)",
             lambda tmp: _init(f"file:{_saved('evil.pt', {'x': argparse.Namespace(a=1)})}"),
             ("evil.pt", "argparse.Namespace", "could run code")),
    BadInput("file: tensors of another model",
             lambda tmp: _init(f"file:{_saved('other.pt', {'conv.weight': torch.zeros(3)})}"),
             ("copied no tensor", "conv.weight", "init_allow_empty", "--init none")),
    BadInput("run: zero-byte checkpoint", lambda tmp: _init(f"run:{_fake_run('zero', checkpoint=b'')}"),
             ("best.pt", "empty (0 bytes)", "model.init")),
    BadInput("run: corrupt checkpoint", lambda tmp: _init(f"run:{_fake_run('bad', checkpoint=b'PK' + bytes(300))}"),
             ("best.pt", "cannot load checkpoint")),
    BadInput("run: not a tlapp checkpoint", lambda tmp: _init(
        f"run:{_fake_run('foreign', checkpoint=_saved('x.pt', {'w': torch.zeros(1)}).read_bytes())}"),
             ("best.pt", "not a tlapp checkpoint")),
    BadInput("run: another task of the plugin", lambda tmp: _init(f"run:{_fake_run('other', task='images')}"),
             ("run:other", "task 'images'", "task 'vectors'", "file:")),
    BadInput("run: another plugin", lambda tmp: _init(f"run:{_fake_run('texty', plugin='text', backbone='minilm')}"),
             ("plugin 'text'", "plugin 'toy'")),
    BadInput("run: backbone overridden", lambda tmp: _init(f"run:{_fake_run('src')}", "--set", "model.backbone=big"),
             ("run:src", "'toy-mlp'", "'big'", "model.backbone")),
    BadInput("run: not a run directory", lambda tmp: _init("run:nowhere"), ("nowhere", "not a tlapp run directory")),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_init(toy_plugin, tlapp, tmp_path, row):
    check_bad_input(tlapp, tmp_path, row)
    assert not Path("out/checkpoints/last.pt").exists()  # refused before any training


def test_text_run_into_medical_run_is_refused_before_loading(tlapp, tmp_path, monkeypatch):
    """The issue's case: a text run's MiniLM adopted by a medical run died mid-run with IndexError."""
    monkeypatch.setenv("TLAPP_PLUGINS", "medical")  # the source run's plugin need not even be loaded
    row = BadInput("run: text into medical", lambda tmp: [
        "run", "--plugin", "medical", "--epochs", "1", "--output", "out",
        "--init", f"run:{_fake_run('textrun', plugin='text', task='classification', backbone='minilm')}"],
        ("run:textrun", "plugin 'text'", "plugin 'medical'", "file:"))
    check_bad_input(tlapp, tmp_path, row)
    assert not Path("out").exists()
