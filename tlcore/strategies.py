"""Transfer strategies: which parameter groups train, epoch by epoch, at which rate.

A strategy only names groups; models declare their groups from input to output
(``model.parameter_groups()``), so every strategy works on every plugin's model.
The engine applies a phase, then ``verify_phase`` proves the optimizer matches it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import nn

from .config import Section, validate_options
from .errors import ConfigError, TrainingError
from .registry import ParameterGroup


class StrategyOptions(Section):
    train_bn: bool = Field(False, description="let batch-norm statistics update in frozen groups")


@dataclass(frozen=True)
class Phase:
    """From ``start`` (inclusive) to ``end`` (exclusive) epoch: group name -> lr multiplier, None if frozen."""

    start: int
    end: int
    lr_mult: tuple[tuple[str, float | None], ...]
    train_bn: bool = False

    def mult(self, group: str) -> float | None:
        return dict(self.lr_mult)[group]

    @property
    def trainable(self) -> list[str]:
        return [g for g, m in self.lr_mult if m is not None]


class Strategy:
    """Base class. Subclasses set ``name``, ``Options`` and implement ``phases``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type[StrategyOptions]] = StrategyOptions
    # Scratch needs random weights whatever the job's init says.
    forces_init: ClassVar[str | None] = None

    def __init__(self, options: StrategyOptions):
        self.options = options

    @classmethod
    def from_spec(cls, raw_options: dict[str, Any]) -> Strategy:
        return cls(validate_options(cls.Options, raw_options, "strategy", cls.name))

    def phases(self, groups: list[ParameterGroup], epochs: int) -> list[Phase]:
        """The phases over ``epochs``, contiguous from epoch 0; ``groups`` excludes fixed groups."""
        raise NotImplementedError

    def choose(self, run: Any, prepared: Any, recorded: dict[str, Any] | None) -> tuple[Strategy, dict | None]:
        """The strategy that trains the run, and a record of why (``metrics.json`` ``strategy_choice``).

        Called once before training with the ``tlcore.Run`` and the built data and model. A fixed
        strategy returns itself; one that measures the data first (``auto``) returns the strategy
        it picked. ``recorded`` is the record of an interrupted run: return that same choice.
        """
        return self, None

    def check(self, registry: Any) -> None:
        """Refuse options that name what the ``tlcore.Registry`` lacks, before any data is read."""

    def review(self, run: Any, choice: dict[str, Any] | None) -> None:
        """Called once the run has finished, with its ``run.metrics`` complete and the record ``choose``
        returned: a strategy that chose may add to that record what only the finished run shows."""

    def _phase(self, start: int, end: int, mults: dict[str, float | None]) -> Phase:
        return Phase(start, end, tuple(mults.items()), train_bn=self.options.train_bn)


def _all(groups: list[ParameterGroup], mult: float = 1.0) -> dict[str, float | None]:
    return {g.name: mult for g in groups}


def _heads_only(groups: list[ParameterGroup], mult: float = 1.0) -> dict[str, float | None]:
    return {g.name: (mult if g.is_head else None) for g in groups}


def _decayed(groups: list[ParameterGroup], decay: float | None, overrides: dict[str, float],
             scale: float = 1.0) -> dict[str, float | None]:
    """Layer-wise decay from the head down: heads get ``scale``, each group below ``decay`` times less."""
    out: dict[str, float | None] = {}
    depth = 0
    for g in reversed(groups):
        if g.is_head:
            out[g.name] = scale
        else:
            depth += 1
            out[g.name] = scale * (decay**depth if decay is not None else 1.0)
    out = {g.name: out[g.name] for g in groups}
    for name, mult in overrides.items():
        if name not in out:
            raise ConfigError(f"strategy.lr_mult names unknown parameter group {name!r}",
                              fix=f"groups of this model: {', '.join(out)}")
        out[name] = scale * mult
    return out


class Scratch(Strategy):
    name = "scratch"
    description = "random initialisation, everything trained at the base rate"
    forces_init = "none"

    def phases(self, groups, epochs):
        return [self._phase(0, epochs, _all(groups))]


