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
    _check_parents(folder, option)
    if folder.is_dir() and any(folder.iterdir()):
        found = kind_of(folder)
        if not overwrite:
            # Suggest only what would then succeed: a hint that fails in turn sends the user in a circle.
            fixes = ["choose another --output"]
            if found == "run" and (folder / "checkpoints" / "last.pt").is_file():
                fixes.append("continue it with --resume")
            if found == kind:
                fixes.append("replace it with --overwrite")
            raise ConfigError(f"{kind} directory {folder} already exists and is not empty", where=option,
                              fix=", ".join(fixes[:-1]) + (", or " if len(fixes) > 1 else "") + fixes[-1])
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
        try:
            shutil.rmtree(folder)
        except OSError as exc:
            raise _unwritable(folder, exc, option) from None
    try:
        mark(folder, kind)
    except OSError as exc:
        raise _unwritable(folder, exc, option) from None


def _check_parents(path: Path, option: str) -> None:
    """Refuse a path under a file (``results.txt/run``): no folder could ever be made there."""
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{option} {path} is inside {parent}, which is a file, not a folder",
                                  where=option, fix="choose a path whose parent folders are folders")
            return


def _unwritable(folder: Path, exc: OSError, option: str) -> ConfigError:
    # Tried rather than predicted with os.access: root, ACLs, read-only mounts and quotas all decide.
    return ConfigError(f"cannot write to {option} {folder}: {exc.strerror or exc}", where=option,
                       fix="choose a folder you may write to (check its permissions, and that the disk is not "
                           "read-only or full)")


# What a run directory holds that only training writes; ``tlapp evaluate`` must never replace one.
RUN_RECORDS = ("config.yaml", "metrics.json", "train.log", MARKER, "checkpoints")


def check_output_file(path: Path, option: str = "--output", *, may_replace: Iterable[str] = ()) -> None:
    """Refuse, before any work, an output file that cannot be written or would destroy a run's records.

    A folder, a path under a file, and any path inside a tlapp run or comparison folder that is one of its
    records (``RUN_RECORDS``, anything under ``checkpoints/``) or another existing file there are refused;
    names in ``may_replace`` (a command's own earlier output, e.g. ``evaluation.json``) may be replaced.
    """
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a folder, not a file", where=option,
                          fix="give a file path, e.g. evaluation.json")
    _check_parents(path, option)
    resolved = path.resolve()
    for folder in resolved.parents:
        kind = kind_of(folder)
        if kind is None:
            continue
        inside = resolved.relative_to(folder).parts
        record = inside[0] in RUN_RECORDS or (kind == "comparison" and inside[0].startswith("comparison."))
        if record or (resolved.exists() and resolved.name not in may_replace):
            raise ConfigError(f"refusing to write {option} {path}: {'/'.join(inside)} belongs to the tlapp {kind} "
                              f"directory {folder}", where=option,
                              fix="choose a new file name, or a path outside that directory")
