"""Augmentation pipelines for medical images (albumentations), registered by name.

Choices a radiologist would expect: small geometric changes only, no
horizontal flip by default (laterality matters on chest films), no colour
jitter on grayscale, mild noise and blur as scanner variation.
"""

from __future__ import annotations

import albumentations as A


def medical_light(image_size: int, hflip: bool = False, strength: float = 1.0) -> A.Compose:
    s = strength
    steps = [
        A.Affine(scale=(1 - 0.05 * s, 1 + 0.05 * s), translate_percent=(-0.04 * s, 0.04 * s),
                 rotate=(-7 * s, 7 * s), border_mode=0, fill=0, p=0.7),
        A.RandomBrightnessContrast(brightness_limit=0.08 * s, contrast_limit=0.08 * s, p=0.5),
        A.GaussNoise(std_range=(0.005 * s, 0.02 * s), p=0.3),
        A.GaussianBlur(blur_limit=(3, 3), p=0.15),
    ]
    if hflip:
        steps.append(A.HorizontalFlip(p=0.5))
    return A.Compose(steps)


def medical_strong(image_size: int, hflip: bool = False) -> A.Compose:
    steps = [
        A.Affine(scale=(0.9, 1.1), translate_percent=(-0.08, 0.08), rotate=(-12, 12), shear=(-4, 4),
                 border_mode=0, fill=0, p=0.8),
        A.ElasticTransform(alpha=8, sigma=4, p=0.2),
        A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=0.6),
        A.RandomGamma(gamma_limit=(85, 115), p=0.3),
        A.GaussNoise(std_range=(0.01, 0.04), p=0.4),
        A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.MotionBlur(blur_limit=(3, 5))], p=0.25),
        A.CoarseDropout(num_holes_range=(1, 4), hole_height_range=(0.05, 0.1), hole_width_range=(0.05, 0.1),
                        fill=0, p=0.2),
    ]
    if hflip:
        steps.append(A.HorizontalFlip(p=0.5))
    return A.Compose(steps)


PIPELINES = {
    "medical-light": (medical_light, "small affine, brightness/contrast, noise, blur; no flip (option hflip)"),
    "medical-strong": (medical_strong, "larger affine and elastic, gamma, noise, blur, coarse dropout"),
}
