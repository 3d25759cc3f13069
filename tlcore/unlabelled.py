"""What the methods that learn from unlabelled data share (domain adaptation's target data, semi-supervised
learning's pool): the job checks, reading the data through ``Task.unlabelled_data``, the seeded stream drawn
alongside the labelled batches, per-epoch measurements, and the metrics.json block."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast
from collections.abc import Iterable, Sized

from torch import nn

from .classification import ClassificationTask
from .errors import ConfigError, DataError
from .methods import SECTIONS, Method, seeded_loader
from .seeding import EpochSeeded
from .task import Task, UnlabelledData

if TYPE_CHECKING:
    from . import config as cfg
    from .run import Run


class FromUnlabelled(Method):
    """Base class: a method whose loss also draws batches of ``Task.unlabelled_data`` (stream ``unlabelled``).

    Subclasses set ``data_key`` (the section's key naming the data), ``flag`` (the CLI flag that sets it),
    ``what`` (what the data is, for messages), ``views`` (2 for a weak and a strong view) and ``report_key``."""

    data_key: ClassVar[str] = ""
    flag: ClassVar[str] = ""
    what: ClassVar[str] = ""
    report_key: ClassVar[str] = ""
    views: ClassVar[int] = 1

    def __init__(self, options: Any):
        super().__init__(options)
        self.data: UnlabelledData | None = None
        self.batch_size = 1
        self.total_steps = 1  # optimizer steps in the whole run, for ramps
        self.seed = 0

    def data_path(self, job: cfg.JobSpec) -> str | None:
        return getattr(getattr(job, self.section), self.data_key)

    def check(self, job: cfg.JobSpec, task: Task) -> None:
        option = f"{self.section}.{SECTIONS[self.section][0]}"
        if not isinstance(task, ClassificationTask):
            raise ConfigError(f"{self.name} learns from the pooled features and class outputs of a classification "
                              f"model; plugin {job.plugin}'s task {task.name!r} is not one", where=option,
                              fix=f"train without {option}; the plugin's README says why and what it offers instead")
        if type(task).unlabelled_data is Task.unlabelled_data:
            raise ConfigError(f"task {task.name!r} of plugin {job.plugin} does not read unlabelled data, which "
                              f"{self.name} trains on", where=option,
                              fix=f"train without {option} (its plugin would implement Task.unlabelled_data)")
        path = self.data_path(job)
        where = f"{self.section}.{self.data_key}"
        if not path:
            raise ConfigError(f"{option} {self.name} needs {self.what}", where=where,
                              fix=f"pass {self.flag} PATH: files in the task's own format, labels absent or ignored")
        if not Path(path).exists():
            raise DataError(f"{self.what} not found: {path}", where=where, fix=f"check {self.flag}")

    def setup(self, run: Run, model: nn.Module) -> None:
        self._loss = run.task.loss_function(run.job)
        path = cast(str, self.data_path(run.job))
        self.data = run.task.unlabelled_data(run.job, run.context, Path(path), run.built_data.class_names,
                                             views=self.views)
        if not len(cast(Sized, self.data.dataset)):
            raise DataError(f"{self.what} holds no sample", where=path,
                            fix=f"pass {self.flag} a folder or file with inputs the task reads")
        assert run.budget is not None  # fit sized it before the method is set up
        self.batch_size = run.budget.batch_size * self.batch_ratio()
        self.total_steps = max(1, run.budget.epochs * run.budget.steps_per_epoch)
        self.seed = run.job.train.seed

    def batch_ratio(self) -> int:
        """Unlabelled samples per labelled sample in a step."""
        return 1

    def extra_loaders(self, epoch: int) -> dict[str, Iterable]:
        assert self.data is not None
        dataset = self.data.dataset
        if isinstance(dataset, EpochSeeded):
            dataset.set_epoch(epoch)
        size = min(self.batch_size, len(cast(Sized, dataset)))
        return {"unlabelled": seeded_loader(dataset, size, self.seed, epoch, collate_fn=self.data.collate_fn,
                                            drop_last=True)}

    def report(self, run: Run, model: nn.Module, data: Any) -> dict[str, Any]:
        assert self.data is not None
        return {self.report_key: {"method": self.name, "options": self.options.model_dump(),
                                  "data": self.data_path(run.job),
                                  "samples": len(cast(Sized, self.data.dataset)), "summary": self.data.summary}}

