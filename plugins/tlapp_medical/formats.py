"""The dataset formats ``dicom-folders`` and ``dicom-manifest``: find, label and split a DICOM data set,
reading headers only (pixels are decoded by :mod:`tlapp_medical.pixels`).

Three steps, each usable alone:

1. **Find** -- :func:`find_dicom_files` lists *candidate* files. The rule is
   simple and predictable, because DICOM files often have no extension:

   every regular file under the folder, recursively, **except**
   * names starting with ``.`` (and everything inside folders that do),
     and names ending with ``~`` (editor backups);
   * known sidecars, by extension (case-insensitive): ``.md .txt .rst .csv
     .tsv .json .yaml .yml .xml .html .htm .pdf .log .ini .cfg .toml .py .sh``;
   * ``DICOMDIR`` (a media directory, not an image), ``Thumbs.db``,
     ``desktop.ini``.

   A file that passes the rule is *not* checked here: a corrupt or non-DICOM
   file inside a class folder stays in the list, so that the pixel check
   downstream reports it instead of it silently vanishing.
   :func:`looks_like_dicom` is the cheap test (``DICM`` at offset 128, or a
   header that pydicom can parse) for callers that want one.

2. **Label** -- :func:`index_folders` (one sub-folder per class, optionally
   under ``train/``, ``val/``, ``test/``) or :func:`read_manifest` (a CSV
   ``path,label[,patient_id][,split]``, multi-label with a delimiter; or, for
   multi-task learning, several label columns named by the caller, each a
   task, an empty cell a missing label). Both return :class:`Sample` objects
   sorted by path.

3. **Split** -- :func:`split_by_patient`: explicit splits are honoured, the
   rest is split by patient (never by image), deterministically for a seed,
   roughly stratified by class (of the first task, for several label
   columns), every carved split given each class that has
   two or more patients to spare; k-fold by patient on request. It returns
   :class:`Splits`: the files of each split, where each split came from, and
   the classes a carved split could not be given.

Patient identity. ``Sample.patient_key`` is the manifest's ``patient_id`` or
the file's DICOM ``PatientID`` (read with ``stop_before_pixels``). A file with
no usable PatientID (missing, empty, or a header that cannot be read) is its
own group: its key is ``"file:" + path``. Such files can never leak across
splits, but files of one real patient without PatientID are not grouped --
give a ``patient_id`` column in a manifest for them. Keys are raw identifiers
and stay in memory: they are kept out of ``repr(Sample)`` and out of every
error message here; anything written to outputs must go through
:func:`patient_hash` (a keyed, salted BLAKE2b digest).
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import logging
import os
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable, Collection, Iterable, Sequence

import pydicom
from pydicom.errors import InvalidDicomError

from tlcore import ConfigError, DataError, inside_root, missing_class_warnings, take_covering

__all__ = [
    "DEFAULT_TEST_FRACTION",
    "MANIFEST_COLUMNS",
    "SIDECAR_SUFFIXES",
    "SPLITS",
    "SPLIT_ALIASES",
    "Sample",
    "Splits",
    "find_dicom_files",
    "index_dataset",
    "index_folders",
    "looks_like_dicom",
    "patient_hash",
    "patient_key_for",
    "read_manifest",
    "split_by_patient",
    "split_counts",
]

SPLITS = ("train", "val", "test")
# Accepted spellings of split names (folder names and the manifest's split column), lower-cased.
SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}
SIDECAR_SUFFIXES = frozenset({
    ".md", ".txt", ".rst", ".csv", ".tsv", ".json", ".yaml", ".yml", ".xml", ".html", ".htm",
    ".pdf", ".log", ".ini", ".cfg", ".toml", ".py", ".sh",
})
SKIPPED_NAMES = frozenset({"dicomdir", "thumbs.db", "desktop.ini"})
MANIFEST_COLUMNS = ("path", "label", "patient_id", "split")
REQUIRED_COLUMNS = ("path", "label")
# What a manifest with label columns (one per task) gives besides them; ``label`` is then a column like any other.
TASK_MANIFEST_COLUMNS = ("path", "patient_id", "split")
FILE_KEY_PREFIX = "file:"
# The test share carved when test_fraction is left unset and the data gives no val or test split of its own.
DEFAULT_TEST_FRACTION = 0.2

Warn = Callable[[str], None]  # receives one message per data problem that does not stop indexing
_log = logging.getLogger("tlapp.medical")  # under the "tlapp" logger, so into run logs

_HASH_PERSON = b"tlapp-patient-v1"  # BLAKE2b personalisation: domain separation for patient keys
_MAX_EXAMPLES = 5


@dataclass(frozen=True)
class Sample:
    """One labelled file.

    ``labels`` is a tuple (one element for single-label data). ``patient_key``
    groups files of one patient (see the module docstring: manifest
    ``patient_id``, else DICOM ``PatientID``, else ``"file:" + path``); it is a
    raw identifier, hidden from ``repr`` -- hash it with :func:`patient_hash`
    before it reaches any output. ``split`` is ``"train"``, ``"val"``,
    ``"test"`` when the data set fixes it, else ``None``.

    ``tasks`` holds, for a manifest read with label columns (multi-task), each
    task's labels by column, ``None`` where the cell is empty (the file has no
    label for that task); ``labels`` is then the first task's, ``()`` when
    missing, so that splitting stratifies by the first task. Empty otherwise.
    """

    path: Path
    labels: tuple[str, ...]
    patient_key: str = field(repr=False)
    split: str | None = None
    tasks: dict[str, tuple[str, ...] | None] = field(default_factory=dict, hash=False)


# ----------------------------------------------------------------------------------------------
# patient keys
# ----------------------------------------------------------------------------------------------

def patient_hash(patient_id: str, salt: str) -> str:
    """Salted, keyed hash of a patient identifier: 16 lower-case hex characters.

    BLAKE2b keyed with ``salt`` (a salt longer than 64 bytes is first hashed
    down), so without the salt the digest cannot be recomputed from a guessed
    ID. Use this for every per-patient key that reaches logs, files or
    reports; the same (id, salt) always gives the same digest.
    """
    if not isinstance(salt, str) or not salt:
        raise ConfigError("the patient salt must be a non-empty string",
                          fix="set a salt (e.g. data.patient_salt) or leave it null for a random one")
    key = salt.encode("utf-8")
    if len(key) > hashlib.blake2b.MAX_KEY_SIZE:
        key = hashlib.blake2b(key, person=_HASH_PERSON).digest()
    return hashlib.blake2b(str(patient_id).encode("utf-8"), digest_size=8, key=key,
                           person=_HASH_PERSON).hexdigest()


def _file_key(path: Path) -> str:
    return FILE_KEY_PREFIX + path.as_posix()


def patient_key_for(path: Path) -> str:
    """The DICOM ``PatientID`` of ``path``, or ``"file:" + path`` when it has none.

    Reads the header only (``stop_before_pixels``, only the PatientID tag).
    Never raises for a bad file: an unreadable header also falls back to the
    path, and the pixel check downstream reports the file.
    """
    path = Path(path)
    try:
        ds = _read_header(path, specific_tags=["PatientID"])
    except Exception:  # noqa: BLE001 - any unreadable header: the file is its own group
        return _file_key(path)
    value = ds.get("PatientID", None) if ds is not None else None
    text = str(value).strip() if value is not None else ""
    return text if text else _file_key(path)


# ----------------------------------------------------------------------------------------------
# finding files
# ----------------------------------------------------------------------------------------------

def _is_skipped(name: str) -> bool:
    lower = name.lower()
    return (name.startswith(".") or name.endswith("~") or lower in SKIPPED_NAMES
            or os.path.splitext(lower)[1] in SIDECAR_SUFFIXES)


def find_dicom_files(root: str | os.PathLike[str], *, warn: Warn | None = None) -> list[Path]:
    """Candidate DICOM files under ``root``, recursively, sorted by relative path.

    Extensions are optional. Skipped: dot-files and dot-folders, names ending
    in ``~``, known sidecars (:data:`SIDECAR_SUFFIXES`: ``.md .txt .csv .json
    .yaml`` ...), ``DICOMDIR``, ``Thumbs.db``, ``desktop.ini``. Everything else
    is returned *without* opening it, so a corrupt file is still listed and
    can be reported by the pixel check. Symlinked folders are not followed;
    symlinked files are listed. ``root`` may also be a single file.
    Broken symlinks, symlinked folders and unreadable folders are skipped
    with a message to ``warn`` (default: the ``tlapp.medical`` logger).
    """
    warn = warn or _log.warning
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise DataError(f"folder not found: {root}", where=str(root),
                        fix="check the data path (a folder of DICOM files, or a CSV manifest)")
    found: list[tuple[tuple[str, ...], Path]] = []
    broken: list[Path] = []
    unfollowed: list[Path] = []

    def unreadable(exc: OSError) -> None:
        warn(f"cannot read folder {exc.filename}: {exc.strerror}; its files are left out")

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=False):
        base = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        unfollowed.extend(base / d for d in dirnames if (base / d).is_symlink())
        for name in filenames:
            if _is_skipped(name):
                continue
            path = base / name
            if path.is_file():
                found.append((path.relative_to(root).parts, path))
            elif path.is_symlink():
                broken.append(path)  # its target is missing, or a symlink loop
    _warn_broken(broken, warn)
    if unfollowed:
        warn(f"{len(unfollowed)} symlinked folder(s) not followed: {_examples(sorted(unfollowed))}")
    found.sort(key=lambda item: item[0])
    return [path for _, path in found]


def _has_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _read_header(path: Path, specific_tags: list[str] | None = None):
    """The header of ``path`` without pixels; a preamble-less file is read with force.

    Raises for unreadable files. For a file without the ``DICM`` preamble the
    parse is forced and then accepted only if it yields a plausible data set
    (a SOP Class UID, Modality or Patient ID element); otherwise
    :class:`InvalidDicomError`.
    """
    # Header oddities (a bad UID in a truncated file, nonsense from a forced parse of a non-DICOM
    # file) would only warn here; the pixel check reports unusable files properly.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if _has_preamble(path):
            return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=specific_tags)
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True, defer_size="4 KB")
    if not any(tag in ds for tag in (0x00080016, 0x00080060, 0x00100020)):
        raise InvalidDicomError(f"{path} is not a DICOM file")
    if specific_tags is not None:
        keep = pydicom.Dataset()
        for keyword in specific_tags:
            if keyword in ds:
                keep[keyword] = ds[keyword]
        return keep
    return ds


def looks_like_dicom(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` has ``DICM`` at offset 128, or a header pydicom can parse.

    A cheap, header-only test (no pixel decoding): a file that passes may
    still have broken pixel data.
    """
    path = Path(path)
    if _has_preamble(path):
        return True
    try:
        _read_header(path)
    except Exception:  # noqa: BLE001 - anything unparsable is not DICOM
        return False
    return True


