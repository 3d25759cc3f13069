"""Property-based: whatever manifest text or folder tree a user hands the DICOM index, the answer is samples
or a DataError (a message for the user), never another exception."""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tlapp_medical.formats import Sample, index_dataset, index_folders, read_manifest
from tlcore import DataError

DICOM = Path(pydicom.data.__file__).parent / "test_files" / "CT_small.dcm"
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
_counter = itertools.count()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """A folder with a DICOM file, a non-DICOM file and an empty one, for manifests to name."""
    root = tmp_path_factory.mktemp("index")
    (root / "img").mkdir()
    shutil.copyfile(DICOM, root / "img" / "a.dcm")
    (root / "img" / "junk.dcm").write_bytes(b"not a dicom file at all" * 20)
    (root / "img" / "empty").write_bytes(b"")
    (root / "outside.dcm").write_bytes((root / "img" / "a.dcm").read_bytes())
    return root


def fresh(parent: Path) -> Path:
    folder = parent / f"case{next(_counter)}"
    folder.mkdir()
    return folder


def only_samples_or_data_error(call) -> None:
    try:
        result = call()
    except DataError as exc:
        assert exc.what  # a message the CLI can print
        return
    assert isinstance(result, list) and all(isinstance(s, Sample) for s in result)


# ------------------------------------------------------------------------------------------ manifests

COLUMNS = st.sampled_from(["path", "label", "patient_id", "split", "Path", " LABEL ", "lable", "", "path"])
CELLS = st.one_of(
    st.sampled_from(["img/a.dcm", "img/junk.dcm", "img/empty", "img", "../outside.dcm", "img/../img/a.dcm",
                     "/etc/passwd", "img/missing.dcm", "train", "val", "holdout", "nodule", "normal;nodule",
                     "", " ", "a\x00b", "x" * 300, "\ufeffpath", '"', "img/a.dcm;img/a.dcm"]),
    st.text(max_size=12),
)


@st.composite
def manifest_text(draw) -> str:
    if draw(st.booleans()):
        return draw(st.text(max_size=200))  # anything at all
    header = draw(st.lists(COLUMNS, min_size=1, max_size=5))
    rows = draw(st.lists(st.lists(CELLS, min_size=0, max_size=6), max_size=6))
    quote = draw(st.booleans())

    def line(cells):
        return ",".join(f'"{c}"' if quote else c for c in cells)

    return "\n".join([line(header), *map(line, rows)]) + draw(st.sampled_from(["", "\n", "\r\n", '\n"']))


@SETTINGS
@given(text=manifest_text(), delimiter=st.sampled_from([";", "|", None]), raw=st.booleans())
def test_any_manifest_gives_samples_or_a_data_error(files, text, delimiter, raw):
    manifest = files / f"m{next(_counter)}.csv"
    # raw: bytes that need not be UTF-8 (lone surrogates become invalid sequences)
    manifest.write_bytes(text.encode("utf-8", "surrogatepass") if raw else text.encode("utf-8", "replace"))
    only_samples_or_data_error(lambda: read_manifest(manifest, delimiter=delimiter))
    only_samples_or_data_error(lambda: index_dataset(manifest, delimiter=delimiter))


# ------------------------------------------------------------------------------------------ folder trees

NAMES = st.one_of(st.sampled_from(["train", "VAL", "test", "validation", "nodule", "normal", ".hidden", "x~",
                                   "DICOMDIR", "notes.txt", "Thumbs.db", "ü", "a b", "-", "..."]),
                  st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)),
                          min_size=1, max_size=8).filter(lambda n: n not in (".", "..")))
KINDS = st.sampled_from(["dicom", "junk", "empty", "folder", "broken link", "link inside", "link outside",
                         "link loop", "folder link"])


def build(root: Path, outside: Path, entries: list[tuple[list[str], str]]) -> None:
    dicom = (outside / "img" / "a.dcm").read_bytes()
    for parts, kind in entries:
        path = root.joinpath(*parts)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if kind == "dicom":
                path.write_bytes(dicom)
            elif kind == "junk":
                path.write_bytes(b"\x00\x01garbage" * 30)
            elif kind == "empty":
                path.write_bytes(b"")
            elif kind == "folder":
                path.mkdir()
            elif kind == "broken link":
                path.symlink_to(root / "nowhere")
            elif kind == "link inside":
                path.symlink_to(root)
            elif kind == "link outside":
                path.symlink_to(outside / "outside.dcm")
            elif kind == "link loop":
                path.symlink_to(path)
            else:
                path.symlink_to(outside / "img", target_is_directory=True)
        except OSError:
            continue  # a name taken by an earlier entry, or too long for the file system


@SETTINGS
@given(entries=st.lists(st.tuples(st.lists(NAMES, min_size=1, max_size=3), KINDS), max_size=8),
       allow=st.booleans())
def test_any_folder_tree_gives_samples_or_a_data_error(files, entries, allow):
    root = fresh(files)
    try:
        build(root, files, entries)
        only_samples_or_data_error(lambda: index_folders(root, allow_outside_root=allow, warn=lambda m: None))
        only_samples_or_data_error(lambda: index_dataset(root, allow_outside_root=allow, warn=lambda m: None))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_tree_of_nothing_but_problems_is_a_data_error(files):
    root = fresh(files)
    build(root, files, [(["a", "loop"], "link loop"), (["b"], "folder"), (["c", "gone"], "broken link")])
    notes: list[str] = []
    with pytest.raises(DataError, match="no files found"):
        index_folders(root, warn=notes.append)
    assert any("broken symlink" in n for n in notes) and any("holds no files" in n for n in notes)
    assert os.path.islink(root / "a" / "loop")
