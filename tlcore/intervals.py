"""Bootstrap intervals of a split's final metrics, resampling whole groups (patients, scenes) where a task has them.

Percentile bootstrap (Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993, ch. 13): draw as many
groups as the split has, with replacement, recompute every metric on the samples of the drawn groups
(``Evaluator.resample``), and take the (1 - confidence) / 2 and (1 + confidence) / 2 quantiles of each metric
over the resamples. Resampling by group keeps samples that are not independent (the frames of one patient)
together, so the interval is not narrowed by counting one patient's images as separate evidence.

The resamples depend only on the number of groups and ``evaluation.seed``, so runs evaluated on the same split
draw the same resamples: ``compare`` pairs them to put an interval on the difference between two runs.

A multi-task result (see ``tlcore.multitask``) holds each task's metrics in a dict under the task's name, the
names listed under ``tasks``: its numbers are ``<task>.<name>`` here, and a task's intervals go into its dict.
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import atomic_write_text
from .config import EvaluationSpec
from .task import Evaluator

RESAMPLES_FILE = "bootstrap.json"  # in the run directory: every metric's value on every resample
TARGET_RESAMPLES_FILE = "bootstrap_target_test.json"  # the same for adapt.target_test's metrics
# Keys of an evaluator's result that describe the metrics rather than being one.
ABOUT_METRICS = frozenset({"undefined", "undefined_classes", "averaged_over", "bootstrap", "tasks"})


@dataclass
class Bootstrap:
    """Each resample's value of every number a metric holds (``name`` or ``name.key`` for per-class dicts)."""

    resamples: int
    confidence: float
    seed: int
    unit: str
    units: int
    values: dict[str, list[float | None]] = field(default_factory=dict)

    def interval(self, name: str) -> list[float] | None:
        """The percentile interval of ``name``; None when fewer than half the resamples define it (e.g. an
        AUROC whose resamples mostly hold one class): an interval over the rest would hide that."""
        found = [v for v in self.values.get(name, []) if v is not None]
        if not found or len(found) * 2 < self.resamples:
            return None
        tail = (1 - self.confidence) / 2
        low, high = np.quantile(np.asarray(found, dtype=float), [tail, 1 - tail])
        return [float(low), float(high)]

    def undefined_in(self, name: str) -> int:
        return sum(v is None for v in self.values.get(name, []))

    def about(self) -> dict[str, Any]:
        """What metrics.json says of how its intervals were made."""
        return {"method": "percentile bootstrap", "resamples": self.resamples, "confidence": self.confidence,
                "seed": self.seed, "unit": self.unit, "units": self.units}

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps({**self.about(), "values": self.values}) + "\n")

    @classmethod
    def load(cls, path: Path) -> Bootstrap | None:
        """The resamples a run saved, or None when it saved none (or the file is not one)."""
        try:
            raw = json.loads(path.read_text())
            return cls(resamples=int(raw["resamples"]), confidence=float(raw["confidence"]), seed=int(raw["seed"]),
                       unit=str(raw["unit"]), units=int(raw["units"]), values=dict(raw["values"]))
        except (OSError, ValueError, TypeError, KeyError):
            return None