# ----------------------------------------------------------------------------------------------
# labelling: folders
# ----------------------------------------------------------------------------------------------

def _examples(paths: Iterable[object]) -> str:
    items = [str(p) for p in paths]
    text = ", ".join(items[:_MAX_EXAMPLES])
    return text + (f" (and {len(items) - _MAX_EXAMPLES} more)" if len(items) > _MAX_EXAMPLES else "")


def _warn_broken(links: list[Path], warn: Warn) -> None:
    if links:
        warn(f"{len(links)} broken symlink(s) skipped, their targets do not exist: {_examples(sorted(links))}")


def _visible_children(folder: Path, warn: Warn) -> tuple[list[Path], list[Path]]:
    dirs, files, broken = [], [], []
    for child in sorted(folder.iterdir(), key=lambda p: p.name):
        if child.name.startswith("."):
            continue
        if child.is_dir():
            dirs.append(child)
        elif child.is_file():
            if not _is_skipped(child.name):
                files.append(child)
        elif child.is_symlink():
            broken.append(child)
    _warn_broken(broken, warn)
    return dirs, files


def _class_samples(folder: Path, split: str | None,
                   warn: Warn) -> tuple[list[tuple[Path, str, str | None]], list[Path]]:
    """(path, label, split) for every candidate file under ``folder/<class>/``; stray files."""
    class_dirs, stray = _visible_children(folder, warn)
    rows = []
    for class_dir in class_dirs:
        files = find_dicom_files(class_dir, warn=warn)
        if not files:
            warn(f"class folder {class_dir} holds no files: class {class_dir.name!r} is left out")
        rows.extend((path, class_dir.name, split) for path in files)
    return rows, stray


