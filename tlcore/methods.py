"""Training methods: the one seam through which a method adds to the loop what plain supervision lacks.

A method is the loss of a training step plus whatever that loss needs besides the model and the
labelled batch (the shape of TLlib's ``DomainAdversarialLoss(discriminator)``):

- extra modules that move to the device with the model: a teacher (frozen, evaluation mode), a
  domain discriminator or projection head (trainable: declared as parameter groups, so the
  optimizer, the strategy's phases and their verification cover them like the model's own);
- extra data streams iterated alongside the training loader: unlabelled target or pool data;
- the loss of a step, computed from all of them.

The engine knows no method by name: ``fit`` builds ``job.method.name`` from the registry, calls
``setup`` once, moves ``modules()`` to the device, adds ``parameter_groups()`` to the model's,
draws one batch of each ``extra_loaders(epoch)`` stream per training batch, and calls
``loss(model, batch, extras)``. ``state_dict`` goes into every checkpoint, so ``--resume`` is exact.
The default method, ``supervised``, is the task's own ``loss_function``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, cast
from collections.abc import Iterable, Sized

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

from .engine import to_device
from .config import JobSpec, Section, validate_options
from .errors import ConfigError
from .registry import ParameterGroup
from .seeding import sample_seed

if TYPE_CHECKING:
    from .run import Run
    from .task import DataBundle, Evaluator, Task


class MethodOptions(Section):
    """A method's options (``method.<key>`` in the job spec); unknown keys are errors."""


# The job-spec sections that choose a training method: section -> (the key naming the method, the name that
# chooses none there, the section's keys that are not the method's options). ``method`` always chooses one
# (supervised by default); ``adapt`` (domain adaptation), ``semi`` (semi-supervised learning) and ``pretrain``
# (self-supervised pretraining, ``tlapp pretrain``) choose theirs only when named, and a job names at most one.
SECTIONS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "method": ("name", "supervised", ()),
    "adapt": ("method", "none", ("target", "target_test")),
    "semi": ("method", "none", ("unlabelled",)),
    "pretrain": ("method", "none", ("data",)),
}


def chosen_method(job: JobSpec) -> tuple[str, str, dict[str, Any]]:
    """The section that chooses the job's training method, the method's name, and its options as given."""
    chosen = []
    for section, (key, unset, fixed) in SECTIONS.items():
        raw = getattr(job, section).model_dump()
        options = {k: v for k, v in raw.items() if k != key and k not in fixed}
        if raw[key] != unset:
            chosen.append((section, raw[key], options))
        elif section != "method" and options:
            extra = sorted(options)[0]
            raise ConfigError(f"{section}.{extra} is an option of a method, and {section}.{key} is {unset}",
                              where=f"{section}.{extra}",
                              fix=f"choose the method with --set {section}.{key}=NAME, or drop {section}.{extra}")
    if len(chosen) > 1:
        named = " and ".join(f"{s}.{SECTIONS[s][0]}={n}" for s, n, _ in chosen)
        raise ConfigError(f"one training method per job, and this one names {named}", where=chosen[1][0],
                          fix="keep one of them (compare the others with `tlapp compare --variant`)")
    if chosen:
        return chosen[0]
    return "method", "supervised", {k: v for k, v in job.method.model_dump().items() if k != "name"}


