"""Pictures of what training sees: the first augmented training batches, as the model receives them.

Someone who looks at them catches an augmentation that destroys the signal (a night effect that blacks out the
frame, a crop that cuts the lesion away) before hours of training on it. The task draws its own inputs
(``Task.preview``: windowed images with their labels, images with their boxes, tokenised texts); this module
picks the batches and lays images out in a grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import checkpoint
from .seeding import epoch_seed


def write_previews(task: Any, job: Any, data: Any, context: Any, loader, generator: torch.Generator,
                   folder: Path, count: int) -> list[Path]:
    """``train_batch0`` ... ``train_batch<count-1>`` in ``folder``: the first batches of epoch 0, drawn as
    training draws them (same loader, same seed, same epoch), without moving any random state training uses."""
    state = checkpoint.rng_state()
    written: list[Path] = []
    try:
        generator.manual_seed(epoch_seed(job.train.seed, 0))
        data.set_epoch(0)
        for index, batch in zip(range(count), loader):
            path = task.preview(job, data, context, batch, folder / f"train_batch{index}")
            if path is None:  # the task does not draw its inputs
                break
            written.append(path)
    finally:
        checkpoint.restore_rng(state)
    return written


def image_grid(images: Sequence[np.ndarray | torch.Tensor], captions: Sequence[str], path: Path,
               title: str | None = None) -> Path:
    """Images (H x W x 3 uint8 arrays, or C x H x W tensors: uint8, or float in [0, 1]) in a grid, each with
    its caption, written as ``path`` + ``.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(len(images), math.ceil(math.sqrt(len(images))))
    rows = math.ceil(len(images) / columns)
    height, width = _displayable(images[0]).shape[:2]
    cell = 2.4 * min(max(width / height, 1.0), 3.5)  # wide road scenes get wide cells
    figure, axes = plt.subplots(rows, columns, figsize=(cell * columns, 2.7 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions):
        ax.imshow(_displayable(image))
        ax.set_title(caption, fontsize=7)
    if title:
        figure.suptitle(title, fontsize=8)
    figure.tight_layout()
    out = path.with_suffix(".png")
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out


def _displayable(image: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        array = image.detach().cpu()
        array = array.float() / 255 if array.dtype == torch.uint8 else array.float().clamp(0, 1)
        if array.dim() == 3 and array.shape[0] in (1, 3):
            array = array.permute(1, 2, 0)
        image = (array.numpy() * 255).round().astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return image
