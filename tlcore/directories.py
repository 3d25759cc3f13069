"""Output folders tlapp owns: made with a marker, and replaced only when recognisably its own.

``--overwrite`` deletes a folder. It must never delete one that tlapp did not write (a thesis, a
dataset, a home directory), nor one that holds the data the job is about to read. A folder counts
as tlapp's when it holds the marker written at creation, or, for folders from before the marker
existed, the files only a run (``config.yaml`` plus ``checkpoints/``) or a comparison
(``comparison.json``) leaves.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Literal
from collections.abc import Iterable

from .errors import ConfigError

MARKER = ".tlapp"
Kind = Literal["run", "comparison"]


def mark(folder: Path, kind: Kind) -> None:
    """Make ``folder`` (if needed) and record that tlapp owns it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text(json.dumps({"kind": kind}) + "\n")


def kind_of(folder: Path) -> Kind | None:
    """What tlapp wrote ``folder`` as, or None when it is not recognisably tlapp's."""
    marker = folder / MARKER
    if marker.is_file():
        try:
            kind = json.loads(marker.read_text()).get("kind")
        except (OSError, ValueError, AttributeError):
            return None
        return kind if kind in ("run", "comparison") else None
    if (folder / "config.yaml").is_file() and (folder / "checkpoints").is_dir():
        return "run"
    if (folder / "comparison.json").is_file():
        return "comparison"
    return None


def prepare_output(folder: Path, kind: Kind, *, overwrite: bool, protected: Iterable[Path | str | None] = (),
                   option: str = "--output") -> None:
    """Leave ``folder`` empty and marked as ``kind``, replacing an earlier one only when allowed.

    Refuses (ConfigError, exit 2) an existing non-empty folder without ``overwrite``, and with it a
    folder that is not tlapp's ``kind`` or that equals or contains a ``protected`` path (the input
    data, the working directory). Nothing is deleted before every check has passed.
    """
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{option} {folder} is an existing file, not a folder", where=option,
                          fix="choose a folder path for the output")
    if folder.is_dir() and any(folder.iterdir()):
        if not overwrite:
            raise ConfigError(f"{kind} directory {folder} already exists and is not empty", where=option,
                              fix="choose another --output"
                                  + (", continue it with --resume" if kind == "run" else "")
                                  + ", or replace it with --overwrite")
        found = kind_of(folder)
        if found != kind:
            what = f"a tlapp {found} directory" if found else f"not a tlapp {kind} directory"
            raise ConfigError(f"refusing to overwrite {folder}: it is {what}, and --overwrite only replaces "
                              f"an earlier {kind}", where=option,
                              fix="choose a new --output folder; delete the folder yourself if you mean to")
        resolved = folder.resolve()
        for path in protected:
            if path is None:
                continue
            inner = Path(path).resolve()
            if inner == resolved or resolved in inner.parents:
                raise ConfigError(f"refusing to overwrite {folder}: it holds {inner}, which this job needs",
                                  where=option, fix="write the output to a folder outside the input data "
                                                    "and the working directory")
        shutil.rmtree(folder)
    mark(folder, kind)
