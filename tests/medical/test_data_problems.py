"""Medical data problems that do not stop a run are warnings (log and `data check`); paths that leave the
dataset are errors unless allowed."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from tlapp_medical.formats import index_dataset, index_folders, read_manifest
from tlcore import DataError


@pytest.fixture(autouse=True)
def only_image_plugins(monkeypatch):
    monkeypatch.setenv("TLAPP_PLUGINS", "medical,vision")


def pixels(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(900, 1100, (16, 16)).astype(np.uint16)


@pytest.fixture
def untidy(tmp_path, make_dicom) -> Path:
    """Two proper classes, a class of one image, an empty class folder and a broken symlink."""
    root = tmp_path / "data"
    for label in ("nodule", "normal"):
        for p in range(5):
            make_dicom(root / label / f"{p}.dcm", patient_id=f"{label}-{p}", pixels=pixels(p))
    make_dicom(root / "mass" / "only.dcm", patient_id="M1", pixels=pixels(9))
    (root / "effusion").mkdir()
    (root / "normal" / "gone.dcm").symlink_to(tmp_path / "deleted.dcm")
    return root


def test_untidy_folders_are_indexed_with_warnings(untidy):
    notes: list[str] = []
    samples = index_folders(untidy, warn=notes.append)
    assert sorted({s.labels[0] for s in samples}) == ["mass", "nodule", "normal"]
    assert any("broken symlink" in n and "gone.dcm" in n for n in notes)
    assert any("effusion" in n and "no files" in n for n in notes)


def test_data_check_and_build_data_report_the_warnings(untidy, tlapp, caplog, monkeypatch):
    code, out, err = tlapp("data", "check", "--plugin", "medical", "--data", str(untidy))
    assert code == 0, err
    report = json.loads(out)
    warnings = "\n".join(report["warnings"])
    assert "gone.dcm" in warnings and "effusion" in warnings and "'mass' has 1 file(s)" in warnings
    assert report["positive_class"] is None and "positive class" not in warnings  # 3 classes: macro, no question
    from tlcore.plugins import load_plugins
    from tlcore.run import make_context, resolve_job

    plugins = load_plugins("medical,vision")
    task, job = resolve_job(plugins, plugin="medical", config_file=None,
                            overrides={"data": {"path": str(untidy), "image_size": 16}, "train": {"device": "cpu"}})
    monkeypatch.setattr(logging.getLogger("tlapp"), "propagate", True)  # the CLI, run in-process, turns it off
    with caplog.at_level(logging.WARNING):
        data = task.build_data(job, make_context(plugins, job))
    assert data.class_names == ["mass", "nodule", "normal"]
    assert "gone.dcm" in caplog.text and "'mass' has 1 file(s)" in caplog.text
    assert any("mass" in w and "split has no files" in w for w in data.summary["warnings"])


def test_binary_data_check_names_the_positive_class(tmp_path, make_dicom, tlapp):
    for label in ("Nodule", "No Finding"):
        for p in range(3):
            make_dicom(tmp_path / "d" / label / f"{p}.dcm", patient_id=f"{label}{p}")
    code, out, err = tlapp("data", "check", "--plugin", "medical", "--data", str(tmp_path / "d"))
    assert code == 0, err
    assert json.loads(out)["positive_class"] == "Nodule"


# ------------------------------------------------------------------------------------------
# paths that leave the dataset
# ------------------------------------------------------------------------------------------

@pytest.fixture
def outside(tmp_path, make_dicom) -> Path:
    return make_dicom(tmp_path / "elsewhere" / "secret.dcm", patient_id="X")


def _dataset(tmp_path, make_dicom) -> Path:
    root = tmp_path / "data"
    for label in ("a", "b"):
        make_dicom(root / label / "1.dcm", patient_id=label)
    return root


@pytest.mark.parametrize("reference", ["../elsewhere/secret.dcm", "ABSOLUTE", "link.dcm"])
def test_manifest_paths_cannot_leave_its_folder(tmp_path, make_dicom, outside, reference):
    root = _dataset(tmp_path, make_dicom)
    (root / "link.dcm").symlink_to(outside)
    reference = str(outside) if reference == "ABSOLUTE" else reference
    manifest = root / "labels.csv"
    manifest.write_text(f"path,label\na/1.dcm,a\n{reference},b\n")
    with pytest.raises(DataError) as info:
        read_manifest(manifest)
    assert info.value.where == f"{manifest}:3" and "outside the dataset folder" in info.value.what
    assert "data.allow_outside_root=true" in info.value.fix
    samples = index_dataset(manifest, allow_outside_root=True)
    assert samples[1].path.resolve() == outside.resolve()


def test_a_missing_file_outside_is_refused_before_it_is_looked_for(tmp_path, make_dicom):
    root = _dataset(tmp_path, make_dicom)
    (root / "labels.csv").write_text("path,label\n../../../no/such/file,a\n")
    with pytest.raises(DataError, match="climbs out"):
        read_manifest(root / "labels.csv")


@pytest.mark.parametrize("link", ["file", "class folder"])
def test_folder_symlinks_cannot_leave_the_dataset(tmp_path, make_dicom, outside, link):
    root = _dataset(tmp_path, make_dicom)
    if link == "file":
        (root / "a" / "2.dcm").symlink_to(outside)
    else:
        (root / "c").symlink_to(outside.parent, target_is_directory=True)
    with pytest.raises(DataError) as info:
        index_folders(root)
    assert "outside the dataset folder" in info.value.what and info.value.where.startswith(str(root))
    assert len(index_folders(root, allow_outside_root=True)) == 3


def test_symlinks_inside_the_dataset_are_fine(tmp_path, make_dicom):
    root = _dataset(tmp_path, make_dicom)
    (root / "a" / "again.dcm").symlink_to(root / "b" / "1.dcm")
    (root / "m.csv").write_text("path,label\na/again.dcm,b\n")
    assert len(index_folders(root)) == 3 and len(read_manifest(root / "m.csv")) == 1


def test_the_option_reaches_the_task(tmp_path, make_dicom, outside, tlapp):
    root = _dataset(tmp_path, make_dicom)
    (root / "labels.csv").write_text(f"path,label\na/1.dcm,a\nb/1.dcm,b\n{outside},b\n")
    code, out, err = tlapp("data", "check", "--plugin", "medical", "--data", str(root / "labels.csv"))
    assert code == 2 and "outside the dataset folder" in err
    code, out, err = tlapp("data", "check", "--plugin", "medical", "--data", "data/labels.csv",  # relative
                           "--set", "data.allow_outside_root=true")
    assert code == 0, err
    assert json.loads(out)["files"] == 3
    assert os.path.exists(outside)