class Method:
    """Base class. Subclasses set ``name``, ``description``, ``Options`` and override what they add;
    ``section`` is the job-spec section that chooses it (``method.name``, ``adapt.method`` or ``semi.method``)
    and holds its options."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    section: ClassVar[str] = "method"
    Options: ClassVar[type[MethodOptions]] = MethodOptions
    # Head-only phases may train on cached backbone features only when the loss needs nothing but
    # the head's outputs and the labels (see tlcore.features).
    supports_feature_cache: ClassVar[bool] = False
    # A self-supervised method (``tlapp pretrain``) learns without labels: it brings its own data and evaluator
    # (``build_data``, ``evaluator``), and its run hands on only the backbone: ``--init run:DIR`` copies the
    # backbone's tensors and leaves the heads fresh. Only ``tlapp pretrain`` trains such a method.
    self_supervised: ClassVar[bool] = False

    def __init__(self, options: MethodOptions):
        self.options = options
        self.steps_done = 0  # optimizer steps so far in the run, kept across --resume (for ramps)
        self._sums: dict[str, list[float]] = {}  # name -> [sum, count] over the epoch, for ``measure``

    @classmethod
    def from_spec(cls, raw_options: dict[str, Any]) -> Method:
        key, _, fixed = SECTIONS[cls.section]
        return cls(validate_options(cls.Options, raw_options, cls.section, cls.name, fixed=(key, *fixed)))

    def check(self, job: JobSpec, task: Task) -> None:
        """Refuse, before any data is read, a job this method cannot serve (a task it does not apply to, a
        teacher run that is missing or of another task). Called when the job is resolved."""

    def build_data(self, run: Run) -> DataBundle | None:
        """The data the run trains and validates on, when the method brings its own (pretraining reads unlabelled
        data through ``Task.unlabelled_data``); None, the default: the task's labelled data. Called before the
        model is built, on an instance that is not set up."""
        return None

    def evaluator(self, run: Run, data: DataBundle) -> Evaluator | None:
        """What validation and the final evaluation measure, for a method that brings its own data (the pretext
        loss); called on the set-up method. None, the default: the task's evaluator."""
        return None

    def setup(self, run: Run, model: nn.Module) -> None:
        """Build what the method needs (a teacher from an earlier run, a discriminator sized to the
        model's features, unlabelled data through ``run.task.build_data``). Called once, after the
        model is built and its weights transferred, before resuming."""

    def modules(self) -> dict[str, nn.Module]:
        """Extra networks; the engine moves them to the run's device. Those not in
        ``parameter_groups()`` are put in evaluation mode and never trained."""
        return {}

    def parameter_groups(self) -> list[ParameterGroup]:
        """Trainable extra modules as parameter groups (``is_head=True`` to train whenever the
        head trains), verified against the optimizer with the model's groups."""
        return []

    def extra_loaders(self, epoch: int) -> dict[str, Iterable]:
        """Streams drawn alongside the training loader in ``epoch``: name -> iterable of batches. A
        stream that ends restarts. Seed their shuffling from (seed, epoch) so a resumed run draws
        the same batches as an uninterrupted one (``tlcore.seeded_loader`` does this)."""
        return {}

    def loss(self, model: nn.Module, batch: Any, extras: dict[str, Any]) -> tuple[torch.Tensor, int]:
        """The step's loss and its number of labelled samples; ``extras`` holds one batch of each
        extra stream, already on the device."""
        raise NotImplementedError

    def report(self, run: Run, model: nn.Module, data: DataBundle) -> dict[str, Any]:
        """Entries the method adds to metrics.json once the best weights are evaluated (``model`` holds them),
        e.g. distillation's teacher-against-student block. Empty by default."""
        return {}

    def on_step(self) -> None:
        """Called after each optimizer step."""
        self.steps_done += 1

    def measure(self, name: str, value: float, count: float = 1) -> None:
        """Add to the epoch's mean of ``name`` (``value`` is a mean over ``count`` samples)."""
        total = self._sums.setdefault(name, [0.0, 0.0])
        total[0] += value * count
        total[1] += count

    def epoch_summary(self) -> dict[str, Any]:
        """What the method measured over the epoch that just trained (a domain classifier's accuracy, the share
        of confident pseudo-labels), recorded in the epoch's history entry under the method's section; called
        once per epoch, after training and before validation. By default the epoch's means of what ``measure``
        was given (None for a name measured over no sample); empty when nothing was."""
        out: dict[str, Any] = {name: (s / n if n else None) for name, (s, n) in self._sums.items()}
        self._sums = {}
        return out

    def state_dict(self) -> dict[str, Any]:
        """What ``--resume`` needs: the trainable extra modules' weights and the step count."""
        return {"steps_done": self.steps_done,
                "modules": {name: module.state_dict() for name, module in self._trainable().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps_done = state.get("steps_done", 0)
        trainable = self._trainable()
        for name, module_state in state.get("modules", {}).items():
            trainable[name].load_state_dict(module_state)

    def _trainable(self) -> dict[str, nn.Module]:
        grouped = {id(m) for g in self.parameter_groups() for m in g.modules}
        return {name: m for name, m in self.modules().items() if id(m) in grouped}


def feature_width(model: nn.Module, job: JobSpec, what: str) -> int:
    """The width of the pooled features ``model.backbone`` returns, for a method (``what``) that builds on them."""
    width = getattr(getattr(model, "backbone", None), "num_features", None)
    if not isinstance(width, int):
        raise ConfigError(f"{what} needs the width of the backbone's features, and backbone {job.model.backbone!r} "
                          "has no integer `num_features`", where="model.backbone",
                          fix="choose a backbone that returns pooled features (see `tlapp plugins`)")
    return width


def pooled(backbone: nn.Module, inputs: Any, what: str) -> torch.Tensor:
    """``backbone(inputs)``, refused unless it is one feature vector per sample."""
    features = backbone(inputs)
    if not isinstance(features, torch.Tensor) or features.dim() != 2:
        raise ConfigError(f"{what} needs a backbone that returns one feature vector per sample", where="model.backbone",
                          fix="choose a backbone that returns pooled features (see `tlapp plugins`)")
    return features


class Supervised(Method):
    """The task's own loss on labelled batches (``Task.loss_function``): plain transfer learning."""

    name = "supervised"
    description = "the task's loss on its labelled training data"
    supports_feature_cache = True

    def setup(self, run: Run, model: nn.Module) -> None:
        self._loss = run.task.loss_function(run.job)

    def loss(self, model: nn.Module, batch: Any, extras: dict[str, Any]) -> tuple[torch.Tensor, int]:
        return self._loss(model, batch)


BUILTIN_METHODS = [Supervised]


class ExtraStreams:
    """One batch of each extra stream per draw, on the device; a stream that ends starts again."""

    def __init__(self, loaders: dict[str, Iterable], device: torch.device, channels_last: bool = False):
        self.loaders = loaders
        self.device, self.channels_last = device, channels_last
        self.iterators = {name: iter(loader) for name, loader in loaders.items()}

    def draw(self) -> dict[str, Any]:
        drawn = {}
        for name, iterator in self.iterators.items():
            try:
                batch = next(iterator)
            except StopIteration:
                self.iterators[name] = iterator = iter(self.loaders[name])
                batch = next(iterator)
            drawn[name] = to_device(batch, self.device, self.channels_last)
        return drawn


def seeded_loader(dataset: Dataset, batch_size: int, seed: int, epoch: int, *, collate_fn=None,
                  num_workers: int = 0, drop_last: bool = False) -> DataLoader:
    """A shuffled loader whose order depends only on (seed, epoch): what ``extra_loaders`` should return."""
    generator = torch.Generator().manual_seed(sample_seed(seed, epoch, 0x5EED))
    return DataLoader(dataset, batch_size=batch_size, sampler=RandomSampler(cast(Sized, dataset), generator=generator),
                      collate_fn=collate_fn, num_workers=num_workers, drop_last=drop_last, generator=generator)