class LinearProbeOptions(StrategyOptions):
    head_lr_mult: float = Field(10.0, gt=0, description="base-rate multiplier of the head, trained alone: a new "
                                                       "head on frozen features takes a far higher rate than "
                                                       "pretrained layers being adapted")


class LinearProbe(Strategy):
    name = "linear-probe"
    description = "feature extraction: backbone frozen, head trained at head_lr_mult times the base rate"
    Options = LinearProbeOptions
    options: LinearProbeOptions

    def phases(self, groups, epochs):
        return [self._phase(0, epochs, _heads_only(groups, self.options.head_lr_mult))]


class FinetuneOptions(StrategyOptions):
    layer_decay: float | None = Field(0.7, gt=0, le=1, description="rate multiplier per group below the head")
    lr_mult: dict[str, float] = Field(default_factory=dict, description="explicit multiplier per group name")


class Finetune(Strategy):
    name = "finetune"
    description = "everything trained with discriminative rates (layer-wise decay from the head down)"
    Options = FinetuneOptions

    def phases(self, groups, epochs):
        return [self._phase(0, epochs, _decayed(groups, self.options.layer_decay, self.options.lr_mult))]


class FreezeUnfreezeOptions(FinetuneOptions):
    head_epochs: int = Field(1, ge=1, description="epochs training the head alone")
    unfrozen_lr_mult: float = Field(0.5, gt=0, description="base-rate multiplier once everything trains")


class FreezeUnfreeze(Strategy):
    name = "freeze-unfreeze"
    description = "head alone for head_epochs, then everything at a lower, discriminative rate (fastai fine_tune)"
    Options = FreezeUnfreezeOptions

    def phases(self, groups, epochs):
        o = self.options
        head_epochs = min(o.head_epochs, epochs)
        phases = [self._phase(0, head_epochs, _heads_only(groups))]
        if epochs > head_epochs:
            phases.append(self._phase(head_epochs, epochs,
                                      _decayed(groups, o.layer_decay, o.lr_mult, scale=o.unfrozen_lr_mult)))
        return phases


class GradualOptions(StrategyOptions):
    every: int = Field(1, ge=1, description="epochs between unfreezing one more group from the top")
    layer_decay: float | None = Field(None, gt=0, le=1)


class Gradual(Strategy):
    name = "gradual"
    description = "head first, then one more group unfrozen from the top every `every` epochs (ULMFiT)"
    Options = GradualOptions

    def phases(self, groups, epochs):
        below = [g.name for g in reversed(groups) if not g.is_head]
        full = _decayed(groups, self.options.layer_decay, {})
        phases, start, unfrozen = [], 0, 0
        while start < epochs:
            end = epochs if unfrozen >= len(below) else min(epochs, start + self.options.every)
            thawed = set(below[:unfrozen])
            mults = {g.name: (full[g.name] if g.is_head or g.name in thawed else None) for g in groups}
            phases.append(self._phase(start, end, mults))
            start, unfrozen = end, unfrozen + 1
        return phases


BUILTIN_STRATEGIES = [Scratch, LinearProbe, Finetune, FreezeUnfreeze, Gradual]


def plan_phases(strategy: Strategy, groups: list[ParameterGroup], epochs: int) -> list[Phase]:
    """The strategy's phases over the groups it may train; ``fixed`` groups stay frozen in every phase."""
    movable = [g for g in groups if not g.fixed]
    order = [g.name for g in groups]
    planned = []
    for phase in strategy.phases(movable, epochs):
        mults = {**dict(phase.lr_mult), **{g.name: None for g in groups if g.fixed}}
        planned.append(Phase(phase.start, phase.end, tuple((n, mults[n]) for n in order), phase.train_bn))
    return planned


def phase_at(phases: list[Phase], epoch: int) -> tuple[int, Phase]:
    for index, phase in enumerate(phases):
        if phase.start <= epoch < phase.end:
            return index, phase
    return len(phases) - 1, phases[-1]


