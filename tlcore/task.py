"""What a task is: the contract between the engine and a plugin's domain code."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from pydantic import BaseModel
from torch import nn
from torch.utils.data import Dataset

from .config import JobSpec, ModelSpec, Section
from .errors import DataError
from .registry import ParameterGroup, Registry


@dataclass
class DataBundle:
    """The splits a task built, and what the engine and reports need to know about them.

    ``summary`` goes into metrics.json as ``data``: counts, skipped files, class
    balance; nothing identifying.
    """

    train: Dataset
    val: Dataset
    test: Dataset | None
    num_outputs: int
    class_names: list[str] = field(default_factory=list)
    collate_fn: Callable | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    # batch_sampler(dataset, batch_size, generator) -> a sampler of index lists, for tasks that batch by
    # length or aspect ratio; it must draw its randomness from ``generator`` so runs stay resumable.
    batch_sampler: Callable[[Dataset, int, torch.Generator], Any] | None = None


@dataclass
class Context:
    """What a task may use while building: the registry, the device, a cache folder, a logger.

    ``init`` is the weight source the model will be filled from after ``build_model``
    (``job.model.init``, or ``none`` when the strategy trains from scratch), so a task can
    build the structure those weights need (e.g. frozen batch norm only under pretrained weights).
    ``run_dir`` is the run directory while training, else None.
    """

    registry: Registry
    device: torch.device
    cache_dir: Path
    log: logging.Logger
    run_dir: Path | None = None
    init: str = "none"


class Evaluator:
    """Accumulates predictions over batches and returns named metrics."""

    def update(self, model: nn.Module, batch: Any) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, Any]:
        raise NotImplementedError


class Task:
    """Base class for a plugin's task. Subclass it and ``register(MyTask())``.

    Class attributes describe the task; methods build what the engine runs.
    ``recipe`` is the default job spec (sections ``data``, ``model``, ``train``,
    ``strategy``, ``augment``) and ``sample_data`` the bundled data it runs on
    when the user gives no ``--data``.
    """

    name: str = ""
    description: str = ""
    plugin: str = ""
    recipe: dict[str, Any] = {}
    sample_data: Path | None = None
    sample_script: str | None = None  # the command that regenerates ``sample_data``, for error messages
    DataOptions: type[BaseModel] = Section
    ModelOptions: type[ModelSpec] = ModelSpec

    def data_root(self, job: JobSpec) -> Path:
        """``data.path``, or the bundled sample data when none is given; a clear error when missing."""
        given = getattr(job.data, "path", None)
        root = Path(given) if given else self.sample_data
        if root is None or not root.exists():
            fix = "check --data" if given else (f"run `{self.sample_script}`" if self.sample_script else "pass --data")
            raise DataError(f"dataset not found: {root}", where="data.path", fix=fix)
        return root

    def build_data(self, job: JobSpec, context: Context, *, for_training: bool = True) -> DataBundle:
        """Read and validate the data named by ``job.data``; fail with DataError on bad input."""
        raise NotImplementedError

    def build_model(self, job: JobSpec, num_outputs: int, context: Context) -> nn.Module:
        """Build the network with random weights (the engine transfers weights afterwards).

        It must have ``parameter_groups() -> list[ParameterGroup]`` and a ``backbone``
        attribute, the part the backbone's pretrained weights apply to.
        """
        raise NotImplementedError

    def loss_function(self, job: JobSpec) -> Callable[[nn.Module, Any], tuple[torch.Tensor, int]]:
        """``loss(model, batch) -> (loss, number of samples)`` for this job's training batches."""
        raise NotImplementedError

    def evaluator(self, job: JobSpec, data: DataBundle, context: Context) -> Evaluator:
        raise NotImplementedError

    def predict(self, model: nn.Module, job: JobSpec, class_names: list[str], inputs: Sequence[str],
                context: Context, out_dir: Path) -> list[dict[str, Any]]:
        """Predict for user inputs and write prediction files into ``out_dir``."""
        raise NotImplementedError

    def fold_overrides(self, folds: int, fold: int) -> dict[str, Any]:
        """Job-spec overrides that make ``fold`` of ``folds`` the validation split, folding by the task's
        groups (e.g. patients). Tasks without folds keep this default."""
        from .errors import ConfigError

        raise ConfigError(f"task {self.name!r} does not support k-fold comparison", where="--folds",
                          fix="compare without --folds (one run per strategy on the fixed splits)")

    def check_data(self, job: JobSpec, context: Context) -> dict[str, Any]:
        """A preflight report of the dataset (counts, formats, problems) without training."""
        raise NotImplementedError


def input_files(inputs: Sequence[str], files_in: Callable[[Path], list[Path]], what: str) -> list[Path]:
    """The files named by ``tlapp predict`` inputs: files as given, folders through ``files_in``.

    ``what`` names the expected files in messages ("DICOM files", "images").
    """
    files: list[Path] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            files.extend(files_in(path))
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"input not found: {path}", fix=f"pass {what} or folders of them")
    if not files:
        raise DataError(f"no {what} among the inputs", where=" ".join(inputs), fix=f"pass {what}")
    return files


def parameter_groups(model: nn.Module) -> list[ParameterGroup]:
    groups = getattr(model, "parameter_groups", None)
    if groups is None:
        raise TypeError(f"{type(model).__name__} has no parameter_groups(); tasks must build models that do")
    return groups()
