"""Torch datasets over decoded DICOM frames."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from tlcore import EpochSeeded


@dataclass(frozen=True)
class FrameItem:
    """One training sample: a frame of a decoded file and its target: a class index, a multi-hot tuple, or for a
    multi-task manifest a dict task -> target tensor (``tlcore.multitask_targets``)."""

    path: Path
    frame: int
    target: tuple[float, ...] | int | dict[str, torch.Tensor]


class DicomFrames(EpochSeeded, Dataset):
    """Frames from the decoded-pixel cache, augmented and normalised for the backbone.

    Augmentation draws depend only on (seed, epoch, index), so a resumed run and
    any number of DataLoader workers see the same images.
    """

    def __init__(self, items: list[FrameItem], load: Callable[[Path], list[np.ndarray]],
                 mean: tuple[float, ...], std: tuple[float, ...], transform=None, seed: int = 0):
        self.items = items
        self.load = load
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.items)

    def image(self, index: int) -> torch.Tensor:
        return self.view(index, self.transform)

    def view(self, index: int, transform, *stream: int) -> torch.Tensor:
        """Frame ``index`` under ``transform``, drawn from (seed, epoch, index, *stream): another ``stream``
        gives an independent draw of the same sample."""
        item = self.items[index]
        array = np.array(self.load(item.path)[item.frame], dtype=np.float32)  # a copy: the cache is read-only
        if transform is not None:
            transform.set_random_seed(self.draw_seed(index, *stream))
            hwc = np.ascontiguousarray(array.transpose(1, 2, 0))
            array = np.clip(transform(image=hwc)["image"], 0.0, 1.0).transpose(2, 0, 1)
        return (torch.from_numpy(np.ascontiguousarray(array)) - self.mean) / self.std

    def target_at(self, index: int) -> Any:
        target: Any = self.items[index].target
        if isinstance(target, tuple):
            return torch.tensor(target, dtype=torch.float32)
        if isinstance(target, dict):  # a dict is collated task by task as it is
            return target
        return int(target)

    def __getitem__(self, index: int):
        return self.image(index), self.target_at(index)


class DicomViews(DicomFrames):
    """Two views of each frame for FixMatch: ``((weak, strong), target)``, the weak one under ``transform``,
    the strong one under ``strong``, drawn independently of it."""

    def __init__(self, items: list[FrameItem], load: Callable[[Path], list[np.ndarray]],
                 mean: tuple[float, ...], std: tuple[float, ...], transform, strong, seed: int = 0):
        super().__init__(items, load, mean, std, transform, seed=seed)
        self.strong = strong

    def __getitem__(self, index: int):
        return (self.image(index), self.view(index, self.strong, 1)), self.target_at(index)


class DicomInputs(DicomFrames):
    """Unlabelled frames for prediction: yields images only."""

    def __getitem__(self, index: int):
        return self.image(index)