def index_folders(root: str | os.PathLike[str], *, allow_outside_root: bool = False,
                  warn: Warn | None = None) -> list[Sample]:
    """Label files by folder: ``root/<class>/...`` or ``root/<split>/<class>/...``.

    * Each visible sub-folder of ``root`` is a class; files may be nested at
      any depth below it (``root/nodule/patient7/series2/IM0001``).
    * If the top-level folders are split names (``train``, ``val``/``valid``/
      ``validation``, ``test``; case-insensitive), each holds class folders
      and that split is fixed for its files. Mixing split folders with class
      folders at the top level is an error.
    * Files are found with :func:`find_dicom_files`, so a broken file in a
      class folder is kept (and reported later by the pixel check).
    * A DICOM file directly in ``root`` (or directly in a split folder) has no
      class: :class:`DataError`. Non-DICOM files there (a LICENSE, say) are
      ignored.
    * Patient keys come from each file's PatientID (see :class:`Sample`).
    * A file (or class folder) that is a symlink leading outside ``root`` is a
      :class:`DataError` unless ``allow_outside_root``.
    * Empty class folders and broken symlinks are skipped with a message to
      ``warn`` (default: the ``tlapp.medical`` logger).
    """
    warn = warn or _log.warning
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}", where=str(root),
                        fix="point data.path at a folder with one sub-folder per class")
    top_dirs, top_files = _visible_children(root, warn)
    split_dirs = {d: SPLIT_ALIASES[d.name.lower()] for d in top_dirs if d.name.lower() in SPLIT_ALIASES}
    rows: list[tuple[Path, str, str | None]] = []
    stray: list[Path] = list(top_files)
    if split_dirs:
        others = [d for d in top_dirs if d not in split_dirs]
        if others:
            raise DataError(
                "the dataset folder mixes split folders ("
                + ", ".join(sorted(d.name for d in split_dirs)) + ") with other folders ("
                + ", ".join(d.name for d in others) + ")",
                where=str(root),
                fix="put every class folder inside train/, val/ or test/, or use no split folders at all",
            )
        seen: dict[str, Path] = {}
        for folder, split in split_dirs.items():
            if split in seen:
                raise DataError(f"two folders name the same split {split!r}: {seen[split].name} and {folder.name}",
                                where=str(root), fix="keep one folder per split")
            seen[split] = folder
            found, loose = _class_samples(folder, split, warn)
            rows.extend(found)
            stray.extend(loose)
    else:
        rows, _ = _class_samples(root, None, warn)
    stray_dicom = [p for p in stray if looks_like_dicom(p)]
    if stray_dicom:
        raise DataError(
            f"{len(stray_dicom)} DICOM file(s) are not inside a class folder: {_examples(stray_dicom)}",
            where=str(root),
            fix="move each file into a sub-folder named after its class (root/<class>/file)",
        )
    if not rows:
        raise DataError(
            "no files found in class folders", where=str(root),
            fix="use one sub-folder per class (root/<class>/...), optionally under train/ val/ test/",
        )
    for path, _, _ in rows:
        inside_root(root, path.relative_to(root), where=str(path), allow_outside=allow_outside_root)
    rows.sort(key=lambda r: r[0].relative_to(root).parts)
    return [Sample(path, (label,), patient_key_for(path), split) for path, label, split in rows]


