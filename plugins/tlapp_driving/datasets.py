"""Torch datasets over indexed detection records, the collate and the aspect-ratio batch sampler."""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Iterator

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, Sampler

from tlcore import DataError, EpochSeeded

from .formats import ImageRecord


def load_rgb(path) -> np.ndarray:
    """An image file as uint8 RGB (H, W, 3)."""
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"unreadable image ({type(exc).__name__}: {exc})", where=str(path),
                        fix="replace or remove the file") from None


class DetectionDataset(EpochSeeded, Dataset):
    """Images as float tensors in [0, 1] (C, H, W, original size) with torchvision detection targets.

    Target: ``boxes`` (N, 4) xyxy pixels, ``labels`` (N,) in 1..K (0 is background)
    and, without augmentation (validation, test), ``ignore_boxes``/``ignore_labels``:
    the DontCare/crowd regions, one entry per class they apply to, for evaluation.
    Augmentation draws depend only on (seed, epoch, index): resumed runs and any
    number of workers see the same images.
    """

    def __init__(self, records: list[ImageRecord], class_names: list[str], transform=None, seed: int = 0):
        self.records = records
        self.class_names = list(class_names)
        self.index = {c: i + 1 for i, c in enumerate(self.class_names)}
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.records)

    @property
    def aspect_ratios(self) -> list[float]:
        return [r.aspect_ratio for r in self.records]

    def __getitem__(self, i: int):
        record = self.records[i]
        image = load_rgb(record.path)
        if image.shape[:2] != (record.height, record.width):
            raise DataError(f"image is {image.shape[1]}x{image.shape[0]}, indexed as {record.width}x{record.height}",
                            where=str(record.path), fix="the file changed since the dataset was read; run again")
        boxes = np.asarray(record.boxes, dtype=np.float32).reshape(-1, 4)
        labels = np.asarray([self.index[c] for c in record.classes], dtype=np.int64)
        target: dict[str, torch.Tensor] = {}
        if self.transform is not None:
            self.transform.set_random_seed(self.draw_seed(i))
            out = self.transform(image=image, bboxes=boxes, labels=labels)
            image = out["image"]
            boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
            labels = np.asarray(out["labels"], dtype=np.int64).reshape(-1)
        else:
            ignore_boxes, ignore_labels = [], []
            for box, name in record.ignore:
                for c in ([name] if name is not None else self.class_names):
                    ignore_boxes.append(box)
                    ignore_labels.append(self.index[c])
            target["ignore_boxes"] = torch.tensor(ignore_boxes, dtype=torch.float32).reshape(-1, 4)
            target["ignore_labels"] = torch.tensor(ignore_labels, dtype=torch.int64)
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
        target["boxes"] = torch.from_numpy(boxes)
        target["labels"] = torch.from_numpy(labels)
        return tensor, target


class ImageFiles(Dataset):
    """Unlabelled images for prediction: (tensor in [0, 1], original uint8 tensor)."""

    def __init__(self, paths):
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        image = torch.from_numpy(np.ascontiguousarray(load_rgb(self.paths[i]))).permute(2, 0, 1)
        return image.float() / 255.0, image


def collate(batch):
    """Keep variable-size images as a list (torchvision's detector resizes and pads them itself)."""
    images, targets = zip(*batch)
    return list(images), list(targets)


# Width / height boundaries between aspect-ratio groups: portrait, square-ish, landscape, wide, very wide.
ASPECT_BINS = (0.8, 1.25, 1.8, 2.6)


class AspectRatioBatchSampler(Sampler[list[int]]):
    """Random batches of images with similar width/height, so padding to the batch's largest image wastes little.

    Indices are shuffled with ``generator`` (the engine reseeds it every epoch,
    so batches are reproducible on resume) and dealt into per-group buckets; a
    bucket that fills up becomes a batch. Leftovers are batched together in
    shuffled order at the end, so every image is seen once per epoch.
    """

    def __init__(self, aspect_ratios: list[float], batch_size: int, generator: torch.Generator | None = None,
                 bins: tuple[float, ...] = ASPECT_BINS):
        self.groups = [bisect.bisect_right(bins, r) for r in aspect_ratios]
        self.batch_size = batch_size
        self.generator = generator

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(len(self.groups), generator=self.generator).tolist()
        buckets: dict[int, list[int]] = defaultdict(list)
        for index in order:
            bucket = buckets[self.groups[index]]
            bucket.append(index)
            if len(bucket) == self.batch_size:
                yield list(bucket)
                bucket.clear()
        position = {index: p for p, index in enumerate(order)}
        rest = sorted((i for b in buckets.values() for i in b), key=position.__getitem__)
        for start in range(0, len(rest), self.batch_size):
            yield rest[start:start + self.batch_size]

    def __len__(self) -> int:
        counts: dict[int, int] = defaultdict(int)
        for g in self.groups:
            counts[g] += 1
        full = sum(c // self.batch_size for c in counts.values())
        rest = sum(c % self.batch_size for c in counts.values())
        return full + math.ceil(rest / self.batch_size)


def aspect_ratio_batches(dataset: DetectionDataset, batch_size: int, generator: torch.Generator):
    """``DataBundle.batch_sampler`` for the engine's training loader."""
    return AspectRatioBatchSampler(dataset.aspect_ratios, batch_size, generator)
