"""Reading labelled texts from CSV, TSV and JSON-lines files, with the file and line of every row.

The dataset formats ``text-csv``, ``text-tsv`` and ``text-jsonl`` (``FORMATS``) are
``reader(fmt)``: ``read(path, file_split=None, **columns)``. Readers never stop at a
bad row: they return the good rows and a list of ``Problem`` (file, line, reason)
so that the task can fail with one message listing them all, or skip them
(``data.on_error: skip``), and so that ``tlapp data check`` can show them. A line that is not text in the
configured encoding is such a bad row too. Problems with a whole file (unreadable, an undecodable header, no text
column) raise ``DataError`` at once.

With ``label_columns`` (multi-task, see ``tlcore.multitask``) every one of those columns is a task: a row's
cell for a task may be empty (CSV) or its key absent (JSONL), which leaves the row unlabelled for that task
alone; a row with no label in any of them is a bad row, as an unlabelled row is with one label column.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from collections.abc import Iterable

from tlcore import DataError

FORMATS = {"csv": "text-csv", "tsv": "text-tsv", "jsonl": "text-jsonl"}
FORMAT_DESCRIPTIONS = {
    "csv": "CSV with a header; text and label columns (names configurable), optional split column",
    "tsv": "tab-separated values with a header, like text-csv",
    "jsonl": "JSON lines: one object per line with text and label fields (label may be a list)",
}
SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "dev": "val", "test": "test", "testing": "test"}
SPLITS = ("train", "val", "test")


@dataclass
class Record:
    """One text, its labels (empty when unlabelled), and where it came from.

    With label columns (multi-task) ``tasks`` holds the labels of each column the row has a label in (a column
    without one is absent), and ``labels`` those of the first column: what carved splits are stratified by."""

    text: str
    labels: list[str]
    file: str
    line: int
    split: str | None = None
    tasks: dict[str, list[str]] | None = None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "reason": self.reason}


@dataclass
class Columns:
    """How to read one file: column (or JSON field) names and label parsing."""

    text_column: str = "text"
    label_column: str = "label"
    split_column: str | None = "split"
    label_delimiter: str = ";"
    multilabel: bool = False
    require_labels: bool = True
    encoding: str = "utf-8"
    # multi-task: the label columns (label_column and multilabel then unused), and which of them are multi-label
    label_columns: list[str] | None = None
    multilabel_columns: list[str] = field(default_factory=list)

    def labels_of(self, column: str) -> Columns:
        """How to parse one label column's cell of a multi-task row: an empty cell is a missing label."""
        return replace(self, label_column=column, multilabel=column in self.multilabel_columns,
                       require_labels=False, label_columns=None)


@dataclass
class ReadResult:
    records: list[Record] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    has_split_column: bool = False
    # the header of a table; the fields of a JSONL file's objects, in the order first seen
    columns: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- files


def format_of(path: Path, fmt: str = "auto") -> str:
    """``csv``, ``tsv`` or ``jsonl``: the configured format, else the file's suffix."""
    if fmt != "auto":
        short = fmt.removeprefix("text-")
        if short not in FORMATS:
            raise DataError(f"unknown text format {fmt!r}", where="data.format",
                            fix="use auto, csv, tsv or jsonl")
        return short
    found = SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise DataError(f"cannot tell the format of {path.name} from its suffix", where=str(path),
                        fix="name files .csv, .tsv or .jsonl, or set data.format=csv|tsv|jsonl")
    return found


ENCODING_FIX = "save the file as UTF-8, or set data.encoding to its encoding (e.g. latin-1)"


def decode(path: Path, encoding: str = "utf-8") -> str:
    """The whole file as text; a DataError naming the first line that is not text in ``encoding``."""
    return _decode(path, encoding, by_line=False)[0]


def decode_lines(path: Path, encoding: str = "utf-8") -> tuple[str, list[Problem]]:
    """The file as text with each undecodable line blanked and returned as a ``Problem``.

    Only encodings that write a newline as the single byte ``\\n`` (UTF-8, Latin-1, ...) can be cut
    into lines before decoding; for others (UTF-16) the first bad byte fails the file.
    """
    return _decode(path, encoding, by_line=True)


def _decode(path: Path, encoding: str, by_line: bool) -> tuple[str, list[Problem]]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}", where=str(path)) from None
    if encoding.lower().replace("_", "-") in ("utf-8", "utf8"):
        encoding = "utf-8-sig"  # a byte-order mark from spreadsheet exports is not part of the header
    name = encoding.removesuffix("-sig")
    try:
        return raw.decode(encoding), []
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        first = DataError(f"{path}:{line}: not {name} text ({exc.reason})", where=f"{path}:{line}",
                          fix=ENCODING_FIX)
    except LookupError:
        raise DataError(f"unknown encoding {encoding!r}", where="data.encoding",
                        fix="use a Python codec name such as utf-8 or latin-1") from None
    if not by_line or line == 1 or "\n".encode(name) != b"\n":
        raise first
    lines, problems = [], []
    for number, chunk in enumerate(raw.split(b"\n"), start=1):
        try:
            lines.append(chunk.decode(encoding))
        except UnicodeDecodeError as exc:
            lines.append("")
            problems.append(Problem(str(path), number, f"not {name} text ({exc.reason}); set data.encoding if "
                                                       "the file uses another encoding"))
    return "\n".join(lines), problems


