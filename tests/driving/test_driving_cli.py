"""End to end through the CLI: train on KITTI and COCO folders, metrics, predictions, transfer, data check."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
from driving_helpers import FAST, cocoeval, kitti_line
from PIL import Image

from tlapp_driving.datasets import load_rgb
from tlapp_driving.formats import KITTI_CLASSES
from tlapp_driving.task import PALETTE
from tlcore.plugins import load_plugins
from tlcore.run import load_run

DEGENERATE = kitti_line("Car", (50, 10, 50, 30))
DONTCARE = "DontCare -1 -1 -10 60 5 90 20 -1 -1 -1 -1000 -1000 -1000 -10"


def read_metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def ground_truth(label_file: Path, width: int, height: int) -> dict:
    """The evaluation ground truth of one KITTI label file, built independently of the plugin's reader."""
    boxes, labels, ignore = [], [], []
    for line in label_file.read_text().splitlines():
        parts = line.split()
        x1, y1, x2, y2 = (float(v) for v in parts[4:8])
        x1, x2 = min(max(x1, 0), width), min(max(x2, 0), width)
        y1, y2 = min(max(y1, 0), height), min(max(y2, 0), height)
        if x2 <= x1 or y2 <= y1:
            continue
        if parts[0] == "DontCare":
            ignore.append([x1, y1, x2, y2])
        elif parts[0] in KITTI_CLASSES:
            boxes.append([x1, y1, x2, y2])
            labels.append(KITTI_CLASSES.index(parts[0]) + 1)
    per_class = [(b, k) for b in ignore for k in range(1, len(KITTI_CLASSES) + 1)]
    return {"boxes": torch.tensor(boxes).reshape(-1, 4), "labels": torch.tensor(labels, dtype=torch.long),
            "ignore_boxes": torch.tensor([b for b, _ in per_class]).reshape(-1, 4),
            "ignore_labels": torch.tensor([k for _, k in per_class], dtype=torch.long)}


def test_kitti_run_metrics_predictions_and_whole_detector_transfer(tlapp, make_kitti, tmp_path):
    data = make_kitti(10, empty=(3,), extra={1: [DEGENERATE, DONTCARE], 4: [DONTCARE],
                                              2: [kitti_line("Car", (80, 30, 110, 47))]})
    code, out, err = tlapp("run", "--plugin", "driving", "--data", str(data), "--output", "run1", *FAST,
                           "--set", "model.score_threshold=0.0", "--set", "model.draw_threshold=0.0",
                           "--set", "data.test_fraction=0.3", "--set", "augment=road-weather")
    assert code == 0, err
    label_file = data / "label_2" / "000001.txt"
    degenerate_at = f"{label_file}:{len(label_file.read_text().splitlines()) - 1}"
    assert "dropped 1 degenerate boxes" in err and degenerate_at in err
    run = tmp_path / "run1"
    assert (run / "train_batch0.png").read_bytes()[:4] == b"\x89PNG"  # augmented images with their boxes
    metrics = read_metrics(run)
    assert metrics["status"] == "completed" and metrics["evaluated_on"] == "test"
    assert metrics["data"]["read"]["degenerate_boxes_dropped"] == 1 and metrics["data"]["read"]["clipped_boxes"] == 1
    assert metrics["data"]["read"]["ignore_regions"] == 2
    result = metrics["metrics"]
    assert {"map", "map_50", "map_75", "mar_100", "map_per_class", "loss"} <= set(result)
    assert set(result["map_per_class"]) == set(KITTI_CLASSES)
    assert metrics["history"][0]["val"]["map_50"] >= 0 and "loss" in metrics["history"][0]["val"]
    # Classes without boxes in the test split are null with their reason, and left out of the averages.
    absent = [c for c in KITTI_CLASSES if result["map_per_class"][c] is None]
    assert {"Van", "Truck", "Cyclist"} <= set(absent) and result["undefined_classes"]["map_per_class"] == absent
    assert result["undefined"]["map_per_class"].endswith(": " + ", ".join(absent))
    assert result["averaged_over"]["map"] == len(KITTI_CLASSES) - len(absent)
    assert result["map_large"] is None and "larger than 96x96" in result["undefined"]["map_large"]
    assert isinstance(result["map_ci"], list) and 0 <= result["map_ci"][0] <= result["map_ci"][1] <= 1
    assert result["bootstrap"]["resamples"] == 100 and result["bootstrap"]["unit"] == "sample"
    assert metrics["data"]["split_sources"] == {"train": "carved", "val": "carved", "test": "carved"}

    # The pretrained Lite0 really is in the detector: every tensor of its trunk came from the ImageNet file.
    _, job, model, class_names, _, _ = load_run(load_plugins(), run)
    trunk = [k for k in model.state_dict() if k.startswith("detector.backbone.body.net.")]
    assert metrics["init"]["source"] == "fasterrcnn_lite0_fpn:imagenet"
    assert metrics["init"]["loaded"] == len(trunk) > 200 and metrics["init"]["skipped"] == []

    # metrics.json equals pycocotools' COCOeval of the same model's detections on the same images.
    files = [Path(p) for p in json.loads((run / "splits.json").read_text())["test"]]
    assert files
    targets, detections = [], []
    with torch.no_grad():
        for start in range(0, len(files), job.train.batch_size):
            chunk = files[start:start + job.train.batch_size]
            images = [torch.from_numpy(load_rgb(f)).permute(2, 0, 1).float() / 255 for f in chunk]
            detections += model(images)
            targets += [ground_truth(data / "label_2" / f"{f.stem}.txt", im.shape[2], im.shape[1])
                        for f, im in zip(chunk, images)]
    reference = cocoeval(targets, detections, KITTI_CLASSES)
    for key in ("map", "map_50", "map_75", "mar_100"):
        assert abs(result[key] - reference[key]) < 1e-6, key
    assert result["map_per_class"] == {k: (None if v is None else result["map_per_class"][k])
                                       for k, v in reference["map_per_class"].items()}
    for name, value in reference["map_per_class"].items():
        assert value is None or abs(result["map_per_class"][name] - value) < 1e-6

    # Predictions: JSON with every detection, and the images with the boxes drawn.
    inputs = [str(data / "image_2" / "000000.png"), str(data / "image_2" / "000003.png")]
    code, out, err = tlapp("predict", "--run", "run1", "--output", "pred", *inputs)
    assert code == 0, err
    records = json.loads((tmp_path / "pred" / "detections.json").read_text())
    assert [r["file"] for r in records] == inputs
    first = records[0]
    assert first["detections"] and {d["label"] for d in first["detections"]} <= set(KITTI_CLASSES)
    assert all(len(d["box"]) == 4 and 0 <= d["score"] <= 1 for d in first["detections"])
    drawn = np.asarray(Image.open(first["drawn"]).convert("RGB"))
    original = load_rgb(inputs[0])
    assert drawn.shape == original.shape and (drawn != original).any(axis=2).mean() > 0.05
    colour = PALETTE[class_names.index(first["detections"][-1]["label"]) % len(PALETTE)]
    rgb = tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
    assert (drawn == rgb).all(axis=2).sum() > (original == rgb).all(axis=2).sum() + 20
    assert (tmp_path / "pred" / "label_2" / "000000.txt").read_text().count("\n") == len(first["detections"])
    rows = list(csv.DictReader((tmp_path / "pred" / "detections.csv").read_text().splitlines()))
    assert len(rows) == sum(len(r["detections"]) for r in records)
    assert rows[0]["file"] == inputs[0] and float(rows[0]["x2"]) == first["detections"][0]["box"][2]

    # run:DIR transfers the whole detector; a predictor for another class count is reported as skipped.
    code, out, err = tlapp("run", "--plugin", "driving", "--data", str(data), "--output", "run2", *FAST,
                           "--init", "run:run1", "--set", "data.classes=[Car,Pedestrian]")
    assert code == 0, err
    init = read_metrics(tmp_path / "run2")["init"]
    skipped = sorted(s["name"] for s in init["skipped"])
    predictor = "detector.roi_heads.box_predictor"
    assert skipped == [f"{predictor}.bbox_pred.bias", f"{predictor}.bbox_pred.weight",
                       f"{predictor}.cls_score.bias", f"{predictor}.cls_score.weight"]
    assert all("shape" in s["reason"] for s in init["skipped"])
    assert init["loaded"] == len(model.state_dict()) - 4 and init["not_initialised"] == 4


