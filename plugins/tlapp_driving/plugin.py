"""Hook implementations of the driving plugin."""

from tlcore import hookimpl, require_modules

from .formats import read_coco, read_kitti
from .models import detector_backbones
from .task import DrivingDetection
from .transforms import PIPELINES

# Imported only when used, so checked here: without them the plugin shows as unavailable (tlapp[driving]).
require_modules("pycocotools", "albumentations")


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


@hookimpl
def register_augmentations(register):
    for name, (factory, description) in PIPELINES.items():
        register(name, factory, description)
