"""Prediction files: every task's ``predict`` writes its records as JSON and as a CSV table."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any
from collections.abc import Iterable, Mapping, Sequence

from .checkpoint import atomic_write_text


def write_predictions(records: Sequence[Mapping[str, Any]], out_dir: Path, stem: str = "predictions",
                      rows: Iterable[Mapping[str, Any]] | None = None, delimiter: str = ";") -> list[Path]:
    """Write ``{stem}.json`` (the records as they are) and ``{stem}.csv`` (one line per row); return both paths.

    ``rows`` are the table's lines, by default the records themselves; the columns are their keys in
    order of appearance. In a cell a list is joined with ``delimiter`` (several labels), a bool is
    ``true``/``false``, None is empty and a mapping is written as JSON. Both files are written
    atomically, so an interrupted ``predict`` never leaves half a file.
    """
    out_dir = Path(out_dir)
    json_path, csv_path = out_dir / f"{stem}.json", out_dir / f"{stem}.csv"
    atomic_write_text(json_path, json.dumps(list(records), indent=2, ensure_ascii=False) + "\n")
    table = [dict(row) for row in (records if rows is None else rows)]
    columns = list(dict.fromkeys(key for row in table for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    if columns:
        writer.writeheader()
    writer.writerows({key: _cell(value, delimiter) for key, value in row.items()} for row in table)
    atomic_write_text(csv_path, buffer.getvalue())
    return [json_path, csv_path]


def _cell(value: Any, delimiter: str) -> Any:
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return delimiter.join(str(v) for v in value)
    if isinstance(value, Mapping):
        return json.dumps(value, ensure_ascii=False)
    return value
