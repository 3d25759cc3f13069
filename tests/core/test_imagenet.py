"""The ImageNet normalisation constants are those torchvision's ImageNet weights declare."""

import torchvision

from tlcore import IMAGENET_MEAN, IMAGENET_STD


def test_imagenet_mean_and_std_match_torchvision():
    transforms = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.transforms()
    assert (IMAGENET_MEAN, IMAGENET_STD) == (tuple(transforms.mean), tuple(transforms.std))
