"""Hook implementations of the driving plugin."""

from tlcore import hookimpl

from .formats import read_coco, read_kitti
from .models import detector_backbones
from .task import DrivingDetection


@hookimpl
def register_tasks(register):
    register(DrivingDetection())


@hookimpl
def register_dataset_formats(register):
    register("kitti", read_kitti, "KITTI 2D objects: image_2/*.png + label_2/*.txt (DontCare regions ignored)")
    register("coco", read_coco, "COCO detection JSON: images, annotations (bbox x,y,w,h), categories")


@hookimpl
def register_backbones(register):
    for backbone in detector_backbones():
        register(backbone)


def _pipeline(function: str):
    """A factory that imports albumentations only when a pipeline is built (keeps plugin loading quick)."""

    def factory(image_size=None, **options):
        from . import transforms

        return getattr(transforms, function)(image_size, **options)

    factory.__name__ = function
    return factory


PIPELINES = {
    "road-light": ("road_light", "horizontal flip, box-safe crop (zoom in), slight zoom out, brightness/contrast, "
                                 "hue/saturation (options: hflip, crop, zoom_out, strength, min_visibility)"),
    "road-weather": ("road_weather", "road-light plus one of rain, fog, sun flare, shadows or night "
                                     "(option weather_p: how often)"),
    "road-flip": ("road_flip", "horizontal flip only"),
}


@hookimpl
def register_augmentations(register):
    for name, (function, description) in PIPELINES.items():
        register(name, _pipeline(function), description)