def read_file(path: Path, columns: Columns, fmt: str = "auto", file_split: str | None = None) -> ReadResult:
    """Every row of one file; ``file_split`` is the split the whole file belongs to (folder layout)."""
    fmt = format_of(path, fmt)
    text, undecodable = decode_lines(path, columns.encoding)
    if fmt == "jsonl":
        result = _read_jsonl(path, text, columns)
    else:
        result = _read_table(path, text, columns, "\t" if fmt == "tsv" else ",")
    if undecodable:
        result.problems = sorted(result.problems + undecodable, key=lambda p: p.line)
    if file_split is not None:
        for r in result.records:
            r.split = file_split
    return result


def reader(fmt: str):
    """The registered reader of format ``fmt`` (csv, tsv, jsonl)."""

    def read(path, file_split=None, **columns):
        """Rows of one file as ``ReadResult(records, problems)``; options are ``Columns`` fields,
        ``file_split`` the split every row of the file belongs to."""
        return read_file(Path(path), Columns(**columns), fmt, file_split=file_split)

    return read


def _read_table(path: Path, text: str, columns: Columns, delimiter: str) -> ReadResult:
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))  # long documents are legitimate
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    name = str(path)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{name} is empty", where=name, fix="add a header line and one row per text") from None
    except csv.Error as exc:
        raise DataError(f"{name}:1: bad header line: {exc}", where=f"{name}:1") from None
    header = [h.strip() for h in header]
    needed = [(columns.text_column, "data.text_column=NAME")]
    if columns.require_labels:
        needed += ([(c, "data.label_columns=[NAME, ...]") for c in columns.label_columns] if columns.label_columns
                   else [(columns.label_column, "data.label_column=NAME")])
    for key, option in needed:
        if key not in header:
            raise DataError(f"{name}:1: no column {key!r} in the header (columns: {', '.join(header)})",
                            where=f"{name}:1", fix=did_you_mean(key, header) + f"rename the column, or set {option}")
    ti = header.index(columns.text_column)
    li = header.index(columns.label_column) if columns.label_column in header else None
    si = header.index(columns.split_column) if columns.split_column and columns.split_column in header else None
    tasks = {c: header.index(c) if c in header else None for c in columns.label_columns or []}
    result = ReadResult(has_split_column=si is not None, columns=header)
    start = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            result.problems.append(Problem(name, start, f"malformed {'TSV' if delimiter == chr(9) else 'CSV'}: {exc}"))
            if reader.line_num + 1 <= start:  # the reader made no progress: give up on the rest
                break
            start = reader.line_num + 1
            continue
        line, start = start, reader.line_num + 1
        if not row or all(not cell.strip() for cell in row):
            continue  # blank line
        if len(row) != len(header):
            result.problems.append(Problem(name, line, f"{len(row)} fields, the header has {len(header)}"
                                                       + (" (unquoted delimiter in the text?)" if len(row) > len(header)
                                                          else "")))
            continue
        label = ({c: row[i] if i is not None else None for c, i in tasks.items()} if tasks
                 else row[li] if li is not None else None)
        _add(result, name, line, row[ti], label, row[si] if si is not None else None, columns)
    return result


def _read_jsonl(path: Path, text: str, columns: Columns) -> ReadResult:
    name = str(path)
    result = ReadResult()
    seen: dict[str, None] = {}  # the fields, in the order first seen
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            result.problems.append(Problem(name, line, f"bad JSON: {exc.msg} (column {exc.colno})"))
            continue
        except (ValueError, RecursionError) as exc:  # a number of over 4300 digits; nesting deeper than Python's stack
            result.problems.append(Problem(name, line, f"bad JSON: {str(exc) or type(exc).__name__}"))
            continue
        if not isinstance(obj, dict):
            result.problems.append(Problem(name, line, f"expected a JSON object, got {type(obj).__name__}"))
            continue
        seen.update(dict.fromkeys(obj))
        if columns.text_column not in obj:
            result.problems.append(Problem(name, line, f"no field {columns.text_column!r} (fields: {', '.join(obj)}); "
                                                       f"set data.text_column"))
            continue
        if columns.split_column and columns.split_column in obj:
            result.has_split_column = True
        label = ({c: obj.get(c) for c in columns.label_columns} if columns.label_columns
                 else obj.get(columns.label_column))
        _add(result, name, line, obj[columns.text_column], label,
             obj.get(columns.split_column) if columns.split_column else None, columns)
    result.columns = list(seen)
    if result.has_split_column:  # some objects have a split field: every one must
        missing = [r for r in result.records if r.split is None]
        result.records = [r for r in result.records if r.split is not None]
        result.problems += [Problem(name, r.line, f"no field {columns.split_column!r} while other lines have one")
                            for r in missing]
        result.problems.sort(key=lambda p: p.line)
    return result