# ----------------------------------------------------------------------------------------------
# labelling: CSV manifest
# ----------------------------------------------------------------------------------------------

def _split_labels(raw: str, delimiter: str | None) -> tuple[str, ...]:
    parts = raw.split(delimiter) if delimiter else [raw]
    labels: list[str] = []
    for part in (p.strip() for p in parts):
        if part and part not in labels:
            labels.append(part)
    return tuple(sorted(labels))


def read_manifest(path: str | os.PathLike[str], *, delimiter: str | None = ";",
                  allow_outside_root: bool = False, label_columns: Sequence[str] | None = None,
                  multilabel: Collection[str] = ()) -> list[Sample]:
    """Samples from a CSV manifest with columns ``path,label[,patient_id][,split]``.

    * Header row required; column names are case-insensitive, any order;
      ``path`` and ``label`` are required, unknown or repeated columns are errors.
    * ``path`` is relative to the CSV's folder (absolute paths also work). A
      path that leads outside that folder (``..``, an absolute path elsewhere,
      a symlink out) is a :class:`DataError` unless ``allow_outside_root``.
    * ``label``: one label, or several separated by ``delimiter`` (default
      ``;``) for multi-label data; ``None`` disables splitting. Labels are
      stripped, de-duplicated and sorted.
    * ``patient_id`` (optional, may be blank per row): groups files by
      patient; blank or absent -> the file's DICOM PatientID, else its path.
    * ``split`` (optional, may be blank): ``train``, ``val`` (also ``valid``,
      ``validation``), ``test``; blank -> assigned by :func:`split_by_patient`.
    * Blank lines are skipped. Each bad row (missing file, empty path or
      label, unknown split, wrong number of fields, a file listed twice) is a
      :class:`DataError` whose ``where`` is ``manifest.csv:LINE``.

    With ``label_columns`` (multi-task: one task per column) those columns
    hold the labels instead of ``label``, which becomes a column like any
    other; each must be in the header (case-insensitive; a misspelt one is a
    :class:`DataError` naming the manifest, the columns it has and the one
    probably meant). Columns that are not named are left alone (other tasks,
    notes), unless their name is close to ``path``, ``patient_id`` or
    ``split``. An empty cell is a missing label (``Sample.tasks``); a cell of
    a task not in ``multilabel`` must hold one label.
    """
    csv_path = Path(path)
    if not csv_path.is_file():
        raise DataError(f"manifest not found: {csv_path}", where=str(csv_path),
                        fix="give the path of a CSV file with columns path,label[,patient_id][,split]")
    if delimiter is not None and (not isinstance(delimiter, str) or not delimiter or delimiter == ","):
        raise ConfigError(f"label delimiter must be a non-empty string other than ',', got {delimiter!r}",
                          fix="use ';' or '|' to separate several labels of one file")
    base = csv_path.parent
    samples: list[Sample] = []
    seen: dict[Path, int] = {}
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            columns: dict[str, int] | None = None
            start = 1
            for row in reader:
                line, start = start, reader.line_num + 1
                where = f"{csv_path}:{line}"
                if not any(cell.strip() for cell in row):
                    continue
                if columns is None:
                    columns = (_task_columns(row, where, label_columns) if label_columns
                               else _manifest_columns(row, where))
                    width = len(row)  # with label columns, not every column is read
                    continue
                if len(row) != width:
                    raise DataError(f"row has {len(row)} fields, the header has {width}", where=where,
                                    fix="quote values that contain commas; one file per row")
                cell = {name: row[i].strip() for name, i in columns.items()}
                sample = _manifest_row(cell, base, delimiter, where, line, seen, allow_outside_root,
                                       label_columns)
                if label_columns:
                    sample = _with_tasks(sample, cell, label_columns, multilabel, delimiter, where)
                samples.append(sample)
    except UnicodeDecodeError as exc:
        raise DataError(f"manifest is not UTF-8 text: {exc.reason}", where=str(csv_path),
                        fix="save the CSV as UTF-8") from None
    except csv.Error as exc:
        raise DataError(f"malformed CSV: {exc}", where=f"{csv_path}:{reader.line_num}",
                        fix="check quoting on that line") from None
    if columns is None:
        raise DataError("manifest is empty", where=str(csv_path),
                        fix="add a header row path,label[,patient_id][,split] and one row per file")
    if not samples:
        raise DataError("manifest has a header but no rows", where=str(csv_path), fix="add one row per file")
    return samples


