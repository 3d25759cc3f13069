"""tlapp_medical.formats: finding, labelling and patient-wise splitting of DICOM data sets."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tlapp_medical.formats import (
    Sample,
    find_dicom_files,
    index_dataset,
    index_folders,
    looks_like_dicom,
    patient_hash,
    patient_key_for,
    read_manifest,
    split_by_patient,
    split_counts,
)
from tlapp_medical.task import SAMPLE_DATA
from tlcore import ConfigError, DataError

REPO = Path(__file__).resolve().parents[2]
SAMPLE = SAMPLE_DATA
GENERATOR = REPO / "scripts" / "make_medical_sample.py"


def rel(paths, root):
    return [Path(p).relative_to(root).as_posix() for p in paths]


# ------------------------------------------------------------------------------------------
# finding files
# ------------------------------------------------------------------------------------------

def test_find_keeps_extensionless_and_corrupt_files_and_skips_sidecars(tmp_path, make_dicom):
    make_dicom(tmp_path / "a" / "one.dcm")
    make_dicom(tmp_path / "a" / "IM000002")  # no extension
    make_dicom(tmp_path / "b" / "deep" / "er" / "three.DCM")
    (tmp_path / "a" / "broken").write_bytes(b"\x00" * 50)  # corrupt: must still be listed
    (tmp_path / "a" / "scan.png").write_bytes(b"\x89PNG")  # unknown kind: listed, the pixel check decides
    for name in ("README.md", "labels.csv", "meta.json", "cfg.yaml", "notes.txt", "DICOMDIR", ".DS_Store",
                 "Thumbs.db", "one.dcm~"):
        (tmp_path / "a" / name).write_text("x")
    (tmp_path / ".git").mkdir()
    make_dicom(tmp_path / ".git" / "hidden.dcm")

    found = find_dicom_files(tmp_path)
    assert rel(found, tmp_path) == ["a/IM000002", "a/broken", "a/one.dcm", "a/scan.png", "b/deep/er/three.DCM"]
    assert all(isinstance(p, Path) for p in found)
    assert find_dicom_files(tmp_path / "a" / "one.dcm") == [tmp_path / "a" / "one.dcm"]
    with pytest.raises(DataError, match="not found"):
        find_dicom_files(tmp_path / "missing")


def test_looks_like_dicom(tmp_path, make_dicom):
    assert looks_like_dicom(make_dicom(tmp_path / "x.dcm"))
    assert looks_like_dicom(make_dicom(tmp_path / "raw", preamble=False))  # no preamble, still DICOM
    (tmp_path / "t.txt").write_text("patient,label\nP1,normal\n" * 20)
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "zeros").write_bytes(b"\x00" * 300)
    assert not looks_like_dicom(tmp_path / "t.txt")
    assert not looks_like_dicom(tmp_path / "empty")
    assert not looks_like_dicom(tmp_path / "zeros")
    assert not looks_like_dicom(tmp_path / "missing")


def test_patient_key_from_header_or_path(tmp_path, make_dicom):
    assert patient_key_for(make_dicom(tmp_path / "a", patient_id="PAT-7")) == "PAT-7"
    assert patient_key_for(make_dicom(tmp_path / "raw", patient_id="PAT-8", preamble=False)) == "PAT-8"
    no_id = make_dicom(tmp_path / "b", patient_id=None)
    empty_id = make_dicom(tmp_path / "c", patient_id="")
    assert patient_key_for(no_id) == "file:" + no_id.as_posix()
    assert patient_key_for(empty_id) == "file:" + empty_id.as_posix()
    (tmp_path / "junk").write_bytes(b"not dicom at all")
    assert patient_key_for(tmp_path / "junk") == "file:" + (tmp_path / "junk").as_posix()  # never raises


# ------------------------------------------------------------------------------------------
# labelling by folder
# ------------------------------------------------------------------------------------------

def test_index_folders_labels_by_class_folder(tmp_path, make_dicom):
    make_dicom(tmp_path / "normal" / "a.dcm", patient_id="P1")
    make_dicom(tmp_path / "normal" / "b", patient_id="P2")
    make_dicom(tmp_path / "nodule" / "c.dcm", patient_id="P1")
    (tmp_path / "README.md").write_text("about this data")
    (tmp_path / "LICENSE").write_text("not DICOM, ignored at the top level")

    samples = index_folders(tmp_path)
    got = [(s.path.relative_to(tmp_path).as_posix(), s.labels, s.patient_key, s.split) for s in samples]
    assert got == [
        ("nodule/c.dcm", ("nodule",), "P1", None),
        ("normal/a.dcm", ("normal",), "P1", None),
        ("normal/b", ("normal",), "P2", None),
    ]
    assert index_dataset(tmp_path) == samples


def test_index_folders_nested_and_corrupt_files_are_kept(tmp_path, make_dicom):
    make_dicom(tmp_path / "nodule" / "patient7" / "series2" / "IM0001", patient_id="P7")
    make_dicom(tmp_path / "nodule" / "patient7" / "series2" / "IM0002", patient_id="P7")
    make_dicom(tmp_path / "normal" / "x" / "y.dcm", patient_id=None)
    (tmp_path / "normal" / "x" / "corrupt.dcm").write_bytes(b"garbage" * 10)

    samples = {Path(s.path).relative_to(tmp_path).as_posix(): s for s in index_folders(tmp_path)}
    assert set(samples) == {"nodule/patient7/series2/IM0001", "nodule/patient7/series2/IM0002",
                            "normal/x/y.dcm", "normal/x/corrupt.dcm"}
    assert samples["nodule/patient7/series2/IM0001"].labels == ("nodule",)
    assert samples["nodule/patient7/series2/IM0002"].patient_key == "P7"
    # no PatientID / unreadable header: the file is its own group, and it is NOT dropped
    assert samples["normal/x/y.dcm"].patient_key.startswith("file:")
    assert samples["normal/x/corrupt.dcm"].patient_key.startswith("file:")
    assert samples["normal/x/corrupt.dcm"].labels == ("normal",)


def test_index_folders_explicit_split_folders(tmp_path, make_dicom):
    make_dicom(tmp_path / "train" / "normal" / "1.dcm", patient_id="A")
    make_dicom(tmp_path / "train" / "nodule" / "deep" / "2", patient_id="B")
    make_dicom(tmp_path / "Valid" / "normal" / "3.dcm", patient_id="C")
    make_dicom(tmp_path / "test" / "nodule" / "4.dcm", patient_id="D")
    samples = index_folders(tmp_path)
    got = {Path(s.path).name: (s.labels[0], s.split) for s in samples}
    assert got == {"1.dcm": ("normal", "train"), "2": ("nodule", "train"),
                   "3.dcm": ("normal", "val"), "4.dcm": ("nodule", "test")}
    splits = split_by_patient(samples, 0.2, 0.2, seed=3)
    assert {k: [Path(s.path).name for s in v] for k, v in splits.items()} == {
        "train": ["2", "1.dcm"], "val": ["3.dcm"], "test": ["4.dcm"]}


def test_index_folders_errors(tmp_path, make_dicom):
    with pytest.raises(DataError, match="not found"):
        index_folders(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no files found in class folders"):
        index_folders(tmp_path / "empty")

    mixed = tmp_path / "mixed"
    make_dicom(mixed / "train" / "a" / "1.dcm")
    make_dicom(mixed / "normal" / "2.dcm")
    with pytest.raises(DataError, match="mixes split folders") as err:
        index_folders(mixed)
    assert err.value.where == str(mixed)

    stray = tmp_path / "stray"
    make_dicom(stray / "a" / "1.dcm")
    make_dicom(stray / "loose.dcm")
    with pytest.raises(DataError, match="not inside a class folder") as err:
        index_folders(stray)
    assert "loose.dcm" in err.value.what

    twice = tmp_path / "twice"
    make_dicom(twice / "val" / "a" / "1.dcm")
    make_dicom(twice / "validation" / "a" / "2.dcm")
    with pytest.raises(DataError, match="same split 'val'"):
        index_folders(twice)


# ------------------------------------------------------------------------------------------
# labelling by CSV manifest
# ------------------------------------------------------------------------------------------

def _files(tmp_path, make_dicom, n=4):
    for i in range(n):
        make_dicom(tmp_path / "img" / f"f{i}.dcm", patient_id=f"HDR-{i % 2}")


def test_manifest_reads_columns_paths_and_patients(tmp_path, make_dicom):
    _files(tmp_path, make_dicom)
    absolute = tmp_path / "img" / "f3.dcm"
    csv_text = (
        "\ufeffPath, Label ,Patient_ID,split\n"  # BOM, spaces and case in the header
        "img/f0.dcm,normal,P-A,train\n"
        "\n"
        "img/f1.dcm,nodule,,\n"  # blank patient_id: DICOM PatientID; blank split: assigned later
        "img/f2.dcm, nodule ,P-B,Validation\n"
        f"{absolute},normal,P-B,TEST\n"
    )
    (tmp_path / "labels.csv").write_text(csv_text, encoding="utf-8")
    samples = read_manifest(tmp_path / "labels.csv")
    assert [(s.path, s.labels, s.patient_key, s.split) for s in samples] == [
        (tmp_path / "img" / "f0.dcm", ("normal",), "P-A", "train"),
        (tmp_path / "img" / "f1.dcm", ("nodule",), "HDR-1", None),
        (tmp_path / "img" / "f2.dcm", ("nodule",), "P-B", "val"),
        (absolute, ("normal",), "P-B", "test"),
    ]
    assert index_dataset(tmp_path / "labels.csv") == samples


def test_manifest_optional_columns_may_be_absent(tmp_path, make_dicom):
    _files(tmp_path, make_dicom, 2)
    (tmp_path / "m.csv").write_text("label,path\nnormal,img/f0.dcm\nnodule,img/f1.dcm\n")
    samples = read_manifest(tmp_path / "m.csv")
    assert [(s.labels, s.patient_key, s.split) for s in samples] == [
        (("normal",), "HDR-0", None), (("nodule",), "HDR-1", None)]


def test_manifest_multi_label(tmp_path, make_dicom):
    _files(tmp_path, make_dicom, 4)
    (tmp_path / "m.csv").write_text(
        "path,label\n"
        "img/f0.dcm,effusion;nodule\n"
        "img/f1.dcm, nodule ; effusion ;nodule;\n"  # spaces, duplicate and trailing delimiter
        "img/f2.dcm,normal\n"
        '"img/f3.dcm","a|b"\n'
    )
    samples = read_manifest(tmp_path / "m.csv")
    assert [s.labels for s in samples] == [("effusion", "nodule"), ("effusion", "nodule"), ("normal",), ("a|b",)]
    piped = read_manifest(tmp_path / "m.csv", delimiter="|")
    assert piped[0].labels == ("effusion;nodule",) and piped[3].labels == ("a", "b")
    single = read_manifest(tmp_path / "m.csv", delimiter=None)
    assert single[1].labels == ("nodule ; effusion ;nodule;",)
    with pytest.raises(ConfigError):
        read_manifest(tmp_path / "m.csv", delimiter=",")


@pytest.mark.parametrize(
    "body, line, message",
    [
        ("path,label\nimg/f0.dcm,normal\nimg/missing.dcm,normal\n", 3, "file not found: img/missing.dcm"),
        ("path,label\nimg/f0.dcm,normal\n\nimg/f1.dcm,\n", 4, "empty label"),
        ("path,label\nimg/f0.dcm,  ;  \n", 2, "empty label"),
        ("path,label,split\nimg/f0.dcm,normal,train\nimg/f1.dcm,normal,holdout\n", 3, "unknown split 'holdout'"),
        ("path,label,comment\nimg/f0.dcm,normal,hi\n", 1, "unknown manifest column 'comment'"),
        ("path,lable\nimg/f0.dcm,normal\n", 1, "unknown manifest column 'lable'"),
        ("path,patient_id\nimg/f0.dcm,P1\n", 1, "lacks column(s) label"),
        ("path,label,path\nimg/f0.dcm,a,b\n", 1, "appears twice"),
        ("path,label\nimg/f0.dcm,normal,extra\n", 2, "row has 3 fields"),
        ("path,label\n,normal\n", 2, "empty path"),
        ("path,label\nimg,normal\n", 2, "not a file"),
        ("path,label\nimg/f0.dcm,normal\nimg/../img/f0.dcm,nodule\n", 3, "listed twice"),
        ('path,label\nimg/f0.dcm,"multi\nline"\nimg/nope,normal\n', 4, "file not found"),
    ],
)
def test_manifest_bad_rows_name_file_and_line(tmp_path, make_dicom, body, line, message):
    _files(tmp_path, make_dicom, 2)
    manifest = tmp_path / "labels.csv"
    manifest.write_text(body)
    with pytest.raises(DataError) as err:
        read_manifest(manifest)
    assert message in err.value.what
    assert err.value.where == f"{manifest}:{line}"
    assert err.value.fix


def test_manifest_missing_or_empty(tmp_path):
    with pytest.raises(DataError, match="manifest not found"):
        read_manifest(tmp_path / "none.csv")
    (tmp_path / "empty.csv").write_text("\n\n")
    with pytest.raises(DataError, match="manifest is empty"):
        read_manifest(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("path,label\n")
    with pytest.raises(DataError, match="no rows"):
        read_manifest(tmp_path / "header.csv")


# ------------------------------------------------------------------------------------------
# splitting by patient
# ------------------------------------------------------------------------------------------

def synthetic_samples(n_patients: int, seed: int = 0, classes=("normal", "nodule")) -> list[Sample]:
    """Samples without files: patients with 1-9 images, some with images of both classes."""
    rng = random.Random(seed)
    samples = []
    for p in range(n_patients):
        kind = rng.choice(["a", "b", "mixed"])
        for i in range(rng.randint(1, 9)):
            label = classes[0] if kind == "a" else classes[1] if kind == "b" else rng.choice(classes)
            samples.append(Sample(Path(f"/data/p{p:03d}/img{i}.dcm"), (label,), f"MRN{p:05d}"))
    return samples


def _patients(items):
    return {s.patient_key for s in items}


@pytest.mark.parametrize("n_patients", [3, 5, 14, 40, 101])
def test_split_is_patient_disjoint_and_complete_over_seeds(n_patients):
    samples = synthetic_samples(n_patients, seed=n_patients)
    for seed in range(25):
        splits = split_by_patient(samples, val_fraction=0.2, test_fraction=0.2, seed=seed)
        assert set(splits) == {"train", "val", "test"}
        ids = [id(s) for items in splits.values() for s in items]
        assert sorted(ids) == sorted(id(s) for s in samples)  # every sample exactly once
        tr, va, te = (_patients(splits[k]) for k in ("train", "val", "test"))
        assert not (tr & va) and not (tr & te) and not (va & te)
        assert tr and va and te  # every split non-empty
        if n_patients >= 14:
            assert abs(len(te) - 0.2 * n_patients) <= 1 and abs(len(va) - 0.2 * n_patients) <= 1


def test_split_keeps_input_order_within_splits_and_is_stratified():
    samples = synthetic_samples(60, seed=1)
    splits = split_by_patient(samples, 0.25, 0.25, seed=7)
    position = {id(s): i for i, s in enumerate(samples)}
    for items in splits.values():
        assert [position[id(s)] for s in items] == sorted(position[id(s)] for s in items)
    strata = {}
    for s in samples:
        strata.setdefault(s.patient_key, set()).update(s.labels)
    for name in ("val", "test"):
        kinds = Counter(tuple(sorted(strata[k])) for k in _patients(splits[name]))
        assert len(kinds) == 3, (name, kinds)  # each of normal-only, nodule-only, mixed is represented


def test_split_is_deterministic_and_seed_dependent():
    samples = synthetic_samples(30, seed=2)

    def assignment(items, seed):
        splits = split_by_patient(items, 0.2, 0.2, seed=seed)
        return {s.path: name for name, group in splits.items() for s in group}

    first = assignment(samples, 11)
    assert assignment(samples, 11) == first
    shuffled = samples[:]
    random.Random(0).shuffle(shuffled)
    assert assignment(shuffled, 11) == first  # input order does not matter
    assert any(assignment(samples, seed) != first for seed in range(12, 16))


def test_kfold_covers_every_patient_once_and_keeps_test_fixed():
    samples = synthetic_samples(23, seed=3)
    k = 5
    folds = [split_by_patient(samples, 0.2, 0.2, seed=4, folds=k, fold=i) for i in range(k)]
    test = _patients(folds[0]["test"])
    assert test and all(_patients(f["test"]) == test for f in folds)
    plain = split_by_patient(samples, 0.2, 0.2, seed=4)
    assert _patients(plain["test"]) == test  # same held-out test as without folds
    val_sets = [_patients(f["val"]) for f in folds]
    seen = Counter(p for v in val_sets for p in v)
    assert set(seen) == _patients(samples) - test and set(seen.values()) == {1}
    sizes = [len(v) for v in val_sets]
    assert max(sizes) - min(sizes) <= 1
    for f in folds:
        assert not (_patients(f["train"]) & _patients(f["val"]))
        assert not ((_patients(f["train"]) | _patients(f["val"])) & test)
        assert len(f["train"]) + len(f["val"]) + len(f["test"]) == len(samples)


def test_kfold_without_test_and_with_explicit_test():
    samples = synthetic_samples(10, seed=5)
    no_test = [split_by_patient(samples, 0.2, 0.0, seed=0, folds=5, fold=i) for i in range(5)]
    assert all(not f["test"] for f in no_test)
    assert Counter(p for f in no_test for p in _patients(f["val"])) == Counter(_patients(samples))
    held = {"MRN00000", "MRN00001"}
    marked = [Sample(s.path, s.labels, s.patient_key, "test" if s.patient_key in held else None)
              for s in samples]
    for i in range(4):
        f = split_by_patient(marked, 0.2, 0.3, seed=0, folds=4, fold=i)
        assert _patients(f["test"]) == held


def test_explicit_splits_are_honoured_and_val_is_carved_from_train():
    samples = synthetic_samples(20, seed=6)
    test_ids = {f"MRN{p:05d}" for p in range(3)}
    marked = []
    for s in samples:
        split = "test" if s.patient_key in test_ids else "train"
        marked.append(Sample(s.path, s.labels, s.patient_key, split))
    # one unassigned file of an explicit test patient follows its patient
    marked.append(Sample(Path("/data/extra.dcm"), ("normal",), "MRN00000", None))
    splits = split_by_patient(marked, val_fraction=0.25, test_fraction=0.5, seed=1)
    assert _patients(splits["test"]) == test_ids  # explicit test: nothing carved despite test_fraction
    assert any(s.path == Path("/data/extra.dcm") for s in splits["test"])
    assert len(_patients(splits["val"])) == 4  # 25% of the 17 train patients, carved by patient
    assert not (_patients(splits["val"]) & _patients(splits["train"]))

    full = [Sample(s.path, s.labels, s.patient_key, ["train", "val", "test"][int(s.patient_key[-1]) % 3])
            for s in samples]
    splits = split_by_patient(full, 0.2, 0.2, seed=0)
    assert all(s.split == name for name, items in splits.items() for s in items)


def test_patient_in_two_explicit_splits_is_an_error_without_raw_ids():
    samples = [Sample(Path("/d/train/a/1.dcm"), ("a",), "SECRET-ID-42", "train"),
               Sample(Path("/d/test/a/2.dcm"), ("a",), "SECRET-ID-42", "test"),
               Sample(Path("/d/train/b/3.dcm"), ("b",), "OTHER", "train")]
    with pytest.raises(DataError, match="more than one explicit split") as err:
        split_by_patient(samples, 0.2, 0.2, seed=0)
    assert "SECRET-ID-42" not in str(err.value)
    assert "1.dcm" in str(err.value)


def test_kfold_with_explicit_val_is_an_error():
    samples = synthetic_samples(10)
    marked = [Sample(s.path, s.labels, s.patient_key, "val") if i == 0 else s for i, s in enumerate(samples)]
    with pytest.raises(DataError, match="explicit val"):
        split_by_patient(marked, 0.2, 0.2, seed=0, folds=3, fold=0)


def test_too_few_patients_is_a_clear_error():
    one = [Sample(Path(f"/d/{i}.dcm"), ("a" if i % 2 else "b",), "ONLY") for i in range(30)]
    with pytest.raises(DataError, match=r"too few patients.*1 patient\(s\)") as err:
        split_by_patient(one, 0.2, 0.2, seed=0)
    assert "patient_id column" in err.value.fix  # hints at one shared PatientID
    assert "ONLY" not in str(err.value)
    two = synthetic_samples(2)
    with pytest.raises(DataError, match="too few patients"):
        split_by_patient(two, 0.2, 0.2, seed=0)
    assert split_by_patient(two, 0.5, 0.0, seed=0)["val"]  # val + train fits in two patients
    with pytest.raises(DataError, match="5 folds"):
        split_by_patient(synthetic_samples(5), 0.2, 0.2, seed=0, folds=5, fold=0)
    assert split_by_patient(synthetic_samples(6), 0.2, 0.2, seed=0, folds=5, fold=4)["val"]
    with pytest.raises(DataError, match="no samples"):
        split_by_patient([], 0.2, 0.2, seed=0)
    only_val = [Sample(Path("/d/1.dcm"), ("a",), "X", "val"), Sample(Path("/d/2.dcm"), ("a",), "Y", "test")]
    with pytest.raises(DataError, match="no training data"):
        split_by_patient(only_val, 0.2, 0.2, seed=0)


def test_zero_fractions_leave_splits_empty_and_rounding_never_starves_train():
    samples = synthetic_samples(4)
    splits = split_by_patient(samples, 0.0, 0.0, seed=0)
    assert len(splits["train"]) == len(samples) and not splits["val"] and not splits["test"]
    splits = split_by_patient(samples, 0.45, 0.45, seed=0)  # rounds to 2 + 2 of 4: capped
    assert all(splits.values())


@pytest.mark.parametrize("kwargs", [
    dict(val_fraction=1.0), dict(test_fraction=-0.1), dict(val_fraction=0.6, test_fraction=0.4),
    dict(folds=1, fold=0), dict(folds=3, fold=3), dict(fold=2),
])
def test_bad_split_parameters_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        split_by_patient(synthetic_samples(10), **{"val_fraction": 0.2, "test_fraction": 0.2, "seed": 0, **kwargs})


def test_split_counts_has_no_patient_keys():
    samples = synthetic_samples(12)
    counts = split_counts(split_by_patient(samples, 0.2, 0.2, seed=0))
    assert sum(c["files"] for c in counts.values()) == len(samples)
    assert "MRN" not in repr(counts)


# ------------------------------------------------------------------------------------------
# patient hashing
# ------------------------------------------------------------------------------------------

RAW_IDS = ["SYN-0001", "12345678", "0042", "PAT^Doe", "ANON", "x", "Müller-77", "1.2.840.99", " spaced id "]


def test_patient_hash_is_salted_stable_and_hides_the_id():
    for raw in RAW_IDS:
        h = patient_hash(raw, "salt-1")
        assert re.fullmatch(r"[0-9a-f]{16}", h)
        assert h == patient_hash(raw, "salt-1")
        assert h != patient_hash(raw, "salt-2")
        assert h != raw and raw.strip().lower() not in h
    hashes = {patient_hash(raw, "s") for raw in RAW_IDS}
    assert len(hashes) == len(RAW_IDS)
    long_salt = "s" * 200
    assert re.fullmatch(r"[0-9a-f]{16}", patient_hash("SYN-0001", long_salt))
    with pytest.raises(ConfigError):
        patient_hash("SYN-0001", "")


def test_numeric_ids_do_not_appear_in_hashes():
    for n in range(2000):
        raw = f"{n:08d}"
        assert raw not in patient_hash(raw, "k")


def test_sample_repr_hides_the_patient_key(tmp_path, make_dicom):
    make_dicom(tmp_path / "a" / "1.dcm", patient_id="SECRET-MRN-1", patient_name="Doe^Jane")
    make_dicom(tmp_path / "b" / "2.dcm", patient_id="SECRET-MRN-2")
    samples = index_folders(tmp_path)
    assert samples[0].patient_key == "SECRET-MRN-1"
    assert "SECRET" not in repr(samples) and "Doe" not in repr(samples)


# ------------------------------------------------------------------------------------------
# the shipped synthetic sample
# ------------------------------------------------------------------------------------------

@pytest.mark.skipif(not SAMPLE.is_dir(), reason="the medical sample data is not generated")
def test_sample_data_indexes_and_splits_by_patient():
    samples = index_folders(SAMPLE)
    assert 150 <= len(samples) <= 200
    assert {s.labels for s in samples} == {("normal",), ("nodule",)}
    keys = _patients(samples)
    assert 12 <= len(keys) <= 16 and all(k.startswith("SYN-") for k in keys)
    assert sum(1 for s in samples if s.path.suffix != ".dcm") > 0
    assert all(looks_like_dicom(s.path) for s in samples)
    splits = split_by_patient(samples, 0.2, 0.2, seed=0)
    assert all(splits.values())
    assert all({"normal", "nodule"} <= {lb for s in items for lb in s.labels} for items in splits.values())


@pytest.mark.skipif(not (SAMPLE.is_dir() and GENERATOR.is_file()), reason="sample data or generator missing")
def test_sample_generator_is_deterministic(tmp_path):
    subprocess.run([sys.executable, str(GENERATOR), "--out", str(tmp_path / "gen")], check=True,
                   capture_output=True, timeout=300)
    ours = {p.relative_to(tmp_path / "gen").as_posix(): p.read_bytes()
            for p in (tmp_path / "gen").rglob("*") if p.is_file()}
    shipped = {p.relative_to(SAMPLE).as_posix(): p.read_bytes() for p in SAMPLE.rglob("*") if p.is_file()}
    assert sorted(ours) == sorted(shipped)
    differing = [name for name in ours if ours[name] != shipped[name]]
    assert not differing, f"regenerate with `python scripts/make_medical_sample.py`: {differing[:5]}"
