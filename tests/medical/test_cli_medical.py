"""End-to-end: `tlapp run/predict/evaluate/data check --plugin medical` on small DICOM folders."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from helpers import read_metrics

PATIENTS = {  # made-up identities that must never reach any output file
    "PID-7731-SECRET": "Quixotewater^Jane",
    "PID-8842-SECRET": "Zebediahson^Richard",
    "PID-9953-SECRET": "Marchbankley^Alice",
    "PID-1064-SECRET": "Fitzwilliamo^Bob",
    "PID-2175-SECRET": "Brownlowesby^Carol",
    "PID-3286-SECRET": "Taylorsfield^Dave",
}
QUICK = ("--epochs", "1", "--batch-size", "8", "--set", "data.image_size=32")
# Neither class is named like a negative one (normal, ...), so the positive class is named.
FAST = (*QUICK, "--set", "model.positive_class=lesion")


@pytest.fixture(autouse=True)
def only_image_plugins(monkeypatch):
    monkeypatch.setenv("TLAPP_PLUGINS", "medical,vision")


def image(label: str, rng: np.random.Generator) -> np.ndarray:
    pixels = rng.normal(1000, 30, (24, 24))
    if label == "lesion":
        pixels[8:16, 8:16] += 400
    return np.clip(pixels, 0, 4095).astype(np.uint16)


@pytest.fixture
def dataset(tmp_path, make_dicom) -> Path:
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for p, (pid, name) in enumerate(PATIENTS.items()):
        for label in ("lesion", "clear"):
            for i in range(3):
                make_dicom(root / label / f"{pid}_{i}", patient_id=pid, patient_name=name,
                           pixels=image(label, rng), window=(40 + p, 400), PatientBirthDate="19610203",
                           InstitutionName="St Secret Hospital")
    return root


def test_run_on_dicom_folder_writes_clinical_metrics(dataset, tlapp):
    code, out, err = tlapp("run", "--plugin", "medical", "--data", str(dataset), "--output", "r", *FAST)
    assert code == 0, err
    m = read_metrics("r")
    assert m["plugin"] == "medical" and m["task"] == "dicom-classification"
    assert m["init"]["source"] == "efficientnet_lite0:imagenet" and m["init"]["loaded"] == 294
    for key in ("accuracy", "f1_macro", "auroc", "auroc_per_class", "sensitivity", "specificity",
                "confusion_matrix"):
        assert key in m["metrics"], key
    assert set(m["metrics"]["auroc_per_class"]) == {"clear", "lesion"}
    assert m["metrics"]["positive_class"] == "lesion"
    assert m["metrics"]["sensitivity"] == pytest.approx(m["metrics"]["recall_per_class"]["lesion"])
    assert m["metrics"]["specificity"] == pytest.approx(m["metrics"]["recall_per_class"]["clear"])
    assert np.asarray(m["metrics"]["confusion_matrix"]).sum() == m["data"]["splits"]["test"]["frames"]
    # What training saw: the first batches as PNG grids of windowed, augmented frames.
    assert all(Path(f"r/train_batch{i}.png").read_bytes()[:4] == b"\x89PNG" for i in (0, 1))


def test_splits_are_by_patient(dataset, tlapp):
    assert tlapp("run", "--plugin", "medical", "--data", str(dataset), "--output", "r", *FAST)[0] == 0
    splits = json.loads(Path("r/splits.json").read_text())
    owners = {}
    for split, files in splits.items():
        for f in files:
            owners.setdefault(f["patient"], set()).add(split)
    assert owners and all(len(s) == 1 for s in owners.values())
    assert all(n > 0 for n in (len(splits["train"]), len(splits["val"]), len(splits["test"])))


def test_resumed_run_keeps_its_split_listing(dataset, tlapp):
    """The salt of the patient hashes is random and never stored: a resume keeps splits.json as written."""
    code, _, err = tlapp("run", "--plugin", "medical", "--data", str(dataset), "--output", "r", *FAST)
    assert code == 0, err
    before = Path("r/splits.json").read_bytes()
    code, _, err = tlapp("run", "--plugin", "medical", "--data", str(dataset), "--output", "r", "--resume",
                         *FAST[:-4], "--epochs", "2", "--set", "model.positive_class=lesion",
                         "--set", "data.image_size=32")
    assert code == 0, err
    assert read_metrics("r")["epochs"] == 2
    assert Path("r/splits.json").read_bytes() == before


def test_no_identifying_attribute_reaches_any_output(dataset, tlapp):
    assert tlapp("run", "--plugin", "medical", "--data", str(dataset), "--output", "r", *FAST)[0] == 0
    assert tlapp("predict", "--run", "r", str(dataset / "lesion"))[0] == 0
    assert tlapp("evaluate", "--run", "r")[0] == 0
    code, out, _ = tlapp("data", "check", "--plugin", "medical", "--data", str(dataset), "--json", "r/check.json")
    assert code == 0
    # Long, distinctive strings, so that chance bytes in binary checkpoints cannot match.
    secrets = [*PATIENTS, *PATIENTS.values(), *(n.split("^")[0] for n in PATIENTS.values()), "19610203",
               "St Secret Hospital"]
    # Paths name the patient IDs on purpose here (files are named after them), so look only at contents
    # that are not file paths: strip the dataset's own paths before searching.
    files = [p for p in Path("r").rglob("*") if p.is_file()]
    assert len(files) >= 8
    for path in files:
        data = path.read_bytes().replace(str(dataset).encode(), b"")
        for name in set(dataset.rglob("*")):
            data = data.replace(name.name.encode(), b"")
        for secret in secrets:
            assert secret.encode() not in data, f"{secret} found in {path}"
    for secret in secrets:
        assert secret not in out.replace(str(dataset), "")


def test_corrupt_files_stop_the_run_unless_skipped(dataset, tlapp):
    (dataset / "lesion" / "empty.dcm").write_bytes(b"")
    (dataset / "clear" / "notes").write_text("not an image")
    truncated = dataset / "clear" / "truncated.dcm"
    truncated.write_bytes((dataset / "clear" / f"{next(iter(PATIENTS))}_0").read_bytes()[:400])
    code, _, err = tlapp("run", "--plugin", "medical", "--data", str(dataset), "--output", "r", *FAST)
    assert code == 2
    assert "3 of 39 files cannot be used" in err
    for name in ("empty.dcm", "notes", "truncated.dcm"):
        assert name in err
    assert "data.on_error=skip" in err and "Traceback" not in err
    assert not Path("r/checkpoints/last.pt").exists()

    code, _, err = tlapp("run", "--plugin", "medical", "--data", str(dataset), "--output", "s", *FAST,
                         "--set", "data.on_error=skip")
    assert code == 0, err
    skipped = json.loads(Path("s/skipped_files.json").read_text())
    assert sorted(Path(s["file"]).name for s in skipped) == ["empty.dcm", "notes", "truncated.dcm"]
    assert read_metrics("s")["data"]["skipped_files"] == 3


def test_predict_writes_probabilities_per_file(dataset, tlapp):
    assert tlapp("run", "--plugin", "medical", "--data", str(dataset), "--output", "r", *FAST)[0] == 0
    code, out, err = tlapp("predict", "--run", "r", "--output", "pred", str(dataset / "lesion"),
                           str(dataset / "clear" / f"{next(iter(PATIENTS))}_1"))
    assert code == 0, err
    records = json.loads(Path("pred/predictions.json").read_text())
    assert len(records) == 19
    for r in records:
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert r["predicted"] == max(r["probabilities"], key=r["probabilities"].get)
    rows = list(csv.DictReader(Path("pred/predictions.csv").open()))
    assert len(rows) == 19 and {"file", "frame", "predicted", "p_clear", "p_lesion"} <= set(rows[0])
    code, _, err = tlapp("predict", "--run", "r", "missing.dcm")
    assert code == 2 and "input not found" in err


def test_manifest_with_explicit_splits_and_multilabel(tmp_path, make_dicom, tlapp):
    root = tmp_path / "m"
    rng = np.random.default_rng(1)
    rows = ["path,label,patient_id,split"]
    for p in range(6):
        split = ["train", "train", "train", "val", "test", "test"][p]
        for i, labels in enumerate(["effusion", "nodule;effusion", "nodule", "none"]):
            name = f"img/{p}_{i}.dcm"
            make_dicom(root / name, patient_id=f"X{p}", pixels=image("lesion" if "nodule" in labels else "c", rng))
            rows.append(f"{name},{labels},P{p},{split}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    code, _, err = tlapp("run", "--plugin", "medical", "--data", str(root / "labels.csv"), "--output", "r",
                         *QUICK, "--set", "model.multilabel=true")
    assert code == 0, err
    m = read_metrics("r")
    assert m["class_names"] == ["effusion", "nodule", "none"]
    assert m["data"]["splits"]["val"]["files"] == 4 and m["data"]["splits"]["test"]["files"] == 8
    assert isinstance(m["metrics"]["confusion_matrix"], list) and len(m["metrics"]["confusion_matrix"]) == 3
    code, _, err = tlapp("run", "--plugin", "medical", "--data", str(root / "labels.csv"), "--output", "x", *QUICK)
    assert code == 2 and "model.multilabel=true" in err


def test_data_check_reports_without_training(dataset, tlapp):
    (dataset / "clear" / "broken.dcm").write_bytes(b"DICM but not really")
    code, out, err = tlapp("data", "check", "--plugin", "medical", "--data", str(dataset), "--json", "check.json")
    assert code == 0, err
    report = json.loads(Path("check.json").read_text())
    assert report == json.loads(out)
    assert report["files"] == 37 and report["usable_files"] == 36
    assert report["modalities"] == {"CT": 36}
    assert report["image_sizes"] == {"24x24": 36}
    assert [Path(u["file"]).name for u in report["undecodable_files"]] == ["broken.dcm"]
    assert report["classes"] == {"lesion": 18, "clear": 18} or report["classes"] == {"clear": 18, "lesion": 18}
    assert report["patients"] == 6
    assert sum(s["patients"] for s in report["splits"].values()) == 6
    assert report["positive_class"] is None  # lesion and clear: the question is a warning here, an error in run
    assert any("--set model.positive_class=NAME" in w for w in report["warnings"])


def test_each_file_is_decoded_once_across_runs(dataset, tlapp, monkeypatch):
    import tlapp_medical.task as task_module

    calls = []
    original = task_module.read_dicom
    monkeypatch.setattr(task_module, "read_dicom", lambda path, s: calls.append(path) or original(path, s))
    assert tlapp("run", "--plugin", "medical", "--data", str(dataset), "--output", "a", *FAST)[0] == 0
    assert len(calls) == 36
    assert tlapp("run", "--plugin", "medical", "--data", str(dataset), "--output", "b", *FAST)[0] == 0
    assert len(calls) == 36  # second run: all from the cache
    assert tlapp("run", "--plugin", "medical", "--data", str(dataset), "--output", "c", *FAST,
                 "--set", "data.window=lung")[0] == 0
    assert len(calls) == 72  # other pixel settings: decoded again


def test_bad_window_fails_before_reading_data(dataset, tlapp):
    code, _, err = tlapp("run", "--plugin", "medical", "--data", str(dataset), "--set", "data.window=lugn")
    assert code == 2 and "'data.window'" in err and "unknown window 'lugn'" in err and "lung" in err
    code, _, err = tlapp("run", "--plugin", "medical", "--data", str(dataset), "--set", "data.frames=last")
    assert code == 2 and "'data.frames'" in err


@pytest.mark.slow
def test_sample_data_main_job_runs(tlapp):
    code, out, err = tlapp("run", "--plugin", "medical", "--output", "main", "--epochs", "1")
    assert code == 0, err
    m = read_metrics("main")
    assert m["data"]["files"] == 183 and m["data"]["skipped_files"] == 0
    assert m["init"]["loaded"] == 294
    assert sum(s["frames"] for s in m["data"]["splits"].values()) == 183  # the 3-frame file gives its middle
    code, _, err = tlapp("run", "--plugin", "medical", "--output", "each", "--epochs", "1", "--set", "data.frames=each",
                         "--set", "data.image_size=32")
    assert code == 0, err
    assert sum(s["frames"] for s in read_metrics("each")["data"]["splits"].values()) == 185
