"""COCO-style detection metrics through torchmetrics' MeanAveragePrecision (pycocotools backend).

Reported: ``map`` (AP averaged over IoU 0.50:0.95), ``map_50``, ``map_75``,
``mar_100`` (recall with up to 100 detections per image), ``map_per_class``
({class: AP}, null for a class without ground truth in the split), the
per-size APs, and ``loss`` (the summed training losses of the RPN and RoI
heads on the split). Ignore regions (KITTI DontCare, COCO crowd) are passed as
``iscrowd`` ground truth: detections inside them count neither way.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tlcore import Evaluator

SCALARS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_1", "mar_10", "mar_100")


def mean_average_precision():
    """torchmetrics' MeanAveragePrecision with pycocotools' own threshold grids.

    torchmetrics builds its default IoU and recall thresholds in float32
    (0.30000001 instead of 0.3), which shifts the interpolated precision
    whenever a recall lands exactly on a grid point, a common case with few
    objects. pycocotools' float64 grids are passed instead, so the numbers are
    exactly COCOeval's.
    """
    import numpy as np
    from torchmetrics.detection import MeanAveragePrecision

    iou_thresholds = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True).tolist()
    rec_thresholds = np.linspace(0.0, 1.0, int(np.round(1.0 / 0.01)) + 1, endpoint=True).tolist()
    return MeanAveragePrecision(box_format="xyxy", iou_type="bbox", class_metrics=True, backend="pycocotools",
                                iou_thresholds=iou_thresholds, rec_thresholds=rec_thresholds)


def metric_targets(targets: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """torchmetrics ground truth: objects plus ignore regions marked ``iscrowd``."""
    out = []
    for t in targets:
        boxes, labels = t["boxes"].float().cpu(), t["labels"].long().cpu()
        ignore_boxes = t.get("ignore_boxes", torch.zeros(0, 4)).float().cpu()
        ignore_labels = t.get("ignore_labels", torch.zeros(0, dtype=torch.long)).long().cpu()
        out.append({
            "boxes": torch.cat([boxes, ignore_boxes]),
            "labels": torch.cat([labels, ignore_labels]),
            "iscrowd": torch.cat([torch.zeros(len(labels), dtype=torch.long),
                                  torch.ones(len(ignore_labels), dtype=torch.long)]),
        })
    return out


def metric_predictions(detections: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    return [{"boxes": d["boxes"].float().cpu(), "scores": d["scores"].float().cpu(),
             "labels": d["labels"].long().cpu()} for d in detections]


def summarise(result: dict[str, torch.Tensor], class_names: list[str]) -> dict[str, Any]:
    """torchmetrics' result as JSON-ready numbers; per-class AP keyed by class name."""
    out: dict[str, Any] = {k: float(result[k]) for k in SCALARS if k in result}
    per_class: dict[str, float | None] = {c: None for c in class_names}
    classes = result.get("classes", torch.zeros(0)).reshape(-1).tolist()
    values = result.get("map_per_class", torch.zeros(0)).reshape(-1).tolist()
    for label, value in zip(classes, values):
        if 1 <= int(label) <= len(class_names):
            per_class[class_names[int(label) - 1]] = None if value < 0 else float(value)
    out["map_per_class"] = per_class
    return out


class DetectionEvaluator(Evaluator):
    def __init__(self, class_names: list[str]):
        self.class_names = list(class_names)
        self.metric = mean_average_precision()
        self.loss_sum, self.count = 0.0, 0

    def update(self, model: nn.Module, batch: Any) -> None:
        images, targets = batch
        losses, detections = model.losses_and_detections(images, targets)
        self.loss_sum += float(sum(v.float() for v in losses.values())) * len(images)
        self.count += len(images)
        self.metric.update(metric_predictions(detections), metric_targets(targets))

    def compute(self) -> dict[str, Any]:
        out = summarise(self.metric.compute(), self.class_names)
        out["loss"] = self.loss_sum / max(self.count, 1)
        return out
