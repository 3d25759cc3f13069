"""Augmentation pipelines for road scenes (albumentations), registered by name.

Boxes follow the pixels (``bbox_params`` in pascal_voc pixels, labels carried in
``labels``); a box cut to less than ``min_visibility`` of its area by a crop or
shift is dropped, one that leaves the image is clipped. Crops are box-safe:
every object stays in the picture.

``factory(image_size, **options)``: ``image_size`` is the typical image height
of the training set (the task passes its median), used to scale effects such as
the sun flare to the image. ``PIPELINES`` is what the plugin registers.

albumentations is imported by each function that uses it, not by this module, so
that loading the plugin stays quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import albumentations as A


def bbox_params(min_visibility: float = 0.3) -> A.BboxParams:
    import albumentations as A

    return A.BboxParams(format="pascal_voc", label_fields=["labels"], min_visibility=min_visibility,
                        min_area=4.0, clip=True, filter_invalid_bboxes=True)


def _geometry(hflip: bool, crop: float, zoom_out: float) -> list:
    import albumentations as A

    steps = []
    if hflip:
        steps.append(A.HorizontalFlip(p=0.5))
    if crop > 0:
        steps.append(A.BBoxSafeRandomCrop(erosion_rate=0.0, p=crop))  # zoom in, keeping every object
    if zoom_out > 0:
        steps.append(A.Affine(scale=(1.0 - zoom_out, 1.0), translate_percent=(-0.05, 0.05), border_mode=0,
                              fill=(114, 114, 114), p=0.3))  # zoom out: smaller objects, grey border
    return steps


def _light(strength: float) -> list:
    import albumentations as A

    s = strength
    return [
        A.RandomBrightnessContrast(brightness_limit=0.25 * s, contrast_limit=0.25 * s, p=0.6),
        A.HueSaturationValue(hue_shift_limit=5 * s, sat_shift_limit=20 * s, val_shift_limit=10 * s, p=0.3),
    ]


def night(p: float = 1.0) -> A.Sequential:
    """Night: much darker, lower contrast, gamma lifted shadows, a blue cast and sensor noise."""
    import albumentations as A

    return A.Sequential([
        A.RandomBrightnessContrast(brightness_limit=(-0.55, -0.35), contrast_limit=(-0.35, -0.15), p=1.0),
        A.RandomGamma(gamma_limit=(120, 170), p=1.0),
        A.RGBShift(r_shift_limit=(-20, -5), g_shift_limit=(-10, 0), b_shift_limit=(5, 20), p=1.0),
        A.GaussNoise(std_range=(0.02, 0.05), p=1.0),
    ], p=p)


def weather(image_size: int | None, p: float = 0.5) -> A.OneOf:
    """One of rain, fog, sun flare, shadows or night."""
    import albumentations as A

    radius = max(8, int((image_size or 128) / 3))
    return A.OneOf([
        A.RandomRain(slant_range=(-10, 10), drop_width=1, blur_value=3, brightness_coefficient=0.8, p=1.0),
        A.RandomFog(fog_coef_range=(0.2, 0.5), alpha_coef=0.1, p=1.0),
        A.RandomSunFlare(flare_roi=(0.0, 0.0, 1.0, 0.5), src_radius=radius, num_flare_circles_range=(3, 6), p=1.0),
        A.RandomShadow(shadow_roi=(0.0, 0.5, 1.0, 1.0), num_shadows_limit=(1, 2), p=1.0),
        night(),
    ], p=p)


def road_light(image_size: int | None = None, hflip: bool = True, crop: float = 0.5, zoom_out: float = 0.2,
               strength: float = 1.0, min_visibility: float = 0.3) -> A.Compose:
    import albumentations as A

    return A.Compose(_geometry(hflip, crop, zoom_out) + _light(strength), bbox_params=bbox_params(min_visibility))


def road_weather(image_size: int | None = None, hflip: bool = True, crop: float = 0.5, zoom_out: float = 0.2,
                 strength: float = 1.0, weather_p: float = 0.5, min_visibility: float = 0.3) -> A.Compose:
    import albumentations as A

    return A.Compose(_geometry(hflip, crop, zoom_out) + _light(strength) + [weather(image_size, weather_p)],
                     bbox_params=bbox_params(min_visibility))


def road_flip(image_size: int | None = None) -> A.Compose:
    import albumentations as A

    return A.Compose([A.HorizontalFlip(p=0.5)], bbox_params=bbox_params())


PIPELINES = {
    "road-light": (road_light, "horizontal flip, box-safe crop (zoom in), slight zoom out, brightness/contrast, "
                               "hue/saturation (options: hflip, crop, zoom_out, strength, min_visibility)"),
    "road-weather": (road_weather, "road-light plus one of rain, fog, sun flare, shadows or night "
                                   "(option weather_p: how often)"),
    "road-flip": (road_flip, "horizontal flip only"),
}
