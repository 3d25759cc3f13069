"""A tiny third-party-style plugin used by the core tests: vectors, an MLP backbone, one task (several label
columns with ``data.label_columns``, for multi-task learning)."""

from __future__ import annotations

import difflib
import os

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from tlcore import (MISSING, Backbone, ClassicalInputs, ClassificationTask, ConfigError, DataBundle, DataError,
                    EpochSeeded, Method, MethodOptions, ParameterGroup, Section, Strategy, TaskLabels, UnlabelledData,
                    hookimpl, multitask_targets, sample_seed, seeded_loader)


class Noisy(EpochSeeded, Dataset):
    """Adds Gaussian noise drawn from (seed, epoch, index): a random augmentation."""

    def __init__(self, base, scale, seed):
        self.base, self.scale, self.seed, self.epoch = base, scale, seed, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, i))
        return x + self.scale * torch.randn(x.shape, generator=g), y


class ToyNet(nn.Module):
    def __init__(self, width: int = 16, dim: int = 8):
        super().__init__()
        self.layer1 = nn.Sequential(nn.Linear(dim, width), nn.BatchNorm1d(width), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Dropout(0.1))
        self.num_features = width

    def forward(self, x):
        return self.layer2(self.layer1(x))


def toy_groups(net: ToyNet) -> list[ParameterGroup]:
    return [ParameterGroup("layer1", [net.layer1]), ParameterGroup("layer2", [net.layer2])]


def toy_weights(net: ToyNet) -> dict:
    g = torch.Generator().manual_seed(1234)
    fresh = ToyNet(net.num_features).state_dict()
    # Random but valid "pretrained" weights: variances must stay positive.
    return {k: (torch.rand(v.shape, generator=g) + 0.5 if "running_var" in k else torch.randn(v.shape, generator=g))
            if v.is_floating_point() else v for k, v in fresh.items()}


class ToyData(Section):
    path: str | None = None
    n: int = 64
    dim: int = 8
    label_columns: list[str] | None = None  # multi-task: some of TOY_COLUMNS; null: one label, the blob


# The label columns of the toy's table: which blob a vector comes from (a, b), the sign of its second coordinate
# (neg, pos), and which of its first two coordinates are large (x0, x1: multi-label, possibly none).
TOY_COLUMNS = ("blob", "sign", "parts")


def toy_cells(x, y, i):
    """Sample ``i``'s raw label cells, some left empty as in a partly labelled table."""
    return {"blob": None if i % 7 == 3 else "ab"[int(y[i])],
            "sign": None if i % 4 == 1 else ("pos" if x[i, 1] > 0 else "neg"),
            "parts": None if i % 5 == 2 else [f"x{d}" for d in (0, 1) if x[i, d] > 0.75]}


class Labelled(Dataset):
    """Vectors with a target per task."""

    def __init__(self, x, targets):
        self.x, self.targets = x, targets

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.targets[i]


def domain_shift(path) -> float:
    """The toy's domains: ``data.path`` (or ``--target-data``/``--target-test``) is a text file holding the shift
    added to every vector of that domain; no path (or a folder) is the source domain, shift 0."""
    if path is None or not os.path.isfile(path):
        return 0.0
    try:
        return float(open(path).read())
    except (OSError, ValueError) as exc:
        raise DataError(f"toy domain file {path} does not hold a number: {exc}", where=str(path),
                        fix="write the domain's shift, e.g. 2.5") from None


class Views(EpochSeeded, Dataset):
    """Unlabelled vectors: ``(x + noise, hidden)``, or with two views ``((weak, strong), hidden)``."""

    def __init__(self, x, hidden, views, seed):
        self.x, self.hidden, self.views, self.seed, self.epoch = x, hidden, views, seed, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, i))
        weak = self.x[i] + 0.05 * torch.randn(self.x[i].shape, generator=g)
        if self.views == 1:
            return weak, self.hidden[i]
        return (weak, self.x[i] + 0.5 * torch.randn(self.x[i].shape, generator=g)), self.hidden[i]


