"""write_predictions: the records as JSON, a table as CSV, both written atomically."""

from __future__ import annotations

import csv
import json

from tlcore import write_predictions


def test_records_as_json_and_rows_as_csv(tmp_path):
    records = [{"file": "a.dcm", "predicted": ["nodule", "effusion"], "probabilities": {"nodule": 0.9}},
               {"file": "b.dcm", "predicted": [], "probabilities": {"nodule": 0.1}}]
    rows = [{"file": r["file"], "predicted": r["predicted"], "p_nodule": f"{r['probabilities']['nodule']:.6f}",
             "flagged": i == 0, "note": None} for i, r in enumerate(records)]
    paths = write_predictions(records, tmp_path / "out", rows=rows, delimiter="|")
    assert paths == [tmp_path / "out" / "predictions.json", tmp_path / "out" / "predictions.csv"]
    assert json.loads(paths[0].read_text()) == records
    text = paths[1].read_text()
    assert "\r" not in text
    assert list(csv.DictReader(text.splitlines())) == [
        {"file": "a.dcm", "predicted": "nodule|effusion", "p_nodule": "0.900000", "flagged": "true", "note": ""},
        {"file": "b.dcm", "predicted": "", "p_nodule": "0.100000", "flagged": "false", "note": ""},
    ]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["predictions.csv", "predictions.json"]


def test_records_are_the_default_table_and_columns_are_their_keys(tmp_path):
    records = [{"text": "grüße, \"quoted\"", "label": "a"}, {"text": "b", "score": 2, "box": {"x": 1}}]
    json_path, csv_path = write_predictions(records, tmp_path, stem="detections")
    assert json_path.name == "detections.json" and "grüße" in json_path.read_text(encoding="utf-8")
    assert list(csv.DictReader(csv_path.read_text(encoding="utf-8").splitlines())) == [
        {"text": "grüße, \"quoted\"", "label": "a", "score": "", "box": ""},
        {"text": "b", "label": "", "score": "2", "box": '{"x": 1}'},
    ]
