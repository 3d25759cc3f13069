"""Self-supervised pretraining (``tlapp pretrain``): train a task's backbone on unlabelled in-domain data, so that
fine-tuning on few labels starts from features of the domain (``tlapp run --init run:DIR``).

A pretraining run is a normal run through the normal engine (budget, strategy phases verified against the
optimizer, atomic checkpoints, exact ``--resume``, ``metrics.json``) whose method brings its own data and
evaluator: the files at ``pretrain.data``, read through ``Task.unlabelled_data`` with their labels absent or
ignored, split into a training part and a held-out part (``pretrain.val_fraction``) on which the pretext loss is
validated, picks the best epoch and is reported. Its checkpoints hand on only the backbone (see
``tlcore.transfer.HANDS_ON``).

Built in, for any task whose backbone returns one feature vector per sample and whose ``unlabelled_data`` draws
two views of a sample:

- ``simclr`` (Chen et al., 2020, "A Simple Framework for Contrastive Learning of Visual Representations"): the
  two views (the task's training augmentation and its strong one) of each sample pass the backbone and a
  two-layer projection head; the NT-Xent loss makes each view pick its partner out of the batch's other
  ``2n - 2`` views. The projection head is thrown away, as in the paper: the backbone is what transfers.

A plugin adds its own pretext task by subclassing ``Pretraining`` (the text plugin's masked language modelling).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast
from collections.abc import Sized

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.utils.data import Dataset

from .errors import ConfigError, DataError
from .methods import Method, MethodOptions, feature_width, pooled
from .registry import ParameterGroup
from .seeding import EpochSeeded
from .task import DataBundle, Evaluator, Task

if TYPE_CHECKING:
    from . import config as cfg
    from .run import Run

# What ``tlapp pretrain`` changes in a task's recipe, before the user's config and flags: the pretext loss picks
# the best epoch, and every layer learns at the base rate (the recipe's layer-wise decay protects pretrained
# lower layers while fine-tuning on labels; pretraining is what changes them).
PRETRAIN_DEFAULTS: dict[str, Any] = {
    "strategy": {"name": "finetune", "layer_decay": 1.0},
    "train": {"monitor": "loss", "monitor_mode": "min", "preview_batches": 0},
}


class PretrainOptions(MethodOptions):
    val_fraction: float = Field(0.1, gt=0, lt=1, description="share of the unlabelled data held out to validate "
                                                             "the pretext loss on (at least 2 samples)")


class Pretraining(Method):
    """Base class of a self-supervised method: the loss of a batch of unlabelled inputs (``pretext``).

    Subclasses set ``name``, ``description``, ``Options``, ``views`` (what ``Task.unlabelled_data`` is asked for:
    2 gives ``inputs`` as a ``(weak, strong)`` pair) and implement ``pretext``; trainable modules of their own (a
    projection or prediction head) go in ``modules`` and ``parameter_groups`` as for any method."""

    section = "pretrain"
    self_supervised = True
    Options: ClassVar[type[MethodOptions]] = PretrainOptions
    views: ClassVar[int] = 1
    # The classifier the task builds around the backbone while pretraining; its head is never trained or handed on.
    NUM_OUTPUTS: ClassVar[int] = 2

    def __init__(self, options: PretrainOptions):
        super().__init__(options)
        self.options: PretrainOptions = options

    def check(self, job: cfg.JobSpec, task: Task) -> None:
        if type(task).unlabelled_data is Task.unlabelled_data:
            raise ConfigError(f"task {task.name!r} of plugin {job.plugin} does not read unlabelled data, which "
                              f"{self.name} pretrains on", where="pretrain.method",
                              fix="pretrain a task whose plugin implements Task.unlabelled_data (see `tlapp plugins`)")
        path = job.pretrain.data
        if not path:
            raise ConfigError(f"pretraining with {self.name} needs unlabelled in-domain data", where="pretrain.data",
                              fix="pass --data PATH: files in the task's own format, labels absent or ignored")
        if not Path(path).exists():
            raise DataError(f"pretraining data not found: {path}", where="pretrain.data", fix="check --data")

    def build_data(self, run: Run) -> DataBundle:
        job = run.job
        path = cast(str, job.pretrain.data)
        unlabelled = run.task.unlabelled_data(job, run.context, Path(path), [], views=self.views)
        samples = len(cast(Sized, unlabelled.dataset))
        held_out = max(2, round(samples * self.options.val_fraction))
        if samples - held_out < 2:
            raise DataError(f"pretraining needs at least 4 samples (2 to train on, 2 held out), and {path} holds "
                            f"{samples}", where="pretrain.data", fix="pass more unlabelled data with --data")
        order = torch.randperm(samples, generator=torch.Generator().manual_seed(job.train.seed)).tolist()
        train, val = order[held_out:], order[:held_out]
        summary = {"data": path, "samples": samples, "train": len(train), "val": len(val), **unlabelled.summary}
        return DataBundle(train=Part(unlabelled.dataset, train), val=Part(unlabelled.dataset, val, epoch=0),
                          test=None, num_outputs=self.NUM_OUTPUTS, class_names=[],
                          collate_fn=unlabelled.collate_fn, summary=summary)

    def evaluator(self, run: Run, data: DataBundle) -> Evaluator:
        return PretextEvaluator(self)

    def pretext(self, model: nn.Module, inputs: Any) -> tuple[torch.Tensor, int, dict[str, float]]:
        """The pretext loss of a batch of ``inputs`` (a ``(weak, strong)`` pair when ``views`` is 2), its number
        of samples, and measures to report beside the loss (means over the batch, e.g. an accuracy)."""
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Any, extras: dict[str, Any]) -> tuple[torch.Tensor, int]:
        inputs, _hidden = batch
        loss, n, measures = self.pretext(model, inputs)
        for name, value in measures.items():
            self.measure(name, value, n)
        return loss, n

    def report(self, run: Run, model: nn.Module, data: Any) -> dict[str, Any]:
        return {"pretraining": {"method": self.name, "options": self.options.model_dump(),
                                "data": run.job.pretrain.data, "hands_on": "backbone",
                                "use_with": f"tlapp run --plugin {run.job.plugin} --init run:{run.directory}"}}


class Part(EpochSeeded, Dataset):
    """The samples at ``indices`` of a dataset that draws from (seed, epoch, index): the training part follows the
    engine's epochs; the held-out part (``epoch`` fixed) draws the same views every time it is validated, so its
    loss compares across epochs."""

    def __init__(self, dataset: Dataset, indices: list[int], epoch: int | None = None):
        self.dataset, self.indices, self.fixed = dataset, indices, epoch

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        if isinstance(self.dataset, EpochSeeded):
            self.dataset.set_epoch(self.epoch if self.fixed is None else self.fixed)
        return self.dataset[self.indices[index]]


class PretextEvaluator(Evaluator):
    """The pretext loss and the method's measures, averaged over the samples of the held-out part."""

    def __init__(self, method: Pretraining):
        self.method = method
        self.sums: dict[str, float] = {}
        self.samples = 0

    def update(self, model: nn.Module, batch: Any) -> None:
        inputs, _hidden = batch
        loss, n, measures = self.method.pretext(model, inputs)
        for name, value in {"loss": float(loss), **measures}.items():
            self.sums[name] = self.sums.get(name, 0.0) + value * n
        self.samples += n

    def compute(self) -> dict[str, Any]:
        return {name: total / max(self.samples, 1) for name, total in self.sums.items()}


