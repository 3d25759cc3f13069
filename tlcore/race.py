"""The race behind ``--strategy auto``: short runs of candidate strategies, scored on held-out data.

Rules of thumb about when to freeze what are tuned on somebody else's data; a race measures on the user's.
Every candidate starts from the same transferred weights and random state, and trains its own schedule
planned for the race's length (``race_fraction`` of the full run's epochs). Successive halving keeps the cost
down: every candidate trains to the first rung (half the race's length, at least one epoch), the better half
(ties go to the earlier, cheaper candidate) trains on from where it stopped to the next rung, until one is
left. A candidate's score is the race's metric (the task's headline metric, or ``strategy.metric``) at the
epoch with the best ``train.monitor`` among those it trained, since the full run keeps that epoch too.

Candidates are scored on the validation split, or, when that split is too small to tell them apart (fewer
than ``evaluation.min_samples`` samples or ``evaluation.min_groups`` groups), on k folds of the training
data, stratified by class and kept whole by group (a patient's images never on both sides). Held-out folds
are read without augmentation, as a validation split is.

The race runs on copies of the model, and leaves the global random state as it found it, so that the full
run of the winner trains exactly as a run with ``--strategy <winner>`` would.
"""

from __future__ import annotations

import copy
import logging
import math
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, cast
from collections.abc import Sized

import torch
from torch.utils.data import DataLoader, Subset

from . import checkpoint
from .compare import headline_metric, metric_mode
from .engine import is_improvement
from .features import FeatureCache
from .run import (Loop, LoopState, Prepared, Run, begin_phase, build_method, check_metric_name, train_and_validate,
                  train_loader)
from .splits import small_split_warning
from .strategies import Phase, Strategy, check_groups, phase_at, plan_phases
from .task import DataBundle, parameter_groups

log = logging.getLogger("tlapp")


@dataclass
class Fold:
    """What one lane trains and is scored on: the run's data with its ``train`` and ``val`` replaced."""

    name: str
    data: DataBundle


@dataclass
class Lane:
    """One candidate on one fold: its own copy of the model, optimizer and random state."""

    loop: Loop
    phases: list[Phase]
    rng: dict[str, Any]
    best: float | None = None  # of train.monitor, which picks the epoch a full run keeps
    score: float | None = None  # the race's metric at that epoch
    steps: int = 0
    seconds: float = 0.0

    def train_until(self, end: int, name: str, metric: str) -> None:
        loop = self.loop
        checkpoint.restore_rng(self.rng)
        started = time.perf_counter()
        for epoch in range(loop.state.epoch, end):
            index, phase = phase_at(self.phases, epoch)
            if index != loop.state.phase:
                begin_phase(loop, phase)
                loop.state.phase = index
            stats, val = train_and_validate(loop, phase, epoch, f"race {name} {epoch + 1}/{loop.budget.epochs}")
            value = val[loop.job.train.monitor]
            if is_improvement(value, self.best, loop.job.train.monitor_mode):
                self.best, self.score = value, val.get(metric)
            self.steps += stats["optimizer_steps"]
            loop.state.epoch = epoch + 1
        self.seconds += time.perf_counter() - started
        self.rng = checkpoint.rng_state()


@dataclass
class Candidate:
    strategy: Strategy
    lanes: list[Lane]
    rungs: list[dict[str, Any]] = field(default_factory=list)  # score after each rung it reached

    @property
    def name(self) -> str:
        return self.strategy.name

    def score(self) -> float | None:
        """The mean over folds of each lane's score; None when no lane has one."""
        values = [lane.score for lane in self.lanes if lane.score is not None and not math.isnan(lane.score)]
        return sum(values) / len(values) if values else None

    def record(self) -> dict[str, Any]:
        return {"strategy": self.name, "options": self.strategy.options.model_dump(), "score": self.score(),
                "epochs": self.lanes[0].loop.state.epoch, "optimizer_steps": sum(x.steps for x in self.lanes),
                "seconds": round(sum(x.seconds for x in self.lanes), 3), "rungs": self.rungs}


def race(run: Run, prepared: Prepared, strategies: list[Strategy], *, fraction: float, folds: int,
         race_on: str, metric: str | None) -> dict[str, Any]:
    """Race ``strategies`` (cheapest first) and return the record: the winner, every candidate's score and
    cost per rung, where the scores came from, and the race's length."""
    job, budget = run.job, prepared.budget
    assert budget is not None  # fit sized it before choosing
    length = max(1, math.ceil(fraction * budget.epochs))
    # Halving the field each rung leaves one candidate after ceil(log2(n)) rungs, ending at length, length/2...
    rungs = max(1, math.ceil(math.log2(len(strategies))))
    rung_ends = sorted({max(1, math.ceil(length / 2 ** k)) for k in range(rungs)})
    # Everything from here on, folds included (a data loader draws its base seed), must leave no trace on the
    # run that follows: the race ends by restoring the random state it found.
    rng = checkpoint.rng_state()
    splits, scored_on = race_folds(run, prepared, folds, race_on)
    metric, mode = race_metric(run, metric)
    log.info("auto: racing %s for up to %d of the run's %d epochs, scored by %s on %s at each one's best %s "
             "epoch (successive halving at epochs %s)", ", ".join(s.name for s in strategies), length,
             budget.epochs, metric, scored_on, job.train.monitor, ", ".join(map(str, rung_ends)))
    started = time.perf_counter()
    try:
        candidates = [Candidate(s, [_lane(run, prepared, s, fold, length, rng) for fold in splits])
                      for s in strategies]
        alive = list(candidates)
        for rung, end in enumerate(rung_ends):
            for candidate in alive:
                for lane in candidate.lanes:
                    lane.train_until(end, candidate.name, metric)
                candidate.rungs.append({"rung": rung, "epochs": end, "score": candidate.score()})
            alive = ranked(alive, mode)
            log.info("auto race, rung %d (%d epochs): %s", rung, end,
                     ", ".join(f"{c.name} {_shown(c.score())}" for c in alive))
            if end < rung_ends[-1]:
                alive = alive[:math.ceil(len(alive) / 2)]
        winner = alive[0]
    finally:
        checkpoint.restore_rng(rng)
    return {"winner": winner.name, "metric": metric, "mode": mode, "monitor": job.train.monitor,
            "scored_on": scored_on, "folds": len(splits) if len(splits) > 1 else None,
            "length_epochs": length, "run_epochs": budget.epochs, "rung_epochs": rung_ends,
            "seconds": round(time.perf_counter() - started, 3),
            "candidates": [c.record() for c in candidates]}


