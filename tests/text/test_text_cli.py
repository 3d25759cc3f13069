"""End to end on the bundled sample: train, pretrained beats scratch on the paraphrased test split, predict."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import pytest

from helpers import cli_exit_code as cli
from text_helpers import text_plugin_in


EPOCHS = "2"



# Every test using this fixture is marked slow: it trains the sample twice. test_multilabel_run_and_prediction
# keeps a quick run and prediction in `pytest -m "not slow"`.
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The sample trained twice with the recipe (2 epochs): from MiniLM's weights and from scratch."""
    root = tmp_path_factory.mktemp("text-runs")
    with text_plugin_in(root):
        codes = {name: cli("run", "--plugin", "text", "--output", name, "--epochs", EPOCHS, "--seed", "0", *extra)
                 for name, extra in (("pretrained", ()), ("scratch", ("--strategy", "scratch")))}
    return root, codes


def metrics(root: Path, name: str) -> dict:
    return json.loads((root / name / "metrics.json").read_text())


@pytest.mark.slow
def test_run_on_the_sample_writes_metrics(runs):
    root, codes = runs
    assert codes == {"pretrained": 0, "scratch": 0}
    m = metrics(root, "pretrained")
    assert m["status"] == "completed" and m["evaluated_on"] == "test" and m["epochs"] == int(EPOCHS)
    assert m["init"]["source"] == "all-minilm-l6-v2:pretrained" and m["init"]["loaded"] == 101
    assert m["class_names"] == ["account", "billing", "shipping", "technical"]
    assert {"accuracy", "f1_macro", "precision_per_class", "recall_per_class", "f1_per_class", "confusion_matrix",
            "auroc"} <= set(m["metrics"])
    assert set(m["metrics"]["f1_per_class"]) == set(m["class_names"])
    assert sum(map(sum, m["metrics"]["confusion_matrix"])) == 160
    data = m["data"]
    assert data["rows"] == {"train": 400, "val": 100, "test": 160} and data["split_source"] == "files"
    assert data["truncated"]["total"] == 0 and data["tokens"]["train"]["max"] < 32
    assert (root / "pretrained" / "checkpoints" / "best.pt").exists()
    shown = (root / "pretrained" / "train_batch0.html").read_text()  # the texts as the encoder gets them
    assert "[CLS]" in shown and "[SEP]" in shown and any(f"<td>{c}</td>" in shown for c in m["class_names"])


@pytest.mark.slow
def test_pretrained_beats_scratch_on_the_paraphrased_test_split(runs):
    root, _ = runs
    pretrained, scratch = metrics(root, "pretrained"), metrics(root, "scratch")
    assert scratch["init"]["source"] == "none" and scratch["strategy"] == "scratch"
    # Both learn the training wordings ...
    assert pretrained["history"][-1]["val"]["accuracy"] > 0.9
    assert scratch["history"][-1]["val"]["accuracy"] > 0.6
    # ... but only the pretrained model carries over to paraphrases it never saw.
    p, s = pretrained["metrics"], scratch["metrics"]
    print(f"test accuracy {p['accuracy']:.3f} vs {s['accuracy']:.3f}, f1_macro {p['f1_macro']:.3f} vs "
          f"{s['f1_macro']:.3f}")
    assert p["accuracy"] > 0.8
    assert p["accuracy"] > s["accuracy"] + 0.2 and p["f1_macro"] > s["f1_macro"] + 0.2


@pytest.fixture
def in_runs(runs, tlapp, monkeypatch):
    monkeypatch.setenv("TLAPP_PLUGINS", "text")
    return runs[0] / "pretrained", tlapp


def read_predictions(folder: Path) -> tuple[list[dict], list[dict]]:
    records = json.loads((folder / "predictions.json").read_text())
    rows = list(csv.DictReader(io.StringIO((folder / "predictions.csv").read_text())))
    return records, rows