def check_groups(model: nn.Module, groups: list[ParameterGroup]) -> None:
    """Every parameter of the model in exactly one group; group names unique."""
    names = [g.name for g in groups]
    if len(set(names)) != len(names):
        raise TrainingError(f"parameter group names repeat: {names}")
    owner: dict[int, str] = {}
    for g in groups:
        for p in g.parameters():
            if id(p) in owner:
                raise TrainingError(f"a parameter is in groups {owner[id(p)]!r} and {g.name!r}",
                                    fix="the model's parameter_groups() must partition its parameters")
            owner[id(p)] = g.name
    stray = [n for n, p in model.named_parameters() if id(p) not in owner]
    if stray:
        raise TrainingError(f"{len(stray)} parameters are in no parameter group, e.g. {stray[:3]}",
                            fix="the model's parameter_groups() must cover every parameter")


def apply_phase(model: nn.Module, groups: list[ParameterGroup], phase: Phase) -> None:
    """Set requires_grad per group and keep frozen batch-norm statistics fixed (unless train_bn)."""
    for g in groups:
        trainable = phase.mult(g.name) is not None
        for p in g.parameters():
            p.requires_grad_(trainable)


def set_train_mode(model: nn.Module, groups: list[ParameterGroup], phase: Phase) -> None:
    """model.train(), then frozen groups back to eval: fixed batch-norm statistics and no dropout,
    so a frozen part is a deterministic feature extractor. ``train_bn`` lets its statistics update."""
    model.train()
    for g in groups:  # a method's extra modules are groups too, outside the model
        trainable = phase.mult(g.name) is not None
        for module in g.modules:
            module.train(trainable)
            if not trainable and phase.train_bn:
                for m in module.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.train()


def optimizer_groups(groups: list[ParameterGroup], phase: Phase, base_lr: float) -> list[dict[str, Any]]:
    mults = {g.name: phase.mult(g.name) for g in groups}
    return [{"params": g.parameters(), "lr": base_lr * mult, "group": g.name}
            for g in groups if (mult := mults[g.name]) is not None]


def verify_phase(model: nn.Module, groups: list[ParameterGroup], phase: Phase,
                 optimizer: torch.optim.Optimizer, base_lr: float) -> list[dict[str, Any]]:
    """Prove the optimizer matches the phase; return the table (group, parameters, trainable, lr).

    Frozen parameters: requires_grad False and in no optimizer group. Trainable
    ones: requires_grad True, in exactly one optimizer group, at the configured rate.
    """
    in_optimizer: dict[int, list[dict]] = {}
    for og in optimizer.param_groups:
        for p in og["params"]:
            in_optimizer.setdefault(id(p), []).append(og)
    table = []
    for g in groups:
        mult = phase.mult(g.name)
        params = g.parameters()
        expected_lr = None if mult is None else base_lr * mult
        for p in params:
            owners = in_optimizer.get(id(p), [])
            if mult is None:
                if p.requires_grad or owners:
                    raise TrainingError(f"group {g.name!r} should be frozen but a parameter "
                                        f"{'requires grad' if p.requires_grad else 'is in the optimizer'}")
            elif expected_lr is not None:
                if not p.requires_grad:
                    raise TrainingError(f"group {g.name!r} should train but a parameter has requires_grad False")
                if len(owners) != 1:
                    raise TrainingError(f"a parameter of group {g.name!r} is in {len(owners)} optimizer groups")
                # The configured rate is the schedule's peak: OneCycle's max_lr, else the rate before warm-up.
                lr = owners[0].get("max_lr", owners[0].get("initial_lr", owners[0]["lr"]))
                if not _close(lr, expected_lr):
                    raise TrainingError(f"group {g.name!r} trains at lr {lr:g}, configured {expected_lr:g}")
        table.append({
            "group": g.name,
            "parameters": sum(p.numel() for p in params),
            "trainable": mult is not None,
            "lr": expected_lr,
            **({"fixed": True} if g.fixed else {}),
        })
    return table


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-12 + 1e-9 * abs(b)


def format_table(table: list[dict[str, Any]]) -> str:
    lines = [f"{'group':<20} {'parameters':>12} {'trainable':>9} {'lr':>10}"]
    for row in table:
        lr = "-" if row["lr"] is None else f"{row['lr']:.3g}"
        lines.append(f"{row['group']:<20} {row['parameters']:>12,} {str(row['trainable']):>9} {lr:>10}")
    return "\n".join(lines)


log = logging.getLogger("tlapp")
