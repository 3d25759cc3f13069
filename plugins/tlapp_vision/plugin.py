"""Hook implementations of the built-in vision plugin."""

from tlcore import hookimpl

from .models import vision_backbones


@hookimpl
def register_backbones(register):
    for backbone in vision_backbones():
        register(backbone)
