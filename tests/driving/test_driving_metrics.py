"""The evaluator's COCO metrics equal pycocotools' own COCOeval; undefined values are null with a reason;
bootstrap resamples recompute them without the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from driving_helpers import cocoeval, torchmetrics_map

from tlapp_driving.metrics import SCALARS, DetectionEvaluator, metric_predictions, metric_targets

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
    """Stands in for the detector: returns the given detections batch by batch, and per image the given losses
    (by default 0.5 + 0.25 for every image)."""

    def __init__(self, detections, losses=None):
        super().__init__()
        self.detections = list(detections)
        self.losses = list(losses) if losses is not None else [0.5] * len(self.detections)

    def losses_and_detections(self, images, targets, per_image=False):
        assert per_image
        n = len(images)
        out, self.detections = self.detections[:n], self.detections[n:]
        mine, self.losses = torch.tensor(self.losses[:n]), self.losses[n:]
        return {"loss_a": mine, "loss_b": torch.full((n,), 0.25)}, out


def evaluate(targets, detections, class_names, losses=None, batch=3) -> DetectionEvaluator:
    evaluator = DetectionEvaluator(class_names)
    model = Replay(detections, losses)
    for start in range(0, len(targets), batch):
        part = targets[start:start + batch]
        evaluator.update(model, ([torch.zeros(3, 100, 200)] * len(part), part))
    return evaluator


@pytest.mark.parametrize("seed", range(5))
def test_metrics_equal_pycocotools(seed):
    targets, detections = synthetic(seed)
    ours = evaluate(targets, detections, CLASSES).compute()
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


def box(x: float, y: float, w: float, h: float) -> list[float]:
    return [x, y, x + w, y + h]


def target(boxes, labels, ignore=(), ignore_labels=()) -> dict[str, torch.Tensor]:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels).long(),
            "ignore_boxes": torch.tensor(ignore, dtype=torch.float32).reshape(-1, 4),
            "ignore_labels": torch.tensor(ignore_labels).long()}


def detection(boxes, labels, scores) -> dict[str, torch.Tensor]:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels).long(),
            "scores": torch.tensor(scores, dtype=torch.float32)}


def numbers_in(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from numbers_in(v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


def test_classes_and_sizes_without_ground_truth_are_null_with_their_reason():
    # Car: small and medium boxes; Van: small boxes; Truck: only an ignore region, and one false detection.
    # Nothing is larger than 96x96 px.
    targets = [target([box(10, 10, 20, 15), box(60, 10, 40, 40)], [1, 1], [box(120, 10, 30, 30)], [3]),
               target([box(5, 50, 25, 20)], [2]),
               target([], [])]
    detections = [detection([box(11, 10, 20, 15), box(60, 12, 40, 38), box(150, 60, 30, 30)], [1, 1, 3],
                            [0.9, 0.8, 0.7]),
                  detection([box(5, 50, 25, 20), box(40, 50, 10, 10)], [2, 2], [0.6, 0.5]),
                  detection([box(0, 0, 50, 50)], [1], [0.4])]
    out = evaluate(targets, detections, ["Car", "Van", "Truck"]).compute()
    assert out["map_per_class"]["Truck"] is None and out["map_per_class"]["Car"] > 0
    assert out["undefined"]["map_per_class"] == "no ground-truth boxes of this class in the split: Truck"
    assert out["undefined_classes"]["map_per_class"] == ["Truck"]
    assert out["map_large"] is None and out["map_medium"] is not None and out["map_small"] is not None
    assert out["undefined"]["map_large"] == "no ground-truth objects larger than 96x96 px in the split"
    assert set(out["undefined"]) == {"map_per_class", "map_large"}
    assert out["averaged_over"] == {"map": 2, "map_50": 2, "map_75": 2, "mar_1": 2, "mar_10": 2, "mar_100": 2,
                                    "map_small": 2, "map_medium": 1, "map_large": 0}
    assert out["undefined_classes"]["map"] == ["Truck"] and out["undefined_classes"]["map_medium"] == ["Van", "Truck"]
    assert all(v >= 0 for v in numbers_in(out))  # torchmetrics' -1 never leaks out


def with_truck_detection(seed: int):
    targets, detections = synthetic(seed)
    detections[0] = {k: torch.cat([v, extra]) for (k, v), extra in zip(
        detections[0].items(), (torch.tensor([[5.0, 5.0, 40.0, 40.0]]), torch.tensor([4]), torch.tensor([0.9])))}
    return targets, detections, [*CLASSES, "Truck"]  # Truck: detected once, never in the ground truth


def assert_same_as_torchmetrics(ours: dict, raw: dict, classes: list[str]) -> None:
    for key in SCALARS:
        value = float(raw[key])
        assert (ours[key] is None) == (value == -1), key
        if value != -1:
            assert ours[key] == pytest.approx(value, abs=1e-6), key
    per_class = dict(zip(raw["classes"].tolist(), raw["map_per_class"].tolist()))
    for k, name in enumerate(classes, start=1):
        value = per_class.get(k, -1)
        assert (ours["map_per_class"][name] is None) == (value == -1), name
        if value != -1:
            assert ours["map_per_class"][name] == pytest.approx(value, abs=1e-6), name


@pytest.mark.parametrize("seed", range(4))
def test_metrics_equal_torchmetrics_and_average_over_the_classes_with_ground_truth(seed):
    """COCOeval's averages leave out the classes without ground truth: checked against torchmetrics' own
    per-class output, not assumed."""
    targets, detections, classes = with_truck_detection(seed)
    out = evaluate(targets, detections, classes).compute()
    raw = torchmetrics_map(metric_predictions(detections), metric_targets(targets))
    assert_same_as_torchmetrics(out, raw, classes)
    defined = raw["map_per_class"][raw["map_per_class"] >= 0]
    recall = raw["mar_100_per_class"][raw["mar_100_per_class"] >= 0]
    assert 4 in raw["classes"].tolist() and len(defined) < len(raw["classes"])
    assert out["averaged_over"]["map"] == len(defined) == sum(v is not None for v in out["map_per_class"].values())
    assert out["map"] == pytest.approx(float(defined.mean()), abs=1e-6)
    assert out["mar_100"] == pytest.approx(float(recall.mean()), abs=1e-6)
    assert "Truck" in out["undefined"]["map_per_class"] and "Truck" in out["undefined_classes"]["map"]


def test_no_ground_truth_and_no_images():
    empty = [target([], []), target([], [], [box(0, 0, 50, 50)], [1])]
    out = evaluate(empty, [detection([box(0, 0, 10, 10)], [1], [0.5]), detection([], [], [])], CLASSES).compute()
    assert all(out[k] is None for k in SCALARS) and all(v is None for v in out["map_per_class"].values())
    assert out["undefined"]["map"] == "no ground-truth boxes in the split"
    assert out["undefined"]["map_small"] == "no ground-truth objects smaller than 32x32 px in the split"
    assert out["undefined"]["map_medium"] == "no ground-truth objects between 32x32 and 96x96 px in the split"
    assert out["undefined"]["map_per_class"] == \
        "no ground-truth boxes of these classes in the split: Car, Van, Pedestrian"
    assert set(out["averaged_over"].values()) == {0} and out["loss"] == pytest.approx(0.75)
    nothing = DetectionEvaluator(CLASSES).compute()
    assert nothing["loss"] is None and all(nothing[k] is None for k in SCALARS)
    assert nothing["undefined"]["loss"] == nothing["undefined"]["map"] == "no images in the split"


@pytest.mark.parametrize("seed", range(3))
def test_resample_of_every_image_is_compute(seed):
    targets, detections = synthetic(seed)
    evaluator = evaluate(targets, detections, CLASSES, losses=[0.1 * i for i in range(len(targets))])
    assert evaluator.resample(range(len(targets))) == evaluator.compute()
    assert evaluator.resample(list(range(len(targets)))[::-1])["map"] == pytest.approx(evaluator.compute()["map"])


@pytest.mark.parametrize("seed", range(3))
def test_resample_with_repeats_is_a_fresh_evaluation_of_those_images(seed):
    targets, detections, classes = with_truck_detection(seed)
    losses = [0.1 * i for i in range(len(targets))]
    evaluator = evaluate(targets, detections, classes, losses=losses)
    picked = [int(i) for i in np.random.RandomState(seed).randint(0, len(targets), len(targets))]
    picked += [picked[0], picked[0]]
    assert len(set(picked)) < len(picked)
    ours = evaluator.resample(picked)
    # The same as evaluating a split that holds those images that many times, with our evaluator, with
    # torchmetrics and with COCOeval.
    again = evaluate([targets[i] for i in picked], [detections[i] for i in picked], classes,
                     losses=[losses[i] for i in picked]).compute()
    assert ours == again
    assert_same_as_torchmetrics(ours, torchmetrics_map(metric_predictions([detections[i] for i in picked]),
                                                       metric_targets([targets[i] for i in picked])), classes)
    reference = cocoeval([targets[i] for i in picked], [detections[i] for i in picked], classes)
    for key in ("map", "map_50", "map_75", "mar_1", "mar_10", "mar_100"):
        assert ours[key] == pytest.approx(reference[key], abs=1e-6), key
    assert ours["loss"] == pytest.approx(sum(losses[i] for i in picked) / len(picked) + 0.25)
    assert ours != evaluator.compute()
    assert evaluator.resample([])["map"] is None
