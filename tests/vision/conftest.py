"""Fixtures of the vision tests: two photographs as the offline EfficientNet-Lite0 expects them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tlapp_vision.lite0_weights import LITE0_MEAN, LITE0_STD


def photograph(name: str, size: int = 224) -> torch.Tensor:
    """scikit-image's photograph ``name`` resized to ``size`` and normalised for Lite0, (1, 3, size, size)."""
    skimage_data = pytest.importorskip("skimage.data")
    x = torch.from_numpy(getattr(skimage_data, name)()).permute(2, 0, 1).float()[None] / 255
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return (x - torch.tensor(LITE0_MEAN).view(1, 3, 1, 1)) / torch.tensor(LITE0_STD).view(1, 3, 1, 1)


@pytest.fixture(scope="session")
def coffee() -> torch.Tensor:
    """A cup of espresso (ImageNet class 967)."""
    return photograph("coffee")


@pytest.fixture(scope="session")
def chelsea() -> torch.Tensor:
    """A cat (ImageNet classes 281-285)."""
    return photograph("chelsea")
