"""Helpers of the driving tests: tiny detection datasets and job settings that train in seconds."""

from __future__ import annotations

import contextlib
import io

import numpy as np
from PIL import Image, ImageDraw
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

# Small everything: the tests check behaviour, not accuracy.
FAST = ["--set", "model.fpn_channels=32", "--set", "model.box_head_size=32",
        "--set", "model.rpn_batch_size_per_image=32", "--set", "model.roi_batch_size_per_image=32",
        "--set", "model.proposals_train=40", "--set", "model.proposals_test=30",
        "--set", "train.batch_size=4", "--epochs", "1",
        "--set", "evaluation.bootstrap=100"]  # intervals still made, from fewer resamples

KITTI_TAIL = "0.00 0 -10 {x1} {y1} {x2} {y2} 1.5 1.8 4.2 0 1.65 20 0"


def kitti_line(kind: str, box) -> str:
    x1, y1, x2, y2 = box
    return f"{kind} " + KITTI_TAIL.format(x1=x1, y1=y1, x2=x2, y2=y2)


def scene(width: int, height: int, objects, seed: int) -> Image.Image:
    """Grey road, cars as red boxes, pedestrians as tall yellow boxes."""
    rng = np.random.RandomState(seed)
    image = Image.new("RGB", (width, height), (110, 110, 115))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 0, width, height * 0.35], fill=(140, 180, 230))
    for kind, (x1, y1, x2, y2) in objects:
        colour = {"Car": (200, 30, 30), "Pedestrian": (240, 210, 40), "Van": (40, 160, 60)}.get(kind, (20, 20, 20))
        draw.rectangle([x1, y1, x2, y2], fill=colour)
    arr = np.asarray(image).astype(np.int16) + rng.randint(-4, 5, (height, width, 3))
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def random_objects(rng: np.random.RandomState, width: int, height: int):
    objects = []
    for _ in range(rng.randint(1, 3)):
        w = rng.randint(14, 28)
        h = int(w * 0.7)
        x, y = rng.randint(0, width - w), rng.randint(height // 3, height - h)
        objects.append(("Car", (x, y, x + w, y + h)))
    if rng.rand() < 0.6:
        h = rng.randint(16, 26)
        w = h // 3
        x, y = rng.randint(0, width - w), rng.randint(height // 4, height - h)
        objects.append(("Pedestrian", (x, y, x + w, y + h)))
    return objects


def cocoeval(targets, detections, class_names: list[str]) -> dict:
    """pycocotools' evaluation, ground truth with iscrowd for ignore regions; returns our metric names."""
    images, annotations, results = [], [], []
    for image_id, (t, d) in enumerate(zip(targets, detections), start=1):
        images.append({"id": image_id, "width": 200, "height": 100})
        rows = [(b, lb, 0) for b, lb in zip(t["boxes"].tolist(), t["labels"].tolist())]
        rows += [(b, lb, 1) for b, lb in zip(t["ignore_boxes"].tolist(), t["ignore_labels"].tolist())]
        for (x1, y1, x2, y2), label, crowd in rows:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": label,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                "iscrowd": crowd})
        for (x1, y1, x2, y2), score, label in zip(d["boxes"].tolist(), d["scores"].tolist(), d["labels"].tolist()):
            results.append({"image_id": image_id, "category_id": label, "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "score": score})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations,
                      "categories": [{"id": k} for k in range(1, len(class_names) + 1)]}
        gt.createIndex()
        evaluation = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = evaluation.stats
    per_class = {}
    for k, name in enumerate(class_names):
        precision = evaluation.eval["precision"][:, :, k, 0, 2]  # all IoUs, recalls; area all, 100 detections
        valid = precision[precision > -1]
        per_class[name] = float(valid.mean()) if valid.size else None
    return {"map": stats[0], "map_50": stats[1], "map_75": stats[2], "mar_1": stats[6], "mar_10": stats[7],
            "mar_100": stats[8], "map_per_class": per_class}


def torchmetrics_map(predictions, targets) -> dict:
    """torchmetrics' MeanAveragePrecision (pycocotools backend, pycocotools' float64 threshold grids, per-class
    results) on torchmetrics-format predictions and targets: the second reference for the evaluator."""
    from torchmetrics.detection import MeanAveragePrecision

    iou_thresholds = np.linspace(0.5, 0.95, 10).tolist()
    rec_thresholds = np.linspace(0.0, 1.0, 101).tolist()
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", class_metrics=True, backend="pycocotools",
                                  iou_thresholds=iou_thresholds, rec_thresholds=rec_thresholds)
    metric.update(predictions, targets)
    return metric.compute()