class ToyTask(ClassificationTask):
    name = "vectors"
    description = "two Gaussian blobs"
    DataOptions = ToyData
    supports_multitask = True
    recipe = {
        "data": {"n": 64},
        "model": {"backbone": "toy-mlp", "init": "toy", "metrics": ["accuracy", "f1_macro", "auroc"]},
        "train": {"epochs": 2, "batch_size": 8, "lr": 0.01},
        "strategy": {"name": "finetune"},
        "evaluation": {"bootstrap": 200},  # enough to test intervals with, and quick
    }

    def build_data(self, job, context, *, for_training=True):
        x, y = self._vectors(job, job.data.path)
        n = len(x)
        third = n // 3
        split = lambda a, b: TensorDataset(x[a:b], y[a:b])  # noqa: E731
        about = {"num_outputs": 2, "class_names": ["a", "b"], "summary": {"samples": n}}
        if not for_training:  # `tlapp evaluate --data`, adapt.target_test: every sample is a test sample
            return DataBundle(train=split(0, 0), val=split(0, 0), test=split(0, n), **about,
                              groups={"test": [i // 3 for i in range(n)]}, group_unit="site")
        if job.data.label_columns:
            split, about = self._tasks(job, x, y, n - 2 * third)
        train = split(0, n - 2 * third)
        if job.augment:
            train = Noisy(train, **context.registry.augmentations[job.augment].factory(0), seed=job.train.seed)
        # Test samples come in threes drawn from one "site", so intervals resample whole sites; training
        # samples in twos (one of each class), so auto's folds keep whole sites.
        groups = {"train": [i // 2 for i in range(n - 2 * third)], "test": [i // 3 for i in range(third)]}
        return DataBundle(train=train, val=split(n - 2 * third, n - third),
                          test=split(n - third, n), **about, groups=groups, group_unit="site")

    @staticmethod
    def _vectors(job, path, seed=7):
        g = torch.Generator().manual_seed(seed)
        n, dim = job.data.n, job.data.dim
        y = torch.arange(n) % 2
        return torch.randn(n, dim, generator=g) + y[:, None].float() * 1.5 + domain_shift(path), y

    def unlabelled_data(self, job, context, path, class_names, *, views=1):
        x, y = self._vectors(job, path, seed=8)  # other vectors than the labelled ones
        hidden = y if list(class_names) == ["a", "b"] else torch.full_like(y, MISSING)
        return UnlabelledData(Views(x, hidden, views, job.train.seed), summary={"samples": len(x)})

    def _tasks(self, job, x, y, train_end):
        """The multi-task side of build_data, as a plugin with label columns does it (see tlcore.multitask)."""
        for column in job.data.label_columns:
            if column not in TOY_COLUMNS:
                close = difflib.get_close_matches(column, TOY_COLUMNS, n=1)
                raise ConfigError(f"the toy data has no label column {column!r}", where="data.label_columns",
                                  fix=(f"did you mean {close[0]!r}? " if close else "")
                                  + f"its columns: {', '.join(TOY_COLUMNS)}")
        specs = self.task_specs(job, job.data.label_columns)
        cells = [toy_cells(x, y, i) for i in range(len(x))]
        tasks = []
        for name, spec in specs.items():
            found = {c for cell in cells for c in ([cell[name]] if isinstance(cell[name], str) else cell[name] or [])}
            tasks.append(TaskLabels(name, sorted(found), spec.multilabel))
        targets = [multitask_targets(tasks, cell, where=f"sample {i}") for i, cell in enumerate(cells)]
        labelled = self.check_tasks(job, tasks, targets[:train_end])
        return (lambda a, b: Labelled(x[a:b], targets[a:b])), {
            "num_outputs": {t.name: t.num_outputs for t in tasks},
            "class_names": {t.name: t.class_names for t in tasks},
            "summary": {"samples": len(x), "labelled_for_training": labelled}}


    def preview(self, job, data, context, batch, path):
        # The batch itself, so tests can check it is the one training received first.
        torch.save(batch, path.with_suffix(".pt"))
        return path.with_suffix(".pt")

    def classical_inputs(self, job, data, split):
        if job.data.label_columns:
            return None
        from sklearn.preprocessing import StandardScaler

        def rows(dataset):
            x, y = getattr(dataset, "base", dataset).tensors  # the vectors without Noisy's augmentation
            return x.numpy(), y.tolist()

        return ClassicalInputs("logistic regression on the raw vectors", StandardScaler(), *rows(data.train),
                               *rows(getattr(data, split)))


EPOCH_ENDS: list[int] = []


@hookimpl
def register_backbones(register):
    register(Backbone(name="toy-mlp", build=ToyNet, weights={"toy": toy_weights}, parameter_groups=toy_groups,
                      description="two-layer MLP"))


@hookimpl
def register_tasks(register):
    register(ToyTask())


@hookimpl
def register_heads(register):
    register("toy-head", lambda d, n, scale=1.0: nn.Linear(d, n), "a plain linear head")


@hookimpl
def register_augmentations(register):
    register("toy-noise", lambda image_size, scale=0.3: {"scale": scale}, "Gaussian noise on the vectors")


@hookimpl
def on_epoch_end(run, epoch, logs):
    EPOCH_ENDS.append(epoch)
    # Lets a test interrupt a run for real, the way Ctrl-C would, after a given epoch.
    limit = os.environ.get("TLAPP_TOY_INTERRUPT_AFTER")
    if limit is not None and epoch >= int(limit):
        raise KeyboardInterrupt("simulated interruption")


class HeadAllHead(Strategy):
    """Head, then everything, then head again: the backbone changes between two head-only phases."""

    name = "head-all-head"
    description = "head for 2 epochs, everything for 1, head again"

    def phases(self, groups, epochs):
        head = {g.name: (1.0 if g.is_head else None) for g in groups}
        every = {g.name: 1.0 for g in groups}
        return [self._phase(0, 2, head), self._phase(2, 3, every), self._phase(3, epochs, head)]


class AlignOptions(MethodOptions):
    weight: float = 0.1


class ToyAlign(Method):
    """A method in the shape of domain adaptation: a trainable critic on the backbone's features and an
    unlabelled stream drawn alongside the labelled batches; the loss uses both."""

    name = "toy-align"
    description = "task loss plus a critic on unlabelled features"
    Options = AlignOptions
    DRAWN: list[int] = []

    def setup(self, run, model):
        self.task_loss = run.task.loss_function(run.job)
        self.critic = nn.Linear(model.backbone.num_features, 1)
        torch.manual_seed(99)  # moves the global RNG: resume must still be exact
        self.unlabelled = TensorDataset(run.data.train.tensors[0] if hasattr(run.data.train, "tensors")
                                        else run.data.train.base.tensors[0])
        self.seed, self.batch_size = run.job.train.seed, run.job.train.batch_size

    def modules(self):
        return {"critic": self.critic}

    def parameter_groups(self):
        return [ParameterGroup("critic", [self.critic], is_head=True)]

    def extra_loaders(self, epoch):
        return {"unlabelled": seeded_loader(self.unlabelled, self.batch_size, self.seed, epoch)}

    def loss(self, model, batch, extras):
        (unlabelled,) = extras["unlabelled"]
        ToyAlign.DRAWN.append(len(unlabelled))
        loss, n = self.task_loss(model, batch)
        critic = self.critic(model.backbone(unlabelled)).mean()
        return loss + self.options.weight * critic.pow(2), n


@hookimpl
def register_strategies(register):
    register(HeadAllHead)


@hookimpl
def register_methods(register):
    register(ToyAlign)