def _manifest_columns(header: list[str], where: str) -> dict[str, int]:
    columns: dict[str, int] = {}
    for i, raw in enumerate(header):
        name = raw.strip().lower()
        if name not in MANIFEST_COLUMNS:
            close = difflib.get_close_matches(name, MANIFEST_COLUMNS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            tasks = "" if close else f"; or, for a task per column, --set 'data.label_columns=[{raw.strip()}, ...]'"
            raise DataError(f"unknown manifest column {raw.strip()!r}", where=where,
                            fix=f"{hint}columns are {', '.join(MANIFEST_COLUMNS)} (path and label required){tasks}")
        if name in columns:
            raise DataError(f"manifest column {name!r} appears twice", where=where, fix="keep one")
        columns[name] = i
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DataError(f"manifest header lacks column(s) {', '.join(missing)}", where=where,
                        fix="the first row must name the columns: path,label[,patient_id][,split]")
    return columns


def _task_columns(header: list[str], where: str, label_columns: Sequence[str]) -> dict[str, int]:
    """The header of a manifest with label columns: ``path`` (required), ``patient_id``, ``split`` and each label
    column, by name (a label column under its name in ``label_columns``), to their positions."""
    wanted = {name.strip().lower(): name for name in label_columns}
    present = [raw.strip() for raw in header]
    columns: dict[str, int] = {}
    for i, raw in enumerate(present):
        lower = raw.lower()
        name = wanted.get(lower, lower if lower in TASK_MANIFEST_COLUMNS else None)
        if name is None:
            close = difflib.get_close_matches(lower, TASK_MANIFEST_COLUMNS, n=1, cutoff=0.8)
            if close:  # probably a misspelt patient_id or split: ignoring it would silently split otherwise
                raise DataError(f"unknown manifest column {raw!r}", where=where,
                                fix=f"did you mean {close[0]!r}? or name it in data.label_columns")
            continue  # another task's column, or notes: not read
        if name in columns:
            raise DataError(f"manifest column {raw!r} appears twice", where=where, fix="keep one")
        columns[name] = i
    if "path" not in columns:
        raise DataError("manifest header lacks the column path", where=where,
                        fix="the first row must name the columns: path, the label columns[, patient_id][, split]")
    for name in label_columns:
        if name not in columns:
            names = [c for c in present if c]
            lowered = {c.lower(): c for c in names}
            close = difflib.get_close_matches(name.strip().lower(), list(lowered), n=1)
            hint = f"did you mean {lowered[close[0]]!r}? " if close else ""
            raise DataError(f"the manifest has no label column {name!r} (data.label_columns)", where=where,
                            fix=f"{hint}its columns: {', '.join(names)}; name those in data.label_columns")
    return columns


def _with_tasks(sample: Sample, cell: dict[str, str], label_columns: Sequence[str], multilabel: Collection[str],
                delimiter: str | None, where: str) -> Sample:
    """The sample with its labels per task (None for an empty cell), its ``labels`` the first task's."""
    tasks: dict[str, tuple[str, ...] | None] = {}
    for name in label_columns:
        labels = _split_labels(cell[name], delimiter)
        if len(labels) > 1 and name not in multilabel:
            raise DataError(f"{len(labels)} labels ({', '.join(labels)}) in column {name!r} for {cell['path']}, "
                            f"and task {name!r} is single-label", where=where,
                            fix=f"give one label, or set model.heads.{name}.multilabel=true")
        tasks[name] = labels or None
    return Sample(sample.path, tasks[label_columns[0]] or (), sample.patient_key, sample.split, tasks)


def _manifest_row(cell: dict[str, str], base: Path, delimiter: str | None, where: str, line: int,
                  seen: dict[Path, int], allow_outside_root: bool,
                  label_columns: Sequence[str] | None = None) -> Sample:
    raw_path = cell["path"]
    if not raw_path:
        raise DataError("empty path", where=where, fix="give the file's path relative to the CSV's folder")
    if "\x00" in raw_path:
        raise DataError(f"path {raw_path!r} contains a NUL character", where=where,
                        fix="give the file's path relative to the CSV's folder")
    try:
        # Checked before existence, so that a manifest cannot probe which files exist elsewhere.
        file = inside_root(base, raw_path, where=where, allow_outside=allow_outside_root)
        exists, is_file = file.exists(), file.is_file()
        resolved = file.resolve()
    except (OSError, RuntimeError) as exc:  # a name too long for the file system, a symlink loop
        raise DataError(f"cannot use path {raw_path!r}: {exc}", where=where,
                        fix="give the path of an existing file, relative to the manifest's folder") from None
    if not exists:
        raise DataError(f"file not found: {raw_path}", where=where,
                        fix=f"paths are relative to the manifest's folder ({base})")
    if not is_file:
        raise DataError(f"not a file: {raw_path}", where=where, fix="list files, one per row")
    if resolved in seen:
        raise DataError(f"file listed twice: {raw_path} (first on line {seen[resolved]})", where=where,
                        fix="list each file once; give several labels with the label delimiter")
    seen[resolved] = line
    labels = () if label_columns else _split_labels(cell["label"], delimiter)  # label columns: _with_tasks
    if not labels and not label_columns:
        raise DataError(f"empty label for {raw_path}", where=where, fix="give every file at least one label")
    raw_split = cell.get("split", "")
    split = None
    if raw_split:
        split = SPLIT_ALIASES.get(raw_split.lower())
        if split is None:
            raise DataError(f"unknown split {raw_split!r}", where=where,
                            fix="use train, val or test, or leave it blank to split by patient")
    patient = cell.get("patient_id", "")
    return Sample(file, labels, patient if patient else patient_key_for(file), split)


def index_dataset(path: str | os.PathLike[str], *, delimiter: str | None = ";", allow_outside_root: bool = False,
                  warn: Warn | None = None) -> list[Sample]:
    """:func:`read_manifest` for a ``.csv`` file, :func:`index_folders` for a folder."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".csv":
        return read_manifest(path, delimiter=delimiter, allow_outside_root=allow_outside_root)
    return index_folders(path, allow_outside_root=allow_outside_root, warn=warn)


# ----------------------------------------------------------------------------------------------
# splitting
# ----------------------------------------------------------------------------------------------

def _unit(seed: int, key: str, purpose: str) -> float:
    """A deterministic uniform number in [0, 1) for (seed, key, purpose)."""
    digest = hashlib.blake2b(f"{seed}\x00{purpose}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def _stratified_order(patients: Sequence[str], strata: dict[str, tuple[str, ...]], seed: int,
                      purpose: str) -> list[str]:
    """Patients in a seeded order in which every prefix is roughly stratified by class.

    Within a stratum (the labels a patient has, and its dominant one), patients are shuffled
    by a hash of (seed, key); the r-th of m gets position (r + u) / m with a
    hashed jitter u, and all strata are merged by position. Taking the first
    n patients of the result then draws from each stratum in proportion.
    """
    groups: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for key in patients:
        groups[strata[key]].append(key)
    positioned = []
    for members in groups.values():
        members.sort(key=lambda k: (_unit(seed, k, purpose + ":rank"), k))
        m = len(members)
        positioned.extend(((r + _unit(seed, k, purpose + ":jitter")) / m, k) for r, k in enumerate(members))
    positioned.sort()
    return [k for _, k in positioned]


def _deal_folds(patients: Sequence[str], strata: dict[str, tuple[str, ...]], seed: int,
                folds: int) -> dict[str, int]:
    """The fold of each patient: each stratum is dealt round-robin, so one of m patients reaches min(m, folds) folds.

    Dealing the merged stratified order instead would send two patients of a stratum to one fold whenever
    their positions lie a multiple of ``folds`` apart. Strata are dealt one after another (rarest first) with
    one running count from a seeded start, so fold sizes differ by at most one.
    """
    groups: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for key in patients:
        groups[strata[key]].append(key)
    fold_of: dict[str, int] = {}
    position = int(_unit(seed, "start", "folds") * folds)
    for stratum in sorted(groups, key=lambda s: (len(groups[s]), s)):
        for key in sorted(groups[stratum], key=lambda k: (_unit(seed, k, "folds:rank"), k)):
            fold_of[key] = position % folds
            position += 1
    return fold_of


def _count(fraction: float, n: int) -> int:
    if fraction <= 0:
        return 0
    return max(1, int(fraction * n + 0.5))


def _too_few(what: str, n: int, need: int, samples: Sequence[Sample]) -> DataError:
    distinct = len({s.patient_key for s in samples})
    hint = ""
    if distinct <= 2 and len(samples) > 10:
        hint = ("; if many files share one PatientID (e.g. 'ANONYMOUS' after de-identification), "
                "give a patient_id column in a CSV manifest")
    return DataError(
        f"too few patients to {what}: {n} patient(s) available, at least {need} needed",
        fix="add patients, lower val_fraction/test_fraction (0 disables a split), use fewer folds, "
            "or give explicit train/val/test splits" + hint,
    )


class Splits(dict[str, list[Sample]]):
    """What :func:`split_by_patient` returns: ``{"train": [...], "val": [...], "test": [...]}``, plus how
    each split came about.

    ``sources`` says where each split's patients come from (metrics.json keeps it as
    ``data.split_sources``):

    * ``explicit``: the data's own split (split folders or the manifest's ``split`` column);
    * ``carved``: drawn by patient from the training pool (``val``, ``test``);
    * ``folds``: ``val`` is a k-fold validation fold;
    * ``rest``: ``train`` is what the pool kept after carving (or holds patients the data left unsplit);
    * ``none``: the split is empty (a fraction of 0, or no test carved beside an explicit val split).

    ``missed`` maps a carved split to the classes it could not be given although they had at least two
    patients in the pool it was carved from; :attr:`warnings` words them, one per class and split.
    """

    def __init__(self, splits: dict[str, list[Sample]], sources: dict[str, str],
                 missed: dict[str, list[str]] | None = None):
        super().__init__(splits)
        self.sources = dict(sources)
        self.missed = {split: sorted(classes) for split, classes in (missed or {}).items() if classes}

    @property
    def warnings(self) -> list[str]:
        return [w for split in SPLITS for w in missing_class_warnings(split, self.missed.get(split, ()), "patient")]


def split_by_patient(samples: Sequence[Sample], val_fraction: float = 0.2, test_fraction: float | None = None,
                     seed: int = 0, folds: int | None = None, fold: int | None = None) -> Splits:
    """Split samples into ``train``/``val``/``test`` so that no patient is in two splits.

    Rules, in order:

    1. Explicit splits (``Sample.split``) are kept. A patient whose files sit
       in two different explicit splits is a :class:`DataError` (leakage). A
       file without a split whose patient has an explicit split joins it.
    2. A split that has no explicit files is *carved* by patient from the
       pool of remaining patients plus the explicit ``train`` patients:
       ``test`` first (``test_fraction`` of the pool's patients), then ``val``
       (``val_fraction`` of the same pool count); the rest is ``train``. A fraction of 0 leaves that
       split empty; a fraction > 0 gives it at least one patient. Counts are
       of patients, rounded half up. ``test_fraction=None`` means
       :data:`DEFAULT_TEST_FRACTION` when the data gives neither a ``val`` nor
       a ``test`` split, else no test split: data that brings its own
       validation split but no test split keeps its training patients
       (final metrics are then on ``val``), unless a test fraction is asked for.
    3. Each carved split takes, besides its seeded share, one patient of every
       class that has at least two patients in the pool it is carved from,
       swapped in for a patient whose classes it holds anyway, and never the
       last patient of a class in the pool (:func:`tlcore.take_covering`). A
       class it still cannot be given is listed in ``Splits.missed``.
    4. k-fold (``folds=K, fold=i``, 0 <= i < K): ``test`` as above (explicit,
       or carved -- the same patients for every fold); the other pool
       patients are dealt into K folds, each stratum round-robin, fold ``i``
       is ``val``, the rest ``train``. Over i = 0..K-1 every pool patient is
       in ``val`` exactly once, so a fold is not rebalanced: a class with two
       or more pool patients but none in fold ``i`` (fewer patients than
       folds, say) is listed in ``Splits.missed``.
       ``val_fraction`` is ignored; an explicit ``val`` is an error.

    The order of patients is a hash of (seed, patient key), roughly
    stratified by each patient's label set and dominant label, so the result is deterministic for
    a seed and adding a patient moves few others. Samples keep their input
    order within a split. Too few patients for the request: :class:`DataError`.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if value is not None and not 0 <= value < 1:
            raise ConfigError(f"{name} must be in [0, 1), got {value}")
    if val_fraction + (DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction) >= 1:
        unset = f" (an unset test_fraction counts as {DEFAULT_TEST_FRACTION:g})" if test_fraction is None else ""
        raise ConfigError(f"val_fraction + test_fraction must be below 1 to leave patients for training{unset}",
                          fix="lower val_fraction, or set test_fraction explicitly (0 for no test split)")
    if folds is None:
        if fold not in (None, 0):
            raise ConfigError(f"fold={fold} given without folds", fix="set folds (the number of folds) as well")
    else:
        if folds < 2:
            raise ConfigError(f"folds must be at least 2, got {folds}")
        fold = 0 if fold is None else fold
        if not 0 <= fold < folds:
            raise ConfigError(f"fold must be in 0..{folds - 1}, got {fold}")
    if not samples:
        raise DataError("no samples to split", fix="check that the dataset folder or manifest lists files")

    # 1. explicit splits, per patient
    patient_splits: dict[str, set[str]] = defaultdict(set)
    label_counts: dict[str, Counter[str]] = defaultdict(Counter)
    for s in samples:
        if s.split is not None:
            if s.split not in SPLITS:
                raise DataError(f"unknown split {s.split!r}", where=str(s.path), fix="use train, val or test")
            patient_splits[s.patient_key].add(s.split)
        label_counts[s.patient_key].update(s.labels)
    leaking = {k for k, v in patient_splits.items() if len(v) > 1}
    if leaking:
        files = [s.path for s in samples if s.patient_key in leaking]
        raise DataError(
            f"{len(leaking)} patient(s) have files in more than one explicit split, e.g. {_examples(files)}",
            fix="move each patient's files into a single split (train/, val/ or test/), "
                "or leave the split blank so it is assigned by patient",
        )
    assignment: dict[str, str] = {k: next(iter(v)) for k, v in patient_splits.items()}
    explicit = set(assignment.values())
    # stratum of a patient: the set of labels it has, plus its most frequent label (ties: by name),
    # so that patients with images of several classes are spread by their dominant class
    # (a patient without labels -- every cell of the first task empty -- is a stratum of its own)
    strata = {k: (*sorted(c), "|", min(c, key=lambda label: (-c[label], label)) if c else "")
              for k, c in label_counts.items()}
    patients = sorted(strata)  # every patient key, sorted for a stable start

    if folds is not None and "val" in explicit:
        raise DataError("k-fold builds its own validation folds, but the data has an explicit val split",
                        fix="merge val into train (or blank its split column), or drop folds")
    if test_fraction is None:
        # A user who split off a validation set by hand decides about a test set too: carving one from
        # their (often few) training patients silently would leave both splits too small to trust.
        test_fraction = 0.0 if explicit & {"val", "test"} else DEFAULT_TEST_FRACTION

    pool = [k for k in patients if assignment.get(k, "train") == "train"]
    sources = {name: "explicit" if name in explicit else "none" for name in SPLITS}
    missed: dict[str, list[str]] = {}

    # 2. carve test, then val (or the folds)
    order = _stratified_order(pool, strata, seed, "split")
    n_pool = len(order)  # fractions are of the pool's patients, before anything is carved
    if "test" not in explicit and test_fraction > 0:
        n_test = _count(test_fraction, n_pool)
        if folds is not None:
            need_after, what = folds, f"make a test split and {folds} folds"
        elif "val" not in explicit and val_fraction > 0:
            need_after, what = 2, "make test, validation and training splits"
        else:
            need_after, what = 1, "make test and training splits"
        n_test = min(n_test, n_pool - need_after)  # rounding up must not starve the other splits
        if n_test < 1:
            raise _too_few(what, n_pool, 1 + need_after, samples)
        order = _carve(order, label_counts, n_test, "test", assignment, missed)
        sources["test"] = "carved"

    if folds is not None:
        if len(order) < folds:
            raise _too_few(f"make {folds} folds", len(order), folds, samples)
        fold_of = _deal_folds(order, strata, seed, folds)
        for k in order:
            assignment[k] = "val" if fold_of[k] == fold else "train"
        # Folds are not rebalanced (each patient must validate exactly once over the folds): say what one lacks.
        in_pool = Counter(label for k in order for label in label_counts[k])
        in_fold = {label for k in order if assignment[k] == "val" for label in label_counts[k]}
        missed["val"] = [c for c, n in in_pool.items() if n >= 2 and c not in in_fold]
        sources["val"] = "folds"
    else:
        if "val" not in explicit and val_fraction > 0:
            n_val = min(_count(val_fraction, n_pool), len(order) - 1)
            if n_val < 1:
                raise _too_few("make validation and training splits", len(order), 2, samples)
            order = _carve(order, label_counts, n_val, "val", assignment, missed)
            sources["val"] = "carved"
        for k in order:
            assignment[k] = "train"
    carved = sources["val"] in ("carved", "folds") or sources["test"] == "carved"
    unsplit = any(k not in patient_splits for k in pool)
    sources["train"] = "rest" if carved or unsplit else "explicit"

    result: dict[str, list[Sample]] = {name: [] for name in SPLITS}
    for s in samples:
        result[assignment[s.patient_key]].append(s)
    if not result["train"]:
        raise DataError("no training data: every file is in the val or test split",
                        fix="add a train split, or leave some files' split blank")
    return Splits(result, sources, missed)


def _carve(order: list[str], labels: dict[str, Counter[str]], count: int, split: str,
           assignment: dict[str, str], missed: dict[str, list[str]]) -> list[str]:
    """Assign ``count`` patients of ``order`` to ``split``, covering classes; the patients left, in order."""
    taken, missed[split] = take_covering(order, labels, count)
    chosen = set(taken)
    for k in taken:
        assignment[k] = split
    return [k for k in order if k not in chosen]


def split_counts(splits: dict[str, list[Sample]]) -> dict[str, dict[str, object]]:
    """Files, patients and per-label counts of each split (no patient keys): safe to write out."""
    return {
        name: {
            "files": len(items),
            "patients": len({s.patient_key for s in items}),
            "labels": dict(sorted(Counter(label for s in items for label in s.labels).items())),
        }
        for name, items in splits.items()
    }
