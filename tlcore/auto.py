"""``--strategy auto``: measure the target data and how well the transferred features already
separate its classes, then pick a fixed strategy and record why.

The rules follow the transfer-learning rule of thumb (Yosinski et al. 2014; Kornblith et al. 2019):
little data and features that already fit -> train the head only; features that fit fairly well ->
head first, then everything gently; features that fit poorly (a distant domain) -> fine-tune
everything with discriminative rates; nothing transferred -> train from scratch.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from pydantic import Field
from torch import nn

from .features import extract_features
from .strategies import Strategy, StrategyOptions
from .task import uses_feature_cache


class AutoOptions(StrategyOptions):
    probe_steps: int = Field(100, ge=10, description="L-BFGS steps of the quick linear probe")
    few_per_class: int = Field(20, ge=1, description="below this many training samples in the rarest class, "
                                                     "the data counts as small")
    good_probe: float = Field(0.8, gt=0, le=1, description="probe gain over the majority baseline that counts "
                                                           "as features already fitting the task")
    fair_probe: float = Field(0.5, gt=0, le=1)


class Auto(Strategy):
    name = "auto"
    description = "measure data size and a quick linear probe, then pick a strategy (recorded in metrics.json)"
    Options = AutoOptions
    options: AutoOptions

    def phases(self, groups, epochs):
        raise RuntimeError("the auto strategy must choose before it has phases")

    def choose(self, run, prepared, recorded: dict[str, Any] | None) -> tuple[Strategy, dict[str, Any]]:
        registry = run.context.registry
        if recorded is not None:  # a resumed run keeps the choice it made
            cls = registry.strategies[recorded["chosen"]]
            return cls(cls.Options.model_validate(recorded["options"])), recorded
        measured = self.measure(run, prepared)
        chosen, reason = self.decide(measured)
        cls = registry.strategies[chosen]
        strategy = cls(cls.Options(train_bn=self.options.train_bn))
        choice = {"chosen": chosen, "reason": reason, "measured": measured,
                  "options": strategy.options.model_dump()}
        run.context.log.info("auto strategy: %s (%s)", chosen, reason)
        return strategy, choice

    def measure(self, run, prepared) -> dict[str, Any]:
        data, model, job = prepared.data, prepared.model, run.job
        measured: dict[str, Any] = {"train_samples": len(data.train), "classes": data.num_outputs,
                                    "transferred_tensors": prepared.init_report.loaded}
        if not uses_feature_cache(model):
            return measured
        args = (job.train.batch_size, data.collate_fn, job.train.num_workers, run.precision, run.context.device)
        train = extract_features(model, data.train, *args)
        val = extract_features(model, data.val, *args)
        x, y = train.tensors
        if y.dim() == 1:
            counts = Counter(y.tolist())
            measured["rarest_class_samples"] = min(counts.get(c, 0) for c in range(data.num_outputs))
            majority = max(counts.values()) / len(y)
            vx, vy = val.tensors
            accuracy = _probe_accuracy(x, y, vx, vy, data.num_outputs, self.options.probe_steps)
            measured.update(probe_accuracy=accuracy, majority_baseline=majority,
                            probe_gain=(accuracy - majority) / max(1e-9, 1 - majority))
        return measured

    def decide(self, m: dict[str, Any]) -> tuple[str, str]:
        o = self.options
        if m["transferred_tensors"] == 0:
            return "scratch", "no pretrained tensors were transferred (init none), so there is nothing to keep"
        if "probe_gain" not in m:
            return "freeze-unfreeze", "no linear probe possible for this model; head first, then everything"
        gain, rare = m["probe_gain"], m["rarest_class_samples"]
        if rare < o.few_per_class and gain >= o.fair_probe:
            return "linear-probe", (f"rarest class has {rare} < {o.few_per_class} samples and a linear probe on "
                                    f"the transferred features already gains {gain:.2f} over the majority baseline")
        if gain >= o.good_probe:
            return "freeze-unfreeze", (f"transferred features fit well (probe gain {gain:.2f} >= {o.good_probe}): "
                                       "train the head, then adapt everything gently")
        return "finetune", (f"transferred features fit the target only partly (probe gain {gain:.2f} < "
                            f"{o.good_probe}): adapt every layer with discriminative rates")


def _probe_accuracy(x: torch.Tensor, y: torch.Tensor, vx: torch.Tensor, vy: torch.Tensor, classes: int,
                    steps: int) -> float:
    """Multinomial logistic regression on standardised features (L-BFGS), accuracy on the held-out split.

    Runs on a forked RNG, so that choosing does not change the random draws of the training that follows.
    """
    with torch.random.fork_rng(devices=[]):
        return _fit_probe(x, y, vx, vy, classes, steps)


def _fit_probe(x: torch.Tensor, y: torch.Tensor, vx: torch.Tensor, vy: torch.Tensor, classes: int,
               steps: int) -> float:
    mean, std = x.mean(0), x.std(0) + 1e-6
    x, vx = (x - mean) / std, (vx - mean) / std
    generator = torch.Generator().manual_seed(0)
    layer = nn.Linear(x.shape[1], classes)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * 0.01)
        layer.bias.zero_()
    optimizer = torch.optim.LBFGS(layer.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(layer(x), y) + 1e-3 * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return float((layer(vx).argmax(1) == vy).float().mean())
