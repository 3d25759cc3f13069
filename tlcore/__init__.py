"""tlcore: the domain-free transfer engine and the plugin contract.

Plugins import only what this module exports; everything else is private to the core.
"""

from .checkpoint import atomic_write_bytes, atomic_write_text
from .classification import (ClassificationEvaluator, ClassificationModel, ClassificationTask, ClassifierSpec,
                             build_classifier, predict_probabilities)
from .config import JobSpec, ModelSpec, Section
from .downloads import offline_flag, unreachable
from .errors import ConfigError, DataError, PluginError, TlappError, TrainingError
from .hookspecs import hookimpl
from .registry import Backbone, Entry, ParameterGroup
from .seeding import EpochSeeded, sample_seed
from .strategies import Phase, Strategy, StrategyOptions
from .task import Context, DataBundle, Evaluator, Task, input_files

__all__ = [
    "Backbone",
    "ClassificationEvaluator",
    "ClassificationModel",
    "ClassificationTask",
    "ClassifierSpec",
    "ConfigError",
    "Context",
    "DataBundle",
    "DataError",
    "EpochSeeded",
    "Entry",
    "Evaluator",
    "JobSpec",
    "ModelSpec",
    "ParameterGroup",
    "Phase",
    "PluginError",
    "Section",
    "Strategy",
    "StrategyOptions",
    "Task",
    "TlappError",
    "TrainingError",
    "atomic_write_bytes",
    "atomic_write_text",
    "build_classifier",
    "hookimpl",
    "input_files",
    "offline_flag",
    "predict_probabilities",
    "sample_seed",
    "unreachable",
]
