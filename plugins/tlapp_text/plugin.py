"""Hook implementations of the text plugin."""

from tlcore import hookimpl, require_modules

from .formats import FORMAT_DESCRIPTIONS, FORMATS, reader
from .models import text_backbones
from .pretraining import PRETRAINING_METHODS
from .task import TextClassification

# Imported only when used, so checked here: without it the plugin shows as unavailable (tlapp[text]).
require_modules("transformers")


@hookimpl
def register_tasks(register):
    register(TextClassification())


@hookimpl
def register_backbones(register):
    for backbone in text_backbones():
        register(backbone)


@hookimpl
def register_dataset_formats(register):
    for fmt, name in FORMATS.items():
        register(name, reader(fmt), FORMAT_DESCRIPTIONS[fmt])


@hookimpl
def register_methods(register):
    for method in PRETRAINING_METHODS:
        register(method)
