"""The loop's arithmetic: gradient accumulation, clipping, schedules, non-finite loss, atomic checkpoints."""

from __future__ import annotations

import errno

import pytest
import torch
from torch import nn

from tlcore import checkpoint
from tlcore.config import TrainSpec
from tlcore.device import resolve_precision
from tlcore.engine import train_one_epoch
from tlcore.errors import TlappError, TrainingError
from tlcore.schedule import make_optimizer, make_scheduler

CPU = torch.device("cpu")
FP32 = resolve_precision("fp32", CPU)


def mse(model, batch):
    x, y = batch
    return ((model(x) - y) ** 2).mean(), len(x)


def batches(sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, 3, generator=g), torch.randn(n, 1, generator=g)) for n in sizes]


def one_epoch(loader, accum, clip=None, lr=0.1):
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)
    stats = train_one_epoch(model, mse, loader, opt, sched, None, FP32, CPU, grad_accum=accum, clip_grad_norm=clip)
    return model, stats


def test_accumulation_equals_one_big_batch():
    small = batches([4, 4])
    big = [(torch.cat([small[0][0], small[1][0]]), torch.cat([small[0][1], small[1][1]]))]
    accumulated, stats = one_epoch(small, accum=2)
    single, _ = one_epoch(big, accum=1)
    assert stats["optimizer_steps"] == 1
    for a, b in zip(accumulated.parameters(), single.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_short_last_window_is_not_under_weighted():
    loader = batches([4, 4, 4])
    accumulated, stats = one_epoch(loader, accum=2)
    assert stats["optimizer_steps"] == 2
    # Reference: step on the mean of batches 0-1, then on batch 2 alone at full weight.
    torch.manual_seed(0)
    ref = nn.Linear(3, 1)
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for window in ([loader[0], loader[1]], [loader[2]]):
        opt.zero_grad()
        sum(mse(ref, b)[0] for b in window).div(len(window)).backward()
        opt.step()
    for a, b in zip(accumulated.parameters(), ref.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_gradient_clipping_bounds_the_step():
    loader = [(torch.ones(2, 3) * 100, torch.zeros(2, 1))]
    torch.manual_seed(0)
    start = [p.detach().clone() for p in nn.Linear(3, 1).parameters()]
    clipped, _ = one_epoch(loader, accum=1, clip=0.5, lr=1.0)
    step = torch.cat([(p.detach() - s).flatten() for p, s in zip(clipped.parameters(), start)])
    assert float(step.norm()) == pytest.approx(0.5, rel=1e-4)


def test_non_finite_loss_stops_with_advice():
    loader = [(torch.full((2, 3), float("nan")), torch.zeros(2, 1))]
    with pytest.raises(TrainingError, match="loss is nan"):
        one_epoch(loader, accum=1)


@pytest.mark.parametrize("name", ["cosine", "onecycle", "constant"])
def test_schedules_peak_at_the_configured_rate(name):
    model = nn.Linear(3, 1)
    train = TrainSpec(lr=0.1, schedule={"name": name, "warmup_fraction": 0.2})
    opt = make_optimizer([{"params": model.parameters(), "lr": 0.1}], train)
    sched = make_scheduler(opt, train, total_steps=20)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert max(lrs) == pytest.approx(0.1, rel=0.02)
    if name != "constant":
        assert lrs[0] < 0.05 and lrs[-1] < 0.02  # warm-up, then decay


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoint.save(path, {"model": {"w": torch.ones(2)}})

    def exploding_save(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", exploding_save)
    with pytest.raises(TlappError, match="cannot write .*last.pt"):
        checkpoint.save(path, {"model": {"w": torch.zeros(2)}})
    monkeypatch.undo()
    assert torch.equal(checkpoint.load(path)["model"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left behind


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    import random

    import numpy as np

    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    checkpoint.save(tmp_path / "c.pt", {"rng": checkpoint.rng_state()})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    checkpoint.restore_rng(checkpoint.load(tmp_path / "c.pt")["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0]) and (expected[1] == got[1]).all() and expected[2] == got[2]