def race_metric(run: Run, asked: str | None) -> tuple[str, str]:
    """The validation metric the race ranks by, and whether higher ("max") or lower is better: ``asked``, else
    the task's headline metric (``train.monitor`` unless it is the loss, else the first metric it declares)."""
    job = run.job
    names = run.task.metric_names(job) or [job.train.monitor]
    if asked is None:
        return headline_metric(run.task, job, names)
    check_metric_name(asked, names, "strategy.metric")
    return asked, metric_mode(job, asked)


def ranked(candidates: list[Candidate], mode: str) -> list[Candidate]:
    """Best score first; undefined scores last; ties keep the given (cheapest first) order."""
    def key(c: Candidate) -> tuple[bool, float]:
        score = c.score()
        if score is None:
            return True, 0.0
        return False, -score if mode == "max" else score
    return sorted(candidates, key=key)


def _lane(run: Run, prepared: Prepared, strategy: Strategy, fold: Fold, length: int,
          rng: dict[str, Any]) -> Lane:
    job, budget = run.job, prepared.budget
    assert budget is not None
    model = copy.deepcopy(prepared.model)
    method = build_method(run, model)
    groups = parameter_groups(model) + method.parameter_groups()
    check_groups(model, groups)
    generator = torch.Generator()
    batches = train_loader(fold.data, job, generator, budget.batch_size)
    val_batches = DataLoader(fold.data.val, batch_size=job.train.batch_size, shuffle=False,
                             collate_fn=fold.data.collate_fn, num_workers=job.train.num_workers)
    features = FeatureCache(model, {"train": fold.data.train, "val": fold.data.val}, job.train.batch_size,
                            fold.data.collate_fn, job.train.num_workers, run.precision, run.context.device)
    scaler = torch.amp.GradScaler(run.context.device.type) if run.precision.needs_scaler else None
    loop = Loop(run, model, method, groups, LoopState(), None, scaler, features, generator, batches, val_batches,
                replace(budget, epochs=length))
    return Lane(loop, plan_phases(strategy, groups, length), rng)


def race_folds(run: Run, prepared: Prepared, k: int, race_on: str) -> tuple[list[Fold], str]:
    """The data each candidate trains and is scored on, and a phrase saying which."""
    data, job = prepared.data, run.job
    val_groups = data.groups.get("val")
    small = small_split_warning("val", len(cast(Sized, data.val)), len(set(val_groups)) if val_groups else None,
                                data.group_unit, min_samples=job.evaluation.min_samples,
                                min_groups=job.evaluation.min_groups)
    if race_on == "val" or (race_on == "auto" and small is None):
        return [Fold("val", data)], "the validation split"
    train_groups = data.groups.get("train")
    units = len(set(train_groups)) if train_groups else len(cast(Sized, data.train))
    if units < k:
        log.warning("auto: %d training %ss cannot make %d folds, so the race scores on the validation split",
                    units, data.group_unit, k)
        return [Fold("val", data)], "the validation split (too few training samples for folds)"
    plain = data.train
    if job.augment:  # held-out folds are read as validation data is: without augmentation
        plain = run.task.build_data(job.model_copy(update={"augment": None}), run.context).train
    labels = _labels(plain, data, job.train.batch_size)
    folds = []
    for i, (fit, held) in enumerate(_split(len(cast(Sized, data.train)), labels, train_groups, k, job.train.seed)):
        folds.append(Fold(f"fold {i + 1}", replace(data, train=Subset(data.train, fit), val=Subset(plain, held),
                                                   test=None, batch_sampler=None)))
    unit = f", whole {data.group_unit}s per fold" if train_groups else ""
    why = "a small validation split" if small else "strategy.race_on folds"
    return folds, f"{k} folds of the training data ({why}{unit})"


def _labels(dataset: Any, data: DataBundle, batch_size: int) -> list[int] | None:
    """Class indices of a single-label dataset, for stratified folds (multi-task: the first task's, as the
    plugins stratify their splits, with unlabelled samples a stratum of their own); None for other targets."""
    labels: list[int] = []
    for _, target in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=data.collate_fn):
        if isinstance(target, dict) and target:
            target = next(iter(target.values()))
        if not (isinstance(target, torch.Tensor) and target.dim() == 1 and not target.is_floating_point()):
            return None
        labels.extend(int(t) for t in target)
    return labels


def _split(size: int, labels: list[int] | None, groups: Any, k: int, seed: int):
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

    indices = list(range(size))
    with warnings.catch_warnings():  # "the least populated class has only n members": expected in few-shot data
        warnings.simplefilter("ignore", UserWarning)
        if labels is not None and groups:
            return list(StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(indices, labels, groups))
        if labels is not None:
            return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(indices, labels))
        if groups:
            return list(GroupKFold(k).split(indices, groups=groups))
        return list(KFold(k, shuffle=True, random_state=seed).split(indices))


def _shown(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.4g}"
