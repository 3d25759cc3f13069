"""Paths named inside data files (manifests, annotation files) stay inside the dataset they describe.

A manifest that says ``../../home/user/.ssh/id_rsa`` or ``/etc/passwd``, or a symlink that leads out of the
dataset, would make a shared dataset read files its author never meant to hand over. Plugins resolve every such
reference through :func:`inside_root`; a user who really keeps images elsewhere says so with the plugin's
``data.allow_outside_root`` option.
"""

from __future__ import annotations

from pathlib import Path

from .errors import DataError


def inside_root(root: Path, reference: str | Path, *, where: str, allow_outside: bool = False,
                option: str = "data.allow_outside_root") -> Path:
    """``reference`` (relative to ``root``, or absolute) as a path, refused with a :class:`DataError` when it,
    or the file a symlink on its way points to, lies outside ``root``. ``where`` names the line or record that
    gave the reference; ``option`` the setting that lifts the check. Existence is not checked here."""
    path = Path(reference)
    joined = path if path.is_absolute() else Path(root) / path
    if allow_outside:
        return joined
    base = Path(root).resolve()
    target = joined.resolve()
    if target != base and base not in target.parents:
        how = "is absolute" if path.is_absolute() else ("leads outside through a symlink"
                                                        if ".." not in path.parts else "climbs out with '..'")
        raise DataError(f"path {str(reference)!r} {how}: it points outside the dataset folder {base}",
                        where=where, fix=f"keep the files inside {base} and name them relative to it, or allow "
                                         f"this explicitly with --set {option}=true")
    return joined
