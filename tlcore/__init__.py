"""tlcore: the domain-free transfer engine and the plugin contract.

Plugins import only what this module exports; everything else is private to the core.
"""

from .augmentation import build_augmentation
from .baseline import ClassicalInputs
from .checkpoint import atomic_write_bytes, atomic_write_text
from .classification import (ClassificationEvaluator, ClassificationModel, ClassificationTask, ClassifierSpec,
                             HeadSpec, build_classifier, predict_probabilities)
from .config import JobSpec, ModelSpec, Section
from .downloads import (fetch_pretrained, fetch_state_dict, huggingface_url, offline_flag, torch_hub_checkpoint,
                        unreachable)
from .errors import ConfigError, DataError, PluginError, TlappError, TrainingError
from .hookspecs import hookimpl
from .paths import inside_root
from .imagenet import IMAGENET_MEAN, IMAGENET_STD
from .plugins import require_modules
from .predictions import write_predictions
from .preview import image_grid
from .registry import Backbone, Catalog, Entry, ParameterGroup, Registry
from .methods import Method, MethodOptions, Supervised, seeded_loader
from .pretrain import Pretraining, PretrainOptions
from .multitask import (MISSING, MultiTaskEvaluator, MultiTaskModel, TaskHeads, TaskLabels, UncertaintyWeighting,
                        multitask_targets, predict_task_probabilities, prediction_columns, task_predictions)
from .seeding import EpochSeeded, sample_seed
from .splits import missing_class_warnings, small_split_warning, take_covering
from .strategies import Phase, Strategy, StrategyOptions
from .task import (BackboneHeadModel, Context, DataBundle, Evaluator, Task, TransferModel, UnlabelledData,
                   input_files)
from .run import Run

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MISSING",
    "Backbone",
    "BackboneHeadModel",
    "Catalog",
    "ClassicalInputs",
    "ClassificationEvaluator",
    "ClassificationModel",
    "ClassificationTask",
    "ClassifierSpec",
    "ConfigError",
    "Context",
    "DataBundle",
    "DataError",
    "Entry",
    "HeadSpec",
    "EpochSeeded",
    "Evaluator",
    "JobSpec",
    "Method",
    "MethodOptions",
    "ModelSpec",
    "MultiTaskEvaluator",
    "MultiTaskModel",
    "ParameterGroup",
    "Phase",
    "PluginError",
    "PretrainOptions",
    "Pretraining",
    "Registry",
    "Run",
    "Section",
    "Strategy",
    "StrategyOptions",
    "Supervised",
    "Task",
    "TaskHeads",
    "TaskLabels",
    "TlappError",
    "TrainingError",
    "TransferModel",
    "UncertaintyWeighting",
    "UnlabelledData",
    "atomic_write_bytes",
    "atomic_write_text",
    "build_augmentation",
    "build_classifier",
    "fetch_pretrained",
    "fetch_state_dict",
    "hookimpl",
    "huggingface_url",
    "image_grid",
    "input_files",
    "inside_root",
    "missing_class_warnings",
    "multitask_targets",
    "offline_flag",
    "predict_probabilities",
    "predict_task_probabilities",
    "prediction_columns",
    "require_modules",
    "sample_seed",
    "seeded_loader",
    "small_split_warning",
    "take_covering",
    "task_predictions",
    "torch_hub_checkpoint",
    "unreachable",
    "write_predictions",
]