def _add(result: ReadResult, name: str, line: int, text: Any, label: Any, split: Any, columns: Columns) -> None:
    """Validate one row and add it as a record or a problem."""
    if not isinstance(text, str):
        result.problems.append(Problem(name, line, f"text is {type(text).__name__}, not a string"))
        return
    if not text.strip():
        result.problems.append(Problem(name, line, "empty text"))
        return
    tasks = None
    if columns.label_columns:
        tasks, why = parse_task_labels(label, columns)
        labels = tasks.get(columns.label_columns[0], [])
    else:
        labels, why = parse_labels(label, columns)
    if why:
        result.problems.append(Problem(name, line, why))
        return
    split_name = None
    if split is not None and str(split).strip():
        split_name = SPLIT_NAMES.get(str(split).strip().lower())
        if split_name is None:
            result.problems.append(Problem(name, line, f"unknown split {split!r} in column {columns.split_column!r} "
                                                       f"(use train, val or test)"))
            return
    elif result.has_split_column:
        result.problems.append(Problem(name, line, f"empty split in column {columns.split_column!r}"))
        return
    result.records.append(Record(text=text, labels=labels, file=name, line=line, split=split_name, tasks=tasks))


def parse_task_labels(cells: dict[str, Any], columns: Columns) -> tuple[dict[str, list[str]], str | None]:
    """A multi-task row's labels by column, the columns without a label left out; or ({}, the reason the row
    is bad: a cell that is no label, or no label in any column when labels are required)."""
    found = {}
    for column, value in cells.items():
        labels, why = parse_labels(value, columns.labels_of(column), column)
        if why:
            return {}, f"column {column!r}: {why}"
        if labels:
            found[column] = labels
    if not found and columns.require_labels:
        return {}, f"no label in any label column ({', '.join(cells)})"
    return found, None


def parse_labels(value: Any, columns: Columns, task: str | None = None) -> tuple[list[str], str | None]:
    """(labels, None) or ([], reason). Multi-label cells split on the delimiter; JSON lists stay lists.
    ``task``: the label column of a multi-task job, whose own head says whether it is multi-label."""
    if value is None or (isinstance(value, str) and not value.strip()) or value == []:
        return [], ("no label" if columns.require_labels else None)
    if isinstance(value, bool) or not isinstance(value, (str, int, list)):
        return [], f"label is {type(value).__name__}; use a string, a number or a list of them"
    if isinstance(value, list):
        if not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
            return [], "label list holds something other than strings or numbers"
        labels = [str(v).strip() for v in value if str(v).strip()]
    elif columns.multilabel and isinstance(value, str):
        labels = [part.strip() for part in value.split(columns.label_delimiter) if part.strip()]
    else:
        labels = [str(value).strip()]
    labels = list(dict.fromkeys(labels))  # a label named twice counts once
    if not labels:
        return [], ("no label" if columns.require_labels else None)
    if len(labels) > 1 and not columns.multilabel:
        option = "model.multilabel" if task is None else f"model.heads.{task}.multilabel"
        return [], (f"{len(labels)} labels {labels} but {option} is false "
                    f"(set {option}=true for several labels per text)")
    return labels, None


def did_you_mean(name: str, names: list[str]) -> str:
    """The start of a fix naming the column probably meant (case and separators ignored: "Urgency" is
    "urgency"), or ""."""
    def plain(n: str) -> str:
        return "".join(ch for ch in n.lower() if ch.isalnum())

    close = [n for n in names if plain(n) == plain(name)] or difflib.get_close_matches(name, names, n=1)
    return f"did you mean {close[0]!r}? " if close else ""


# ---------------------------------------------------------------- datasets on disk


@dataclass
class Source:
    """The files of a dataset: (file, split the whole file belongs to, or None)."""

    root: Path
    files: list[tuple[Path, str | None]]