class SimclrOptions(PretrainOptions):
    temperature: float = Field(0.5, gt=0, description="the NT-Xent softmax temperature")
    projection: int = Field(128, ge=1, description="width of the projection head's output")


def nt_xent(first: torch.Tensor, second: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SimCLR's NT-Xent loss of two views' projections (row i of each is one sample), and per view whether its
    partner was the most similar of the other ``2n - 1`` views."""
    n = len(first)
    z = F.normalize(torch.cat([first, second]).float(), dim=1)
    similarity = z @ z.T / temperature
    similarity.fill_diagonal_(float("-inf"))  # a view is not its own partner
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    loss = F.cross_entropy(similarity, partner)
    return loss, (similarity.argmax(dim=1) == partner).float()


class Simclr(Pretraining):
    name = "simclr"
    description = ("contrastive pretraining (Chen et al. 2020): two augmented views of each sample pick each other "
                   "out of the batch (tlapp pretrain --method simclr)")
    Options = SimclrOptions
    views = 2

    def __init__(self, options: SimclrOptions):
        super().__init__(options)
        self.options: SimclrOptions = options
        self.projection: nn.Module | None = None

    def setup(self, run: Run, model: nn.Module) -> None:
        width = feature_width(model, run.job, self.name)
        self.backbone = cast(nn.Module, model.backbone)
        # Built from its own seed, as DANN's discriminator: the model's initialisation must not depend on it.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(run.job.train.seed)
            self.projection = nn.Sequential(nn.Linear(width, width), nn.ReLU(),
                                            nn.Linear(width, self.options.projection))

    def modules(self) -> dict[str, nn.Module]:
        return {"projection": self.projection} if self.projection is not None else {}

    def parameter_groups(self) -> list[ParameterGroup]:
        if self.projection is None:
            return []
        return [ParameterGroup("projection_head", [self.projection], is_head=True)]

    def pretext(self, model: nn.Module, inputs: Any) -> tuple[torch.Tensor, int, dict[str, float]]:
        assert self.projection is not None  # setup built it
        first, second = inputs
        projected = [self.projection(pooled(self.backbone, view, self.name)) for view in (first, second)]
        loss, found = nt_xent(projected[0], projected[1], self.options.temperature)
        # One sample has no negatives: its loss says nothing, so it counts for nothing (a last held-out batch).
        n = len(projected[0]) if len(projected[0]) > 1 else 0
        return loss, n, {"contrastive_accuracy": float(found.mean())}


PRETRAINING_METHODS = [Simclr]