def task_results(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The per-task results of a multi-task metrics dict, by task; empty for a single-task one."""
    tasks = metrics.get("tasks")
    if not isinstance(tasks, list):
        return {}
    return {task: metrics[task] for task in tasks if isinstance(metrics.get(task), dict)}


def flatten_tasks(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` with each task's results spread out as ``<task>.<name>`` keys, as ``train.monitor``, the
    history and ``compare`` name them (``finding.auroc``); a single-task dict is returned as it is."""
    tasks = task_results(metrics)
    if not tasks:
        return metrics
    out = {name: value for name, value in metrics.items() if name not in tasks}
    for task, result in tasks.items():
        out.update({f"{task}.{name}": value for name, value in result.items()})
    return out


def numbers(metrics: dict[str, Any]) -> dict[str, float | None]:
    """The numbers a metrics dict holds, per-class dicts flattened to ``name.key`` and a task's numbers to
    ``task.name``; None where undefined."""
    out: dict[str, float | None] = {}
    tasks = task_results(metrics)
    for name, value in metrics.items():
        if name in ABOUT_METRICS or name in tasks:
            continue
        if isinstance(value, dict):
            if value and all(v is None or is_number(v) for v in value.values()):
                out.update({f"{name}.{key}": _finite(v) for key, v in value.items()})
        elif value is None or is_number(value):
            out[name] = _finite(value)
    for task, result in tasks.items():
        out.update({f"{task}.{name}": v for name, v in numbers(result).items()})
    return out


def bootstrap(evaluator: Evaluator, groups: Sequence[Hashable] | None, samples: int, *, resamples: int,
              confidence: float, seed: int, unit: str) -> Bootstrap | None:
    """Resample ``samples`` evaluated samples ``resamples`` times, by ``groups`` (one key per sample, in the
    order the evaluator saw them) or sample by sample; None when the evaluator cannot resample."""
    if groups is not None and len(groups) != samples:
        raise ValueError(f"{len(groups)} group keys for {samples} samples")
    members: dict[Hashable, list[int]] = {}
    for index, key in enumerate(groups if groups is not None else range(samples)):
        members.setdefault(key, []).append(index)
    units = list(members.values())
    result = Bootstrap(resamples, confidence, seed, unit if groups is not None else "sample", len(units))
    if not units or resamples <= 0:
        return None
    rng = np.random.default_rng(seed)
    for b in range(resamples):
        drawn = rng.integers(0, len(units), size=len(units))
        indices = [i for u in drawn for i in units[u]]
        try:
            values = numbers(evaluator.resample(indices))
        except NotImplementedError:
            return None
        for name, value in values.items():
            result.values.setdefault(name, [None] * b).append(value)
        for kept in result.values.values():
            if len(kept) == b:  # a number this resample did not report at all
                kept.append(None)
    return result


def with_intervals(metrics: dict[str, Any], boot: Bootstrap) -> dict[str, Any]:
    """``metrics`` with ``<name>_ci`` ([low, high] or null) beside every number it holds that is defined,
    per-class dicts getting a dict of intervals, each task's inside its own dict, and ``bootstrap`` saying how
    they were made."""
    out = _with_intervals(metrics, boot, "")
    tasks = task_results(metrics)

    def is_metric(name: str) -> bool:  # not one class of a per-class metric
        first, _, rest = name.partition(".")
        return not rest or (first in tasks and "." not in rest)

    undefined_in = {name: n for name in boot.values if is_metric(name) and (n := boot.undefined_in(name))}
    out["bootstrap"] = {**boot.about(), **({"undefined_in": undefined_in} if undefined_in else {})}
    return out


def _with_intervals(metrics: dict[str, Any], boot: Bootstrap, prefix: str) -> dict[str, Any]:
    out = dict(metrics)
    tasks = task_results(metrics)
    for name, value in metrics.items():
        if name in ABOUT_METRICS or name in tasks:
            continue
        key = prefix + name
        if isinstance(value, dict) and any(f"{key}.{k}" in boot.values for k in value):
            out[f"{name}_ci"] = {k: boot.interval(f"{key}.{k}") if value[k] is not None else None for k in value}
        elif is_number(value) and key in boot.values:
            out[f"{name}_ci"] = boot.interval(key)
    for task, result in tasks.items():
        out[task] = _with_intervals(result, boot, f"{task}.")
    return out


def is_number(value: Any) -> bool:
    """A metric's number (int or float, not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def add_intervals(metrics: dict[str, Any], evaluator: Evaluator, groups: Sequence[Hashable] | None, samples: int,
                  unit: str, spec: EvaluationSpec) -> tuple[dict[str, Any], Bootstrap | None]:
    """The final metrics with their intervals (``spec.bootstrap`` resamples; none when it is 0 or the
    evaluator cannot resample), and the resamples to save beside them."""
    boot = bootstrap(evaluator, groups or None, samples, resamples=spec.bootstrap, confidence=spec.confidence,
                     seed=spec.seed, unit=unit)
    return (with_intervals(metrics, boot), boot) if boot is not None else (metrics, None)


def shown(metrics: dict[str, Any]) -> str:
    """The numbers of a metrics dict for one line of a log or console: ``auroc 0.9183 [0.8102, 0.9871]``,
    ``n/a`` for an undefined value; a multi-task result's means, then each task's (``finding.auroc ...``)."""
    parts = _shown(metrics, "")
    for task, result in task_results(metrics).items():
        parts.extend(_shown(result, f"{task}."))
    return ", ".join(parts)


def _shown(metrics: dict[str, Any], prefix: str) -> list[str]:
    parts = []
    for name, value in metrics.items():
        if name in ABOUT_METRICS or name.endswith("_ci") or not (value is None or is_number(value)):
            continue
        if value is None:
            parts.append(f"{prefix}{name} n/a")
            continue
        ci = metrics.get(f"{name}_ci")
        parts.append(f"{prefix}{name} {value:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if isinstance(ci, list) else ""))
    return parts
