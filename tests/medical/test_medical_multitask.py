"""Multi-task learning in the medical plugin: a manifest's label columns (``data.label_columns``) as tasks, an
empty cell masked out of its task, per-task metrics, predictions of every task, and the bundled sample's
``labels.csv`` reading the same files in the same order and splits as its class folders."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import read_metrics
from tlcore import MISSING, ClassifierSpec, DataBundle, DataError, TaskLabels
from tlcore.config import job_model, validate
from tlapp_medical import formats, labels
from tlapp_medical.task import SAMPLE_DATA, DicomClassification, DicomData

QUICK = ("--epochs", "1", "--batch-size", "8", "--set", "data.image_size=32")
TASKS = ("--set", "data.label_columns=[finding,view]")
VIEWS = ("ap", "pa", "lat")
BLANK_VIEW = {5, 12, 19, 26}  # rows (0-based) whose view cell is left empty


@pytest.fixture(autouse=True)
def only_image_plugins(monkeypatch):
    monkeypatch.setenv("TLAPP_PLUGINS", "medical,vision")


def image(finding: str, view: str, rng: np.random.Generator) -> np.ndarray:
    """A finding in the middle (a bright square), the view at the edge (a band top, bottom or left)."""
    pixels = rng.normal(1000, 30, (24, 24))
    if finding == "nodule":
        pixels[9:15, 9:15] += 400
    band = {"ap": np.s_[:4], "pa": np.s_[-4:], "lat": np.s_[:, :4]}[view]
    pixels[band] += 300
    return np.clip(pixels, 0, 4095).astype(np.uint16)


@pytest.fixture
def dataset(tmp_path, make_dicom) -> Path:
    """6 patients of 6 files; labels.csv with finding, view (4 cells empty) and a column no task reads."""
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    rows = ["path,finding,view,notes"]
    for p in range(6):
        for i in range(6):
            finding, view = ("normal", "nodule")[i % 2], VIEWS[(i + p) % 3]
            name = f"img/p{p}_{i}.dcm"
            make_dicom(root / name, patient_id=f"PT{p}", pixels=image(finding, view, rng))
            rows.append(f"{name},{finding},{'' if len(rows) - 1 in BLANK_VIEW else view},seen by a reader")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


# ---------------------------------------------------------------- the CLI, end to end

def test_multitask_run_reports_every_task_masks_empty_cells_and_predicts_both(dataset, tlapp):
    # --data is the folder: data.label_columns reads its labels.csv
    code, out, err = tlapp("run", "--plugin", "medical", "--data", str(dataset), "--output", "r", *QUICK, *TASKS,
                           "--strategy", "finetune", "--set", "train.monitor=view.accuracy",
                           "--set", "train.monitor_mode=max")
    assert code == 0, err
    m = read_metrics("r")
    assert m["class_names"] == {"finding": ["nodule", "normal"], "view": ["ap", "lat", "pa"]}
    assert m["monitor"] == "view.accuracy"
    final = m["metrics"]
    assert final["tasks"] == ["finding", "view"]
    for task in ("finding", "view"):
        assert {"loss", "accuracy", "auroc", "accuracy_ci", "auroc_ci", "confusion_matrix"} <= set(final[task])
    assert final["finding"]["positive_class"] == "nodule"  # named like no negative class: asked for by no one
    assert {"accuracy", "auroc", "auroc_ci"} <= set(final)  # the means over the tasks
    assert {"finding.auroc", "view.accuracy", "view.loss"} <= set(m["history"][0]["val"])
    # An empty view cell is a missing label: masked out of view only, finding keeps every file.
    splits = m["data"]["splits"]
    assert sum(s["labelled"]["view"] for s in splits.values()) == 36 - len(BLANK_VIEW)
    assert sum(s["labelled"]["finding"] for s in splits.values()) == 36
    assert m["data"]["labelled_for_training"] == {"finding": splits["train"]["labelled"]["finding"],
                                                  "view": splits["train"]["labelled"]["view"]}
    assert sum(s["classes"]["view"]["lat"] for s in splits.values()) == sum(
        1 for i in range(36) if VIEWS[(i % 6 + i // 6) % 3] == "lat" and i not in BLANK_VIEW)
    assert Path("r/train_batch0.png").read_bytes()[:4] == b"\x89PNG"
    assert "view.accuracy" in out or "view.accuracy" in Path("r/train.log").read_text()

    code, _, err = tlapp("predict", "--run", "r", "--output", "pred", str(dataset / "img" / "p0_0.dcm"),
                         str(dataset / "img" / "p1_1.dcm"))
    assert code == 0, err
    records = json.loads(Path("pred/predictions.json").read_text())
    assert [Path(r["file"]).name for r in records] == ["p0_0.dcm", "p1_1.dcm"]
    for r in records:
        assert set(r["predictions"]) == {"finding", "view"} and r["frame"] == 0
        for found in r["predictions"].values():
            assert sum(found["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
            assert found["predicted"] == max(found["probabilities"], key=found["probabilities"].get)
    rows = list(csv.DictReader(Path("pred/predictions.csv").open()))
    assert list(rows[0]) == ["file", "frame", "finding", "view", "p_finding_nodule", "p_finding_normal",
                             "p_view_ap", "p_view_lat", "p_view_pa"]

    code, _, err = tlapp("evaluate", "--run", "r", "--data", str(dataset / "labels.csv"), "--output", "ev.json")
    assert code == 0, err
    evaluated = json.loads(Path("ev.json").read_text())
    assert evaluated["samples"] == 36 and evaluated["metrics"]["tasks"] == ["finding", "view"]
    assert evaluated["metrics"]["view"]["confusion_matrix"] is not None


def test_uncertainty_weighting_trains_the_task_weights_with_the_heads(dataset, tlapp):
    code, out, err = tlapp("run", "--plugin", "medical", "--data", str(dataset / "labels.csv"), "--output", "u",
                           *QUICK, *TASKS, "--strategy", "linear-probe", "--set", "train.task_weighting=uncertainty")
    assert code == 0, err
    m = read_metrics("u")
    assert m["metrics"]["tasks"] == ["finding", "view"]
    assert "task_weights" in Path("u/train.log").read_text()


def test_data_check_reports_each_task(dataset, tlapp):
    code, out, err = tlapp("data", "check", "--plugin", "medical", "--data", str(dataset), *TASKS,
                           "--json", "check.json")
    assert code == 0, err
    report = json.loads(Path("check.json").read_text())
    assert report["classes"]["finding"] == {"normal": 18, "nodule": 18}
    assert sum(report["classes"]["view"].values()) == report["labelled"]["view"] == 36 - len(BLANK_VIEW)
    assert report["positive_class"] == {"finding": "nodule", "view": None}  # three views: macro averages
    assert {"classes", "labelled"} <= set(report["splits"]["train"])


# ---------------------------------------------------------------- what is refused, and how it is said

def test_a_misspelt_label_column_names_the_manifest_and_its_columns(dataset, tlapp):
    code, _, err = tlapp("run", "--plugin", "medical", "--data", str(dataset), *QUICK,
                         "--set", "data.label_columns=[fnding,view]")
    assert code == 2
    assert "no label column 'fnding'" in err and "did you mean 'finding'?" in err
    assert str(dataset / "labels.csv") in err and "path, finding, view, notes" in err


def test_a_bad_label_cell_names_the_file_and_the_row(dataset, tlapp):
    manifest = dataset / "labels.csv"
    lines = manifest.read_text().splitlines()
    lines[3] = lines[3].replace(",normal,", ",normal;nodule,")  # two findings for a single-label task
    manifest.write_text("\n".join(lines) + "\n")
    code, _, err = tlapp("run", "--plugin", "medical", "--data", str(manifest), *QUICK, *TASKS)
    assert code == 2
    assert f"{manifest}:4" in err and "p0_2.dcm" in err and "single-label" in err
    assert "model.heads.finding.multilabel=true" in err


def test_label_columns_need_a_manifest_and_a_manifest_with_them_needs_label_columns(dataset, tlapp):
    (dataset / "labels.csv").rename(dataset / "tasks.csv")
    code, _, err = tlapp("run", "--plugin", "medical", "--data", str(dataset), *QUICK, *TASKS)
    assert code == 2 and "no labels.csv" in err and "data.manifest" in err
    # Without label columns the manifest has no label column: the message says how to read its columns.
    code, _, err = tlapp("run", "--plugin", "medical", "--data", str(dataset / "tasks.csv"), *QUICK)
    assert code == 2 and "unknown manifest column 'finding'" in err and "data.label_columns" in err
    code, _, err = tlapp("run", "--plugin", "medical", "--data", str(dataset), *QUICK,
                         "--set", "data.manifest=tasks.csv", *TASKS, "--set", "data.format=dicom-folders")
    assert code == 2 and "data.format" in err


def test_label_columns_are_checked_as_options():
    assert DicomData(label_columns=[" finding", "view"]).label_columns == ["finding", "view"]
    for bad, said in (([], "list the manifest's label columns"), (["view", "View"], "named twice"),
                      (["finding", "patient_id"], "patient_id column")):
        with pytest.raises(ValueError, match=said):
            DicomData(label_columns=bad)


# ---------------------------------------------------------------- reading the manifest

def test_manifest_cells_become_targets_with_empty_cells_missing(dataset):
    samples = formats.read_manifest(dataset / "labels.csv", label_columns=["finding", "view"])
    assert len(samples) == 36
    blank = samples[5]
    assert blank.tasks == {"finding": ("nodule",), "view": None} and blank.labels == ("nodule",)
    specs = {"finding": ClassifierSpec(backbone="x"), "view": ClassifierSpec(backbone="x")}
    tasks = labels.task_labels(specs, samples)
    assert [(t.name, t.class_names) for t in tasks] == [("finding", ["nodule", "normal"]),
                                                        ("view", ["ap", "lat", "pa"])]
    target = labels.targets(tasks, blank)
    assert int(target["view"]) == MISSING and int(target["finding"]) == 0
    assert labels.labelled_counts(["finding", "view"], samples) == {"finding": 36, "view": 32}


def test_multilabel_task_cells_and_a_misspelt_reserved_column(tmp_path, make_dicom):
    make_dicom(tmp_path / "a.dcm", patient_id="A")
    make_dicom(tmp_path / "b.dcm", patient_id="B")
    (tmp_path / "m.csv").write_text("path,findings,view,patient_id\na.dcm,effusion;nodule,,P1\nb.dcm,,ap,P2\n")
    samples = formats.read_manifest(tmp_path / "m.csv", label_columns=["findings", "view"], multilabel={"findings"})
    assert samples[0].tasks == {"findings": ("effusion", "nodule"), "view": None}
    assert samples[1].labels == () and samples[1].patient_key == "P2"
    findings = TaskLabels("findings", ["effusion", "nodule"], multilabel=True)
    assert torch.equal(labels.targets([findings], samples[1])["findings"], torch.full((2,), float(MISSING)))
    (tmp_path / "m.csv").write_text("path,findings,patiet_id\na.dcm,nodule,P1\n")
    with pytest.raises(DataError, match="did you mean 'patient_id'"):
        formats.read_manifest(tmp_path / "m.csv", label_columns=["findings"])


def test_a_patient_without_any_first_task_label_still_splits():
    samples = [formats.Sample(Path(f"/d/{p}_{i}.dcm"), ("a" if p % 2 else "b",) if p else (), f"K{p}")
               for p in range(8) for i in range(2)]
    splits = formats.split_by_patient(samples, 0.25, 0.25, seed=0)
    assert sum(len(v) for v in splits.values()) == 16


def test_classical_baseline_is_single_task_only():
    job = validate(job_model(DicomData, ClassifierSpec), {"plugin": "medical", "model": {"backbone": "x"}})
    bundle = DataBundle(train=[], val=[], test=None, num_outputs={"a": 2}, class_names={"a": ["x", "y"]})
    assert DicomClassification().classical_inputs(job, bundle, "test") is None


# ---------------------------------------------------------------- the bundled sample

@pytest.mark.skipif(not (SAMPLE_DATA / "labels.csv").is_file(), reason="the medical sample data is not generated")
def test_the_sample_manifest_lists_the_folders_files_in_their_order_and_splits_alike():
    """So a multi-task run on the sample learns finding from the same files, in the same order and splits,
    as the single-task default (splits are stratified by the first task, finding)."""
    folders = formats.index_folders(SAMPLE_DATA)
    manifest = formats.read_manifest(SAMPLE_DATA / "labels.csv", label_columns=["finding", "view"])
    assert [s.path.resolve() for s in manifest] == [s.path.resolve() for s in folders]
    assert [s.labels for s in manifest] == [s.labels for s in folders]
    assert [s.patient_key for s in manifest] == [s.patient_key for s in folders]
    views = [s.tasks["view"] for s in manifest]
    assert {v for v in views if v} == {("axial_lower",), ("axial_upper",), ("frontal",)}
    assert 5 <= views.count(None) <= 20  # a few empty cells, masked in training
    for a, b in zip(formats.split_by_patient(folders, 0.2, None, seed=0).values(),
                    formats.split_by_patient(manifest, 0.2, None, seed=0).values()):
        assert [s.path.resolve() for s in a] == [s.path.resolve() for s in b]
