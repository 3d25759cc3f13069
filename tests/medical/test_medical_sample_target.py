"""The shifted target domain of the medical sample (``plugins/tlapp_medical/sample_target/``).

It is written by ``scripts/make_medical_sample.py --domain shifted``: the committed files must be what the
generator writes, ``unlabelled/`` must carry no label, ``test/`` must label both classes, and no patient may
be shared between the parts or with the source sample.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from tlapp_medical.formats import index_folders, looks_like_dicom
from tlapp_medical.task import SAMPLE_DATA

REPO = Path(__file__).resolve().parents[2]
TARGET = SAMPLE_DATA.parent / "sample_target"
GENERATOR = REPO / "scripts" / "make_medical_sample.py"
CLASSES = {"normal", "nodule"}

pytestmark = pytest.mark.skipif(not TARGET.is_dir(), reason="the medical target sample is not generated")


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _patients(folder: Path) -> set[str]:
    return {str(pydicom.dcmread(p, stop_before_pixels=True).PatientID)
            for p in folder.rglob("*") if p.is_file() and looks_like_dicom(p)}


@pytest.mark.skipif(not GENERATOR.is_file(), reason="the generator is missing")
def test_committed_target_is_what_the_generator_writes(tmp_path):
    out = tmp_path / "gen"
    subprocess.run([sys.executable, str(GENERATOR), "--domain", "shifted", "--out", str(out)], check=True,
                   capture_output=True, timeout=300)
    ours, shipped = _files(out), _files(TARGET)
    assert sorted(ours) == sorted(shipped)
    differing = [name for name in ours if ours[name] != shipped[name]]
    assert not differing, (f"regenerate with `python scripts/make_medical_sample.py --domain shifted`: "
                           f"{differing[:5]}")


def test_layout_and_size():
    assert sorted(p.name for p in TARGET.iterdir()) == ["README.md", "test", "unlabelled"]
    assert sum(p.stat().st_size for p in TARGET.rglob("*") if p.is_file()) < 3_000_000


def test_unlabelled_is_flat_and_carries_no_label():
    entries = list((TARGET / "unlabelled").iterdir())
    assert 60 <= len(entries) <= 100
    assert all(p.is_file() for p in entries), "unlabelled/ must have no (class) sub-folders"
    assert all(looks_like_dicom(p) for p in entries)
    for p in entries:
        assert not any(c in p.name.lower() for c in CLASSES), p.name
        assert p.suffix == ".dcm"  # no sidecar manifest or label file
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        text = " ".join(str(ds.get(k, "")) for k in ("SeriesDescription", "ImageComments", "StudyDescription"))
        assert not any(c in text.lower() for c in CLASSES), p.name


def test_target_test_has_both_classes():
    test = TARGET / "test"
    assert {p.name for p in test.iterdir()} == CLASSES
    samples = index_folders(test)
    assert 40 <= len(samples) <= 80
    counts = {c: sum(s.labels == (c,) for s in samples) for c in CLASSES}
    assert all(n >= 15 for n in counts.values()), counts


def test_patients_are_new_and_disjoint():
    unlabelled, test = _patients(TARGET / "unlabelled"), _patients(TARGET / "test")
    assert unlabelled and test and not unlabelled & test
    assert all(pid.startswith("TGT-") for pid in unlabelled | test)
    if SAMPLE_DATA.is_dir():
        assert not (unlabelled | test) & _patients(SAMPLE_DATA)