def find_files(root: Path, fmt: str = "auto") -> Source:
    """A single file, or a folder holding train/val/test files (or exactly one data file)."""
    if not root.exists():
        raise DataError(f"dataset not found: {root}", where="data.path",
                        fix="pass --data FILE_OR_FOLDER (CSV, TSV or JSONL)")
    if root.is_file():
        return Source(root, [(root, None)])
    # Files with a data suffix; with an explicit format also split-named files with other suffixes.
    candidates = sorted(p for p in root.iterdir()
                        if p.is_file() and not p.name.startswith(".")
                        and (p.suffix.lower() in SUFFIXES or (fmt != "auto" and p.stem.lower() in SPLIT_NAMES)))
    by_split: dict[str, list[Path]] = defaultdict(list)
    for p in candidates:
        split = SPLIT_NAMES.get(p.stem.lower())
        if split is not None:
            by_split[split].append(p)
    for split, paths in by_split.items():
        if len(paths) > 1:
            raise DataError(f"several {split} files in {root}: {', '.join(p.name for p in paths)}",
                            where=str(root), fix="keep one file per split")
    if by_split:
        if "train" not in by_split:
            raise DataError(f"{root} has {', '.join(by_split)} files but no train file", where=str(root),
                            fix="add train.csv (or .tsv/.jsonl), or pass a single file with a split column")
        return Source(root, [(by_split[s][0], s) for s in SPLITS if s in by_split])
    if len(candidates) == 1:
        return Source(root, [(candidates[0], None)])
    if not candidates:
        raise DataError(f"no CSV, TSV or JSONL file in {root}", where=str(root),
                        fix="put train.csv, val.csv, test.csv (or one labelled file) in the folder")
    raise DataError(f"{root} holds {len(candidates)} data files and none is named train/val/test",
                    where=str(root), fix="name them train.*, val.* and test.*, or pass one file as --data")


def stratified_split(records: list[Record], fractions: dict[str, float], seed: int,
                     rest: str = "train") -> tuple[dict[str, list[Record]], dict[str, list[str]]]:
    """Split ``records`` into ``rest`` plus one part per fraction, stratified and reproducible (``seed``).

    Returns the parts (each in the order of ``records``) and, per part with a fraction above 0, the classes
    it could not be given (sorted), for the task to warn about.

    The parts are carved in the order of ``fractions``, each from what the earlier ones left:

    1. Rows are stratified by label set (the sorted labels joined by ``|``; a single label when
       single-label): each label set of n rows gives round(n * fraction) of them to the part, but keeps
       one for ``rest`` and, where it has them, one for each later part.
    2. Then the part is given one row of every class (label) it still lacks and that has at least two rows
       left, rarest class first, so that a class of 3 rows gives one to each of val and test and keeps one.
       Only a row whose every label keeps another row behind is given, so ``rest`` (train) keeps every
       class of ``records``.

    In multi-label data a class is a label, whichever label sets hold it: it counts as present in a part
    when any row there carries it. A class that still lacks a row in a part (a single row; two rows and
    two parts; or, multi-label, only rows whose other labels have no other row) is returned as missed.
    """
    by_set: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        by_set["|".join(sorted(r.labels))].append(r)
    rng = random.Random(seed)
    sizes: dict[str, int] = {}
    left: dict[str, list[Record]] = {}
    for key in sorted(by_set):
        items = list(by_set[key])
        rng.shuffle(items)
        sizes[key], left[key] = len(items), items
    out: dict[str, list[Record]] = {rest: [], **{k: [] for k in fractions}}
    missed: dict[str, list[str]] = {}
    classes = {lb for r in records for lb in r.labels}
    carved = [part for part, fraction in fractions.items() if fraction > 0]
    for index, part in enumerate(carved):
        fraction, later = fractions[part], len(carved) - index - 1
        for key, items in left.items():  # leave one row for rest and, if it can, one for each later part
            take = min(round(sizes[key] * fraction), max(len(items) - 1 - later, 0))
            out[part] += items[:take]
            left[key] = items[take:]
        held = {lb for r in out[part] for lb in r.labels}
        counts = Counter(lb for items in left.values() for r in items for lb in r.labels)
        for cls in sorted((c for c in counts if c not in held and counts[c] >= 2), key=lambda c: (counts[c], c)):
            if cls in held:  # a row given for a rarer class brought it along
                continue
            found = next(((key, i) for key, items in left.items() for i, r in enumerate(items)
                          if cls in r.labels and all(counts[lb] >= 2 for lb in r.labels)), None)
            if found is None:
                continue
            key, i = found
            row = left[key].pop(i)
            out[part].append(row)
            held.update(row.labels)
            counts.subtract(row.labels)
        missed[part] = sorted(classes - held)
    for items in left.values():
        out[rest] += items
    order = {id(r): i for i, r in enumerate(records)}
    return {k: sorted(v, key=lambda r: order[id(r)]) for k, v in out.items()}, missed


def describe(problems: Iterable[Problem], limit: int = 20) -> str:
    problems = list(problems)
    lines = "\n".join(f"    {p}" for p in problems[:limit])
    more = f"\n    ... and {len(problems) - limit} more" if len(problems) > limit else ""
    return lines + more
