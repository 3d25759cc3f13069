"""Hook implementations of the text plugin."""

from pathlib import Path

from tlcore import hookimpl

from .backbones import text_backbones
from .records import FORMATS, Columns, read_file
from .task import TextClassification

FORMAT_DESCRIPTIONS = {
    "csv": "CSV with a header; text and label columns (names configurable), optional split column",
    "tsv": "tab-separated values with a header, like text-csv",
    "jsonl": "JSON lines: one object per line with text and label fields (label may be a list)",
}


def _reader(fmt: str):
    def read(path, file_split=None, **columns):
        """Rows of one file as ``ReadResult(records, problems)``; options are ``records.Columns`` fields,
        ``file_split`` the split every row of the file belongs to."""
        return read_file(Path(path), Columns(**columns), fmt, file_split=file_split)

    return read


@hookimpl
def register_tasks(register):
    register(TextClassification())


@hookimpl
def register_backbones(register):
    for backbone in text_backbones():
        register(backbone)


@hookimpl
def register_dataset_formats(register):
    for fmt, name in FORMATS.items():
        register(name, _reader(fmt), FORMAT_DESCRIPTIONS[fmt])
