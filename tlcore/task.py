"""What a task is: the contract between the engine and a plugin's domain code."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable
from collections.abc import Callable, Hashable, Sequence, Sized

import torch
from pydantic import BaseModel
from torch import nn
from torch.utils.data import Dataset

from .config import JobSpec, ModelSpec, Section, job_model, merge, validate
from .errors import ConfigError, DataError, PluginError, TlappError
from .registry import ParameterGroup, Registry
from .seeding import EpochSeeded


@dataclass
class DataBundle:
    """The splits a task built, and what the engine and reports need to know about them.

    ``summary`` goes into metrics.json as ``data``: counts, skipped files, class
    balance; nothing identifying.

    ``num_outputs`` and ``class_names`` describe the targets: an int and a list for one task; for a
    multi-task bundle (several label columns, see ``tlcore.multitask``) dicts task -> int and task -> class
    names, in the order of the tasks.
    """

    train: Dataset
    val: Dataset
    test: Dataset | None
    num_outputs: int | dict[str, int]
    class_names: list[str] | dict[str, list[str]] = field(default_factory=list)
    collate_fn: Callable | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    # batch_sampler(dataset, batch_size, generator) -> a sampler of index lists, for tasks that batch by
    # length or aspect ratio; it must draw its randomness from ``generator`` so runs stay resumable.
    batch_sampler: Callable[[Dataset, int, torch.Generator], Any] | None = None
    # Per split ("train", "val", "test"), the group of each sample in dataset order (a patient, a scene): the
    # unit bootstrap intervals resample and auto's k-fold race keeps whole, so that samples which are not
    # independent are drawn together. A split without groups is resampled sample by sample. ``group_unit``
    # names a group in reports ("patient").
    groups: dict[str, Sequence[Hashable]] = field(default_factory=dict)
    group_unit: str = "sample"

    def evaluation_split(self) -> tuple[str, Dataset]:
        """The split final metrics are measured on: ``test``, or ``val`` when there is no test split."""
        if self.test is not None and len(cast(Sized, self.test)):
            return "test", self.test
        return "val", self.val

    def set_epoch(self, epoch: int) -> None:
        """Called by the engine before each training epoch: a ``tlcore.EpochSeeded`` training set draws
        its augmentation from (seed, epoch, index), so it must know the epoch."""
        if isinstance(self.train, EpochSeeded):
            self.train.set_epoch(epoch)


@dataclass
class UnlabelledData:
    """Samples read without their labels: a target domain's (domain adaptation) or an unlabelled pool's
    (semi-supervised learning), from ``Task.unlabelled_data``.

    ``dataset`` yields ``(inputs, hidden)`` pairs that ``collate_fn`` batches as it batches the training split:
    ``inputs`` as the model takes them, drawn under the job's training augmentation (for ``views=2`` a pair
    ``(weak, strong)``: the training augmentation's view and a strongly augmented one, for FixMatch); ``hidden``
    the sample's class index when the files carry a label the run's classes know (never trained on: it
    measures pseudo-labels), else ``tlcore.MISSING``. Make it a ``tlcore.EpochSeeded`` dataset so a resumed
    run draws the same views. ``summary`` goes into metrics.json (counts, skipped files)."""

    dataset: Dataset
    collate_fn: Callable | None = None
    summary: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class TransferModel(Protocol):
    """What the engine expects of the model ``Task.build_model`` returns (besides being an ``nn.Module``).

    ``backbone`` is the part a backbone's pretrained weights (``--init imagenet``) are copied into
    (the whole network where they cover it all). ``parameter_groups()`` partitions every parameter
    into named groups from input to output, heads last (``is_head``), which strategies freeze and
    rate; the engine checks the partition before step 0.
    """

    @property
    def backbone(self) -> nn.Module: ...

    def parameter_groups(self) -> list[ParameterGroup]: ...


@runtime_checkable
class BackboneHeadModel(TransferModel, Protocol):
    """A TransferModel whose output is ``head(backbone(inputs))``, ``backbone`` returning one feature
    tensor per sample. With ``supports_feature_cache`` True, head-only phases may train on cached
    features and ``auto`` may probe them (``tlcore.ClassificationModel`` is one)."""

    supports_feature_cache: bool

    @property
    def head(self) -> nn.Module: ...


@dataclass
class Context:
    """What a task may use while building: the registry, the device, a cache folder, a logger.

    ``init`` is the weight source the model will be filled from after ``build_model``
    (``job.model.init``, or ``none`` when the strategy trains from scratch), so a task can
    build the structure those weights need (e.g. frozen batch norm only under pretrained weights).
    ``run_dir`` is the run directory while training, else None.
    ``class_names`` are those of the run whose model will see the data, when ``build_data(for_training=False)``
    reads data that did not train it (``tlapp evaluate --data``, ``adapt.target_test``): map the labels onto
    them, in their order; None otherwise.
    """

    registry: Registry
    device: torch.device
    cache_dir: Path
    log: logging.Logger
    run_dir: Path | None = None
    init: str = "none"
    class_names: list[str] | dict[str, list[str]] | None = None


class Evaluator:
    """Accumulates predictions over batches and returns named metrics.

    ``compute()`` returns numbers, per-class dicts of numbers, or other JSON values. A value the data cannot
    define (AUROC of a split holding one class) is None, never 0 or -1, with the reason under
    ``undefined[name]``; a macro average leaves such classes out and says over how many classes it averaged
    under ``averaged_over[name]``.

    ``resample(indices)`` makes the final metrics' bootstrap intervals possible: it returns what
    ``compute()`` would for the multiset of samples at ``indices`` (positions in the order ``update`` saw
    them, repeats allowed), without running the model again. An evaluator that does not override it gets no
    intervals."""

    def update(self, model: nn.Module, batch: Any) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, Any]:
        raise NotImplementedError

    def resample(self, indices: Sequence[int]) -> dict[str, Any]:
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
        given = cast(Any, job.data).path  # check_task made sure every task's DataOptions has it
        if not given and self.sample_data is None:
            raise DataError(f"task {self.name!r} has no bundled sample data, so it needs a dataset",
                            where="data.path", fix="pass --data PATH (or set data.path in the config file)")
        root = Path(given) if given else cast(Path, self.sample_data)
        if not root.exists():
            fix = "check --data" if given else (f"run `{self.sample_script}`" if self.sample_script else "pass --data")
            raise DataError(f"dataset not found: {root}", where="data.path", fix=fix)
        return root

    def build_data(self, job: JobSpec, context: Context, *, for_training: bool = True) -> DataBundle:
        """Read and validate the data named by ``job.data``; fail with DataError on bad input."""
        raise NotImplementedError

    def unlabelled_data(self, job: JobSpec, context: Context, path: Path, class_names: Any, *,
                        views: int = 1) -> UnlabelledData:
        """Read the inputs of the data at ``path`` (the task's own formats; labels absent or ignored) for domain
        adaptation (``adapt.target``) or semi-supervised learning (``semi.unlabelled``); ``class_names`` are the
        run's, for the hidden labels. ``views`` 2 asks for a weak and a strong view of each sample; a task that
        has no strong augmentation raises ConfigError for it. DataError for unreadable data or none at all.
        A task that does not override this cannot learn from unlabelled data."""
        raise ConfigError(f"task {self.name!r} does not read unlabelled data", where=str(path),
                          fix="drop adapt.method / semi.method: this task trains on labelled data only")

    def build_model(self, job: JobSpec, num_outputs: int | dict[str, int], context: Context) -> nn.Module:
        """Build the network with random weights (the engine transfers weights afterwards); ``num_outputs`` is
        the DataBundle's (by task for a multi-task bundle).

        It must have ``parameter_groups() -> list[ParameterGroup]`` and a ``backbone``
        attribute, the part the backbone's pretrained weights apply to.
        """
        raise NotImplementedError

    def loss_function(self, job: JobSpec) -> Callable[[nn.Module, Any], tuple[torch.Tensor, int]]:
        """``loss(model, batch) -> (loss, number of samples)`` for this job's training batches."""
        raise NotImplementedError

    def evaluator(self, job: JobSpec, data: DataBundle, context: Context) -> Evaluator:
        raise NotImplementedError

    def metric_names(self, job: JobSpec) -> list[str] | None:
        """The validation metrics this job reports that ``train.monitor`` may name (keys of
        ``evaluator(...).compute()``, ``loss`` included), so a misspelt monitor fails before any data
        is read. None, the default, means unknown: the engine then checks the monitor after the
        first validation instead."""
        return None

    def predict(self, model: nn.Module, job: JobSpec, class_names: list[str], inputs: Sequence[str],
                context: Context, out_dir: Path) -> list[dict[str, Any]]:
        """Predict for user inputs and write prediction files into ``out_dir``."""
        raise NotImplementedError

    def preview(self, job: JobSpec, data: DataBundle, context: Context, batch: Any, path: Path) -> Path | None:
        """Draw one training batch, as the collate function hands it to the model, for a person to look at:
        write ``path`` with a suffix of the task's choosing (``tlcore.image_grid`` writes a PNG grid) and
        return the file written. None (the default): the task does not draw its inputs."""
        return None

    def fold_overrides(self, folds: int, fold: int) -> dict[str, Any]:
        """Job-spec overrides that make ``fold`` of ``folds`` the validation split, folding by the task's
        groups (e.g. patients). Tasks without folds keep this default."""
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
    if not isinstance(model, TransferModel):
        raise PluginError(f"{type(model).__name__} is not a tlcore.TransferModel: it needs a `backbone` "
                          "attribute and a `parameter_groups()` method",
                          fix="have Task.build_model return such a model (see docs/plugins.md, 'Writing a task')")
    return model.parameter_groups()


def uses_feature_cache(model: nn.Module) -> bool:
    return isinstance(model, BackboneHeadModel) and model.supports_feature_cache


def check_task(task: Task) -> None:
    """Reject, at plugin load time, a task the engine could not run; the message is for its author."""
    what = f"task {getattr(task, 'name', '') or type(task).__name__!r}"
    if not isinstance(task, Task):
        raise PluginError(f"{what} is a {type(task).__name__}, not a tlcore.Task subclass instance",
                          fix="register(MyTask()) with MyTask subclassing tlcore.Task or tlcore.ClassificationTask")
    if not task.name:
        raise PluginError(f"{type(task).__name__} has no `name`", fix="set the class attribute name = '...'")
    if not (isinstance(task.DataOptions, type) and issubclass(task.DataOptions, BaseModel)):
        raise PluginError(f"{what}: DataOptions must be a pydantic model class (subclass tlcore.Section)")
    if "path" not in task.DataOptions.model_fields:
        raise PluginError(f"{what}: DataOptions {task.DataOptions.__name__} has no `path` field, which "
                          "`tlapp run --data PATH` sets",
                          fix="declare `path: str | None = None` in the task's DataOptions (a tlcore.Section)")
    if not (isinstance(task.ModelOptions, type) and issubclass(task.ModelOptions, ModelSpec)):
        raise PluginError(f"{what}: ModelOptions must subclass tlcore.ModelSpec")
    try:
        validate(job_model(task.DataOptions, task.ModelOptions),
                 merge(task.recipe, {"plugin": task.plugin or "plugin", "task": task.name}), source="recipe")
    except TlappError as exc:
        raise PluginError(f"{what}: its recipe is not a valid job spec: {exc.what} ({exc.fix})",
                          fix="give every required option a value in `recipe` (e.g. model.backbone) or a default "
                              "in the options class") from None
