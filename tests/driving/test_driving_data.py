"""Datasets, augmentation (boxes follow pixels, seeded per sample), collate and aspect-ratio batches."""

from __future__ import annotations

import pytest
import torch

from tlapp_driving.datasets import AspectRatioBatchSampler, DetectionDataset, collate
from tlapp_driving.formats import read_kitti
from tlapp_driving.transforms import road_light, road_weather


def test_targets_labels_and_ignore_regions(make_kitti):
    root = make_kitti(3, extra={0: ["DontCare -1 -1 -10 60 5 90 20 -1 -1 -1 -1000 -1000 -1000 -10"]})
    data = read_kitti(root, classes=["Car", "Pedestrian"])
    image, target = DetectionDataset(data.records, data.classes)[0]
    record = data.records[0]
    assert image.shape == (3, 48, 96) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
    assert target["boxes"].tolist() == [list(b) for b in record.boxes]
    assert target["labels"].tolist() == [1 + data.classes.index(c) for c in record.classes]  # 0 is background
    # A DontCare region is an ignore region of every class, for evaluation.
    assert target["ignore_boxes"].tolist() == [[60, 5, 90, 20]] * 2 and target["ignore_labels"].tolist() == [1, 2]


def test_collate_keeps_variable_sizes(make_kitti):
    root = make_kitti(2, size=[(96, 48), (64, 48)])
    data = read_kitti(root)
    images, targets = collate([DetectionDataset(data.records, data.classes)[i] for i in range(2)])
    assert [tuple(im.shape) for im in images] == [(3, 48, 96), (3, 48, 64)] and len(targets) == 2


def test_boxes_follow_the_pixels_under_augmentation(make_kitti):
    """Each augmented box still frames its car: the pixels inside are mostly car-coloured (red, or yellow
    where a pedestrian stands in front), not road or sky."""
    root = make_kitti(6, size=(160, 80))
    data = read_kitti(root, classes=["Car"])
    for pipeline in (road_light(80), road_weather(80, weather_p=0.0)):
        dataset = DetectionDataset(data.records, data.classes, pipeline, seed=3)
        changed = 0
        for epoch in range(3):
            dataset.set_epoch(epoch)
            for i in range(len(dataset)):
                image, target = dataset[i]
                assert len(target["boxes"]) >= 1  # box-safe crops keep the objects
                for x1, y1, x2, y2 in target["boxes"].round().int().tolist():
                    patch = image[:, y1 + 1:y2 - 1, x1 + 1:x2 - 1]
                    painted = patch[0] - patch[2] > 0.25  # red or yellow; road is grey, sky blue
                    assert painted.float().mean() > 0.6, (pipeline, epoch, i)
                changed += target["boxes"].tolist() != [list(b) for b in data.records[i].boxes]
        assert changed > 3  # the geometry really changed


def test_augmentation_is_seeded_by_seed_epoch_and_index(make_kitti):
    root = make_kitti(3)
    data = read_kitti(root)
    a = DetectionDataset(data.records, data.classes, road_weather(48, weather_p=1.0), seed=1)
    b = DetectionDataset(data.records, data.classes, road_weather(48, weather_p=1.0), seed=1)
    a.set_epoch(2)
    b.set_epoch(2)
    b[0]  # draws in between must not matter
    assert torch.equal(a[1][0], b[1][0]) and torch.equal(a[1][1]["boxes"], b[1][1]["boxes"])
    b.set_epoch(3)
    assert not torch.equal(a[1][0], b[1][0])


def test_aspect_ratio_batches_group_and_cover_every_image():
    ratios = [2.0, 1.0, 2.0, 3.0, 1.0, 2.0, 2.0, 1.0, 3.0, 2.0, 1.0]
    sampler = AspectRatioBatchSampler(ratios, 2, torch.Generator().manual_seed(0))
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(ratios)))
    mixed = [b for b in batches if len({ratios[i] for i in b}) > 1]
    assert len(mixed) <= 1  # only the leftovers may mix
    again = list(AspectRatioBatchSampler(ratios, 2, torch.Generator().manual_seed(0)))
    assert again == batches
    other = list(AspectRatioBatchSampler(ratios, 2, torch.Generator().manual_seed(1)))
    assert other != batches


@pytest.mark.parametrize("ratios,batch", [([1.0] * 5, 2), ([1.0, 2.0, 3.0], 4), ([2.0] * 8, 4)])
def test_aspect_ratio_batch_count(ratios, batch):
    sampler = AspectRatioBatchSampler(ratios, batch, torch.Generator().manual_seed(0))
    assert len(list(sampler)) == len(sampler)
    assert all(len(b) <= batch for b in sampler)