@pytest.mark.slow
def test_predict_from_a_text_file_and_a_csv(in_runs, tmp_path):
    run, tlapp = in_runs
    texts = tmp_path / "tickets.txt"
    texts.write_text("my parcel never arrived and the courier does not answer\n\n"
                     "I was charged twice for the same order\n" + "refund " * 600 + "\n")
    table = tmp_path / "more.csv"
    table.write_text('id,text\n1,"I forgot my password, please help"\n2,the app crashes when I start it\n')
    code, out, err = tlapp("predict", "--run", str(run), "--output", "out", str(texts), str(table))
    assert code == 0, err
    records, rows = read_predictions(Path("out"))
    assert [r["source"] for r in records] == [f"{texts}:1", f"{texts}:3", f"{texts}:4", f"{table}:2", f"{table}:3"]
    assert [r["predicted"] for r in records[:2]] == ["shipping", "billing"]
    assert records[3]["predicted"] == "account" and records[4]["predicted"] == "technical"
    assert [r["truncated"] for r in records] == [False, False, True, False, False]
    for r in records:
        assert set(r["probabilities"]) == {"account", "billing", "shipping", "technical"}
        assert abs(sum(r["probabilities"].values()) - 1) < 1e-4
    assert [row["predicted"] for row in rows] == [r["predicted"] for r in records]
    assert list(rows[0]) == ["source", "text", "predicted", "p_account", "p_billing", "p_shipping", "p_technical",
                             "truncated"]


@pytest.mark.slow
def test_predict_from_stdin(in_runs, monkeypatch):
    run, tlapp = in_runs
    monkeypatch.setattr(sys, "stdin", io.StringIO("where is my package\nplease delete my profile\n"))
    code, out, err = tlapp("predict", "--run", str(run), "-")
    assert code == 0, err
    records, _ = read_predictions(run / "predictions")
    assert [(r["source"], r["predicted"]) for r in records] == [("<stdin>:1", "shipping"), ("<stdin>:2", "account")]


@pytest.mark.slow
def test_predict_reports_bad_inputs(in_runs, tmp_path):
    run, tlapp = in_runs
    code, _, err = tlapp("predict", "--run", str(run), str(tmp_path / "missing.txt"))
    assert code == 2 and "input not found" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": ""}\nnot json\n')
    code, _, err = tlapp("predict", "--run", str(run), str(bad))
    assert code == 2 and f"{bad}:2: empty text" in err and f"{bad}:3: bad JSON" in err


@pytest.mark.filterwarnings("ignore:No positive samples in targets")
@pytest.mark.slow
def test_evaluate_on_new_data_uses_the_runs_classes(in_runs, tmp_path):
    run, tlapp = in_runs
    subset = tmp_path / "few.csv"
    subset.write_text("text,label\nmy parcel is late,shipping\nI was charged twice,billing\n")
    code, out, err = tlapp("evaluate", "--run", str(run), "--data", str(subset), "--output", "eval.json")
    assert code == 0, err
    result = json.loads(Path("eval.json").read_text())
    assert result["samples"] == 2 and "accuracy" in result["metrics"]


def test_multilabel_run_and_prediction(tlapp, tmp_path, monkeypatch):
    monkeypatch.setenv("TLAPP_PLUGINS", "text")
    parts = {"billing": "I was charged twice", "shipping": "my parcel is late", "account": "I forgot my password"}
    combos = [["billing"], ["shipping"], ["account"], ["billing", "shipping"]]
    lines = []
    for i in range(32):
        labels = combos[i % 4]
        split = "test" if i >= 28 else "val" if i >= 24 else "train"
        lines.append(json.dumps({"text": " and ".join(parts[lb] for lb in labels) + f" (ticket {i})",
                                 "label": labels, "split": split}))
    data = tmp_path / "tickets.jsonl"
    data.write_text("\n".join(lines) + "\n")
    code, _, err = tlapp("run", "--plugin", "text", "--data", str(data), "--output", "ml", "--epochs", "1",
                         "--set", "model.multilabel=true", "--set", "train.batch_size=8")
    assert code == 0, err
    m = json.loads(Path("ml/metrics.json").read_text())
    assert m["data"]["split_source"] == "column" and m["data"]["rows"] == {"train": 24, "val": 4, "test": 4}
    assert m["class_names"] == ["account", "billing", "shipping"] and len(m["metrics"]["confusion_matrix"]) == 3
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n"))
    assert tlapp("predict", "--run", "ml", "-")[0] == 0
    records, rows = read_predictions(Path("ml/predictions"))
    assert isinstance(records[0]["predicted"], list)
    assert all(0 <= p <= 1 for p in records[0]["probabilities"].values())
    assert rows[0]["predicted"] == ";".join(records[0]["predicted"])
