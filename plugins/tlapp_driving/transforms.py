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
    # Brightness shifts by a fraction of the image's own mean, not of 255: -25% of 255 blacks out a night scene.
    return [
        A.RandomBrightnessContrast(brightness_limit=0.25 * s, contrast_limit=0.25 * s, brightness_by_max=False, p=0.6),
        A.HueSaturationValue(hue_shift_limit=5 * s, sat_shift_limit=20 * s, val_shift_limit=10 * s, p=0.3),
    ]


def night(p: float = 1.0) -> A.Sequential:
    """Night driving footage, not a closed lens: the frame dimmed, shadows deepened, a blue cast, sensor noise.

    A gamma of 1.25-1.55 (darks darken more than lights), an exposure of 0.50-0.65 (a multiplication, so
    nothing is shifted to black), colours desaturated to 0.65-0.85, a blue shift (red -8..-3, green -3..0,
    blue +4..+12 of 255) and noise (std 1-2.5% of 255). Grey levels stay distinct: objects stand out from
    the road, lane markings stay legible, lamps and lit windows stay the brightest pixels (at ~0.6 of their value).

    Measured on the bundled sample, as fractions of the original image's (box contrast: |mean inside a box -
    mean of a ring around it|, averaged over the boxes): on ``000003.png`` (mean 110.5, std 51.2, brightest
    238, box contrast 22.2 of 255), 20 seeded draws: mean 48 (0.44), std 30 (0.59), brightest pixel 142
    (0.60), box contrast 9.3 (0.42); on 12 sample images of every weather and light, 4 draws each: mean
    0.43, std 0.57, brightest 0.57, box contrast 0.48, lowest single draw std 0.44, box contrast 0.29.
    ``pytest tests/driving/test_driving_augment_signal.py -k night -s`` measures and prints these and
    requires mean 0.30-0.50, std >= 0.45, brightest >= 0.45, box contrast >= 0.33 of the original's. The
    effect this replaced (brightness -35..-55% of 255, then a darkening gamma) gave on 000003 mean 8, std 10,
    brightest 64, box contrast 0.3 (0.08, 0.19, 0.27, 0.01): black frames whose boxes stayed targets.
    """
    import albumentations as A

    return A.Sequential([
        A.RandomGamma(gamma_limit=(125, 155), p=1.0),
        A.ColorJitter(brightness=(0.5, 0.65), contrast=(1.0, 1.0), saturation=(0.65, 0.85), hue=(0.0, 0.0), p=1.0),
        A.RGBShift(r_shift_limit=(-8, -3), g_shift_limit=(-3, 0), b_shift_limit=(4, 12), p=1.0),
        A.GaussNoise(std_range=(0.01, 0.025), p=1.0),
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
