"""The evaluator's COCO metrics equal pycocotools' own COCOeval on the same detections."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from driving_helpers import cocoeval

from tlapp_driving.metrics import DetectionEvaluator

CLASSES = ["Car", "Van", "Pedestrian"]


def synthetic(seed: int):
    """Ground truth (with DontCare regions replicated per class) and noisy detections, some images empty."""
    rng = np.random.RandomState(seed)
    targets, detections = [], []
    for i in range(8):
        n = 0 if i in (2, 5) else rng.randint(1, 5)
        xy = rng.uniform(0, 150, (n, 2))
        wh = rng.uniform(8, 45, (n, 2))
        boxes = torch.tensor(np.hstack([xy, xy + wh]), dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor(rng.choice([1, 3], n) if i < 6 else rng.randint(1, 4, n), dtype=torch.long)
        ignore = torch.tensor([[150.0, 5.0, 195.0, 30.0]] * 3 if i % 3 == 0 else [], dtype=torch.float32).reshape(-1, 4)
        ignore_labels = torch.tensor([1, 2, 3] if i % 3 == 0 else [], dtype=torch.long)
        targets.append({"boxes": boxes, "labels": labels, "ignore_boxes": ignore, "ignore_labels": ignore_labels})
        keep = rng.rand(n) < 0.8
        jitter = torch.tensor(rng.normal(0, 3, (n, 4)), dtype=torch.float32)
        det_boxes = (boxes + jitter)[torch.from_numpy(keep)]
        det_labels = labels[torch.from_numpy(keep)].clone()
        flip = torch.from_numpy(rng.rand(len(det_labels)) < 0.15)
        det_labels[flip] = 2
        fp = rng.randint(0, 3)
        fxy = rng.uniform(0, 150, (fp, 2))
        fake = torch.tensor(np.hstack([fxy, fxy + 20]), dtype=torch.float32).reshape(-1, 4)
        in_dontcare = torch.tensor([[160.0, 8.0, 185.0, 25.0]]) if i % 3 == 0 else torch.zeros(0, 4)
        all_boxes = torch.cat([det_boxes, fake, in_dontcare])
        all_labels = torch.cat([det_labels, torch.tensor(rng.randint(1, 4, fp)),
                                torch.ones(len(in_dontcare), dtype=torch.long)])
        scores = torch.tensor(rng.uniform(0.05, 1.0, len(all_boxes)), dtype=torch.float32)
        detections.append({"boxes": all_boxes, "labels": all_labels, "scores": scores})
    return targets, detections


class Replay(torch.nn.Module):
    """Stands in for the detector: returns the given detections batch by batch."""

    def __init__(self, detections):
        super().__init__()
        self.detections = list(detections)

    def losses_and_detections(self, images, targets):
        out, self.detections = self.detections[:len(images)], self.detections[len(images):]
        return {"loss_a": torch.tensor(0.5), "loss_b": torch.tensor(0.25)}, out


@pytest.mark.parametrize("seed", range(5))
def test_metrics_equal_pycocotools(seed):
    targets, detections = synthetic(seed)
    evaluator = DetectionEvaluator(CLASSES)
    model = Replay(detections)
    for start in range(0, len(targets), 3):
        batch = targets[start:start + 3]
        evaluator.update(model, ([torch.zeros(3, 100, 200)] * len(batch), batch))
    ours = evaluator.compute()
    reference = cocoeval(targets, detections, CLASSES)
    for key in ("map", "map_50", "map_75", "mar_1", "mar_10", "mar_100"):
        assert ours[key] == pytest.approx(reference[key], abs=1e-6), key
    assert set(ours["map_per_class"]) == set(CLASSES)
    for name in CLASSES:
        if reference["map_per_class"][name] is None:
            assert ours["map_per_class"][name] is None
        else:
            assert ours["map_per_class"][name] == pytest.approx(reference["map_per_class"][name], abs=1e-6)
    assert ours["loss"] == pytest.approx(0.75)
    assert 0 < ours["map_50"] < 1


def test_detections_in_dontcare_regions_are_not_false_positives():
    target = {"boxes": torch.tensor([[10.0, 10.0, 50.0, 40.0]]), "labels": torch.tensor([1]),
              "ignore_boxes": torch.tensor([[100.0, 10.0, 160.0, 50.0]]), "ignore_labels": torch.tensor([1])}
    hit = {"boxes": torch.tensor([[10.0, 10.0, 50.0, 40.0]]), "scores": torch.tensor([0.5]),
           "labels": torch.tensor([1])}
    with_extra = {"boxes": torch.tensor([[10.0, 10.0, 50.0, 40.0], [110.0, 15.0, 150.0, 45.0]]),
                  "scores": torch.tensor([0.5, 0.9]), "labels": torch.tensor([1, 1])}
    results = []
    for detection, ignore in ((with_extra, True), (with_extra, False)):
        t = dict(target)
        if not ignore:
            t["ignore_boxes"], t["ignore_labels"] = torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)
        evaluator = DetectionEvaluator(["Car"])
        evaluator.update(Replay([detection]), ([torch.zeros(3, 60, 200)], [t]))
        results.append(evaluator.compute()["map_50"])
    evaluator = DetectionEvaluator(["Car"])
    evaluator.update(Replay([hit]), ([torch.zeros(3, 60, 200)], [target]))
    assert results[0] == pytest.approx(1.0) == pytest.approx(evaluator.compute()["map_50"])
    assert results[1] < 0.6  # the same detection outside a DontCare region is a false positive
