"""Every strategy, every phase: exactly the configured frozen set, trainable set and learning rates."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tlcore.errors import ConfigError, TrainingError
from tlcore.registry import ParameterGroup
from tlcore.strategies import (BUILTIN_STRATEGIES, Finetune, FreezeUnfreeze, Gradual, LinearProbe, Scratch,
                               apply_phase, check_groups, optimizer_groups, set_train_mode, verify_phase)

BASE_LR = 0.01


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.stage1 = nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))
        self.stage2 = nn.Conv2d(4, 4, 3)
        self.head = nn.Linear(4, 2)

    def parameter_groups(self):
        return [ParameterGroup("stem", [self.stem]), ParameterGroup("stage1", [self.stage1]),
                ParameterGroup("stage2", [self.stage2]), ParameterGroup("head", [self.head], is_head=True)]


def setup(strategy, epochs):
    net = Net()
    groups = net.parameter_groups()
    check_groups(net, groups)
    return net, groups, strategy.phases(groups, epochs)


def state_of(net, groups, phase):
    """Apply the phase, build the optimizer, verify; return {group: lr or None} as the optimizer sees it."""
    apply_phase(net, groups, phase)
    opt = torch.optim.SGD(optimizer_groups(groups, phase, BASE_LR), lr=BASE_LR)
    table = verify_phase(net, groups, phase, opt, BASE_LR)
    seen = {g["group"]: g["lr"] for g in opt.param_groups}
    for g in groups:
        assert all(p.requires_grad == (g.name in seen) for p in g.parameters())
    assert {row["group"]: row["lr"] for row in table} == {g.name: seen.get(g.name) for g in groups}
    return {g.name: seen.get(g.name) for g in groups}


def approx(d):
    return {k: (None if v is None else pytest.approx(v)) for k, v in d.items()}


def test_scratch_trains_everything_and_forces_random_init():
    net, groups, phases = setup(Scratch(Scratch.Options()), 3)
    assert len(phases) == 1 and Scratch.forces_init == "none"
    assert state_of(net, groups, phases[0]) == approx({"stem": 0.01, "stage1": 0.01, "stage2": 0.01, "head": 0.01})


def test_linear_probe_trains_only_the_head_at_its_own_rate():
    net, groups, phases = setup(LinearProbe(LinearProbe.Options(head_lr_mult=1.0)), 3)
    assert state_of(net, groups, phases[0]) == {"stem": None, "stage1": None, "stage2": None, "head": 0.01}
    net, groups, phases = setup(LinearProbe(LinearProbe.Options()), 3)  # default: ten times the base rate
    assert state_of(net, groups, phases[0]) == approx({"stem": None, "stage1": None, "stage2": None, "head": 0.1})


def test_finetune_layer_decay_and_explicit_multipliers():
    net, groups, phases = setup(Finetune(Finetune.Options(layer_decay=0.5)), 2)
    assert state_of(net, groups, phases[0]) == approx(
        {"stem": 0.01 * 0.125, "stage1": 0.01 * 0.25, "stage2": 0.01 * 0.5, "head": 0.01})
    net, groups, phases = setup(Finetune(Finetune.Options(layer_decay=None, lr_mult={"stem": 0.1})), 2)
    assert state_of(net, groups, phases[0]) == approx({"stem": 0.001, "stage1": 0.01, "stage2": 0.01, "head": 0.01})
    with pytest.raises(ConfigError, match="unknown parameter group 'stme'"):
        setup(Finetune(Finetune.Options(lr_mult={"stme": 0.1})), 2)


def test_freeze_unfreeze_phases():
    strategy = FreezeUnfreeze(FreezeUnfreeze.Options(head_epochs=2, unfrozen_lr_mult=0.5, layer_decay=0.5))
    net, groups, phases = setup(strategy, 5)
    assert [(p.start, p.end) for p in phases] == [(0, 2), (2, 5)]
    assert state_of(net, groups, phases[0]) == {"stem": None, "stage1": None, "stage2": None, "head": 0.01}
    assert state_of(net, groups, phases[1]) == approx(
        {"stem": 0.005 * 0.125, "stage1": 0.005 * 0.25, "stage2": 0.005 * 0.5, "head": 0.005})


def test_gradual_unfreezes_one_group_from_the_top_each_step():
    net, groups, phases = setup(Gradual(Gradual.Options(every=2)), 9)
    assert [(p.start, p.end) for p in phases] == [(0, 2), (2, 4), (4, 6), (6, 9)]
    trainable = [set(p.trainable) for p in phases]
    assert trainable == [{"head"}, {"head", "stage2"}, {"head", "stage2", "stage1"},
                         {"head", "stage2", "stage1", "stem"}]
    for phase in phases:
        lrs = state_of(net, groups, phase)
        assert all(v == pytest.approx(0.01) for v in lrs.values() if v is not None)


def test_frozen_batch_norm_statistics_stay_unless_train_bn():
    net, groups, phases = setup(LinearProbe(LinearProbe.Options()), 1)
    apply_phase(net, groups, phases[0])
    set_train_mode(net, groups, phases[0])
    assert not net.stem[1].training and not net.stage1[1].training and net.head.training
    before = net.stem[1].running_mean.clone()
    net.stage2(net.stage1(net.stem(torch.randn(2, 3, 9, 9))))
    assert torch.equal(before, net.stem[1].running_mean)

    net, groups, phases = setup(LinearProbe(LinearProbe.Options(train_bn=True)), 1)
    set_train_mode(net, groups, phases[0])
    assert net.stem[1].training


def test_verification_catches_a_frozen_parameter_in_the_optimizer():
    net, groups, phases = setup(LinearProbe(LinearProbe.Options()), 1)
    apply_phase(net, groups, phases[0])
    opt_groups = optimizer_groups(groups, phases[0], BASE_LR)
    opt_groups.append({"params": list(net.stem.parameters()), "lr": BASE_LR, "group": "stem"})
    for p in net.stem.parameters():
        p.requires_grad_(True)
    with pytest.raises(TrainingError, match="'stem' should be frozen"):
        verify_phase(net, groups, phases[0], torch.optim.SGD(opt_groups, lr=BASE_LR), BASE_LR)


def test_verification_catches_a_wrong_rate_and_a_missing_group():
    net, groups, phases = setup(Finetune(Finetune.Options(layer_decay=0.5)), 1)
    apply_phase(net, groups, phases[0])
    opt_groups = optimizer_groups(groups, phases[0], BASE_LR)
    opt_groups[0]["lr"] *= 2
    with pytest.raises(TrainingError, match="trains at lr"):
        verify_phase(net, groups, phases[0], torch.optim.SGD(opt_groups, lr=BASE_LR), BASE_LR)
    opt_groups = optimizer_groups(groups, phases[0], BASE_LR)[1:]
    with pytest.raises(TrainingError, match="in 0 optimizer groups"):
        verify_phase(net, groups, phases[0], torch.optim.SGD(opt_groups, lr=BASE_LR), BASE_LR)


def test_groups_must_partition_the_model():
    net = Net()
    with pytest.raises(TrainingError, match="in no parameter group"):
        check_groups(net, net.parameter_groups()[:-1])
    groups = net.parameter_groups() + [ParameterGroup("again", [net.head])]
    with pytest.raises(TrainingError, match="is in groups"):
        check_groups(net, groups)


@pytest.mark.parametrize("cls", BUILTIN_STRATEGIES, ids=lambda c: c.name)
def test_every_phase_of_every_strategy_verifies(cls):
    net, groups, phases = setup(cls(cls.Options()), 6)
    assert phases[0].start == 0 and phases[-1].end == 6
    assert all(a.end == b.start for a, b in zip(phases, phases[1:]))
    for phase in phases:
        state_of(net, groups, phase)


@pytest.mark.parametrize("strategy_class", [s for s in BUILTIN_STRATEGIES])
def test_fixed_groups_never_train_under_any_strategy(strategy_class):
    from tlcore.strategies import plan_phases

    net = Net()
    groups = net.parameter_groups()
    groups[0] = ParameterGroup("stem", [net.stem], fixed=True)
    check_groups(net, groups)
    phases = plan_phases(strategy_class(strategy_class.Options()), groups, 6)
    for phase in phases:
        assert [name for name, _ in phase.lr_mult] == ["stem", "stage1", "stage2", "head"]
        lrs = state_of(net, groups, phase)
        assert lrs["stem"] is None and lrs["head"] is not None
        set_train_mode(net, groups, phase)
        assert not net.stem.training
    if strategy_class in (Scratch, Finetune):
        assert state_of(net, groups, phases[-1])["stage1"] is not None