def test_strict_mode_stops_before_training_naming_file_and_line(tlapp, make_kitti):
    data = make_kitti(4, extra={2: [DEGENERATE]})
    line = len((data / "label_2" / "000002.txt").read_text().splitlines())
    code, out, err = tlapp("run", "--plugin", "driving", "--data", str(data), "--output", "strict", *FAST,
                           "--set", "data.strict=true")
    assert code == 2
    assert f"000002.txt:{line}" in err and "degenerate box" in err


def test_coco_folder_trains(tlapp, make_coco, tmp_path):
    data = make_coco(8)
    code, out, err = tlapp("run", "--plugin", "driving", "--data", str(data), "--output", "coco_run", *FAST,
                           "--set", "data.test_fraction=0")
    assert code == 0, err
    metrics = read_metrics(tmp_path / "coco_run")
    assert metrics["class_names"] == ["car", "person"] and metrics["data"]["format"] == "coco"
    assert metrics["evaluated_on"] == "val" and set(metrics["metrics"]["map_per_class"]) == {"car", "person"}


def test_data_check_reports_sizes_classes_and_box_problems(tlapp, make_kitti, tmp_path):
    data = make_kitti(6, size=[(96, 48), (64, 48)], empty=(4,), extra={1: [DEGENERATE, DONTCARE]})
    code, out, err = tlapp("data", "check", "--plugin", "driving", "--data", str(data))
    assert code == 0, err
    report = json.loads(out)
    assert report["format"] == "kitti" and report["images"] == 6
    assert report["image_sizes"] == {"96x48": 3, "64x48": 3}
    assert report["empty_images"] == 1 and report["degenerate_boxes_dropped"] == 1 and report["ignore_regions"] == 1
    assert set(report["objects_per_class"]) <= {"Car", "Pedestrian"} and report["objects"] > 0
    code, out, err = tlapp("data", "check", "--plugin", "driving", "--data", str(data), "--set", "data.strict=true")
    assert code == 0 and json.loads(out)["problem_count"] == 1  # strict: listed as a problem, not raised
    code, out, err = tlapp("data", "check", "--plugin", "driving")  # the bundled sample
    assert code == 0, err
    sample = json.loads(out)
    assert sample["images"] >= 60 and sample["empty_images"] > 0 and sample["problem_count"] == 0
