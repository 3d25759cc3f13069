"""``tlapp compare``: the same data and seed under several strategies (and folds), one table.

This is the report that answers "did transfer help, and which way of transferring was best?": every number
with its bootstrap interval, and a verdict on whether the best strategy's lead over the runner-up and over
training from scratch is larger than the test split can tell apart. All runs evaluate on the same test split
with the same ``evaluation.seed``, so they draw the same resamples: the interval of a difference comes from
the per-resample differences (a paired bootstrap), which is narrower and more honest than comparing two
intervals by eye.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from . import config as cfg
from .checkpoint import atomic_write_text
from .directories import prepare_output
from .errors import ConfigError
from .baseline import NAME, classical_baseline
from .intervals import RESAMPLES_FILE, TARGET_RESAMPLES_FILE, Bootstrap, flatten_tasks, shown
from .plugins import Plugins
from .run import execute, log, resolve_job
from .task import Context, DataBundle, Task


def plan(plugins: Plugins, *, plugin: str, strategies: list[str], folds: int | None, config_file: str | None,
         overrides: dict[str, Any], sets: tuple[str, ...], output: Path,
         variants: dict[str, tuple[str, ...]] | None = None) -> list[tuple[str, int | None, Any, Any]]:
    """Resolve every (strategy, variant, fold) job before running any, so a bad option fails at once.

    ``variants`` maps a name to ``--set`` items applied on top of the job (single-task against multi-task,
    a student alone against distilled): each strategy runs once per variant, its row named
    ``strategy/variant``."""
    jobs = []
    for strategy in strategies:
        for variant, changes in (variants or {"": ()}).items():
            label = f"{strategy}/{variant}" if variant else strategy
            for fold in range(folds) if folds else [None]:
                extra: dict[str, Any] = {"strategy": {"name": strategy}}
                sub = output / label if fold is None else output / label / f"fold-{fold}"
                extra["output"] = str(sub)
                task, job = resolve_job(plugins, plugin=plugin, config_file=config_file,
                                        overrides=cfg.merge(overrides, extra), sets=(*sets, *changes))
                if fold is not None and folds is not None:
                    task, job = resolve_job(plugins, plugin=plugin, config_file=config_file,
                                            overrides=cfg.merge(cfg.merge(overrides, extra),
                                                                task.fold_overrides(folds, fold)),
                                            sets=(*sets, *changes))
                jobs.append((label, fold, task, job))
    return jobs


def parse_variants(given: tuple[str, ...]) -> dict[str, tuple[str, ...]] | None:
    """``--variant NAME:KEY=VALUE`` items (repeated for several keys of one variant; ``NAME:`` alone changes
    nothing) as {name: --set items}, in the order first named; None when none are given."""
    variants: dict[str, tuple[str, ...]] = {}
    for item in given:
        name, colon, change = item.partition(":")
        name = name.strip()
        if not colon or not name or "/" in name or (change and "=" not in change):
            raise ConfigError(f"--variant {item!r} is not NAME:KEY=VALUE", where="--variant",
                              fix="e.g. --variant single:data.label_columns=[finding] --variant "
                                  "multi:data.label_columns=[finding,view] (NAME: alone for the job unchanged)")
        variants[name] = variants.get(name, ()) + ((change,) if change else ())
    if len(variants) == 1:
        raise ConfigError("one --variant is nothing to compare it with", where="--variant",
                          fix="give two or more variants (NAME: alone for the job unchanged)")
    return variants or None


def run_comparison(plugins: Plugins, jobs, output: Path, overwrite: bool, metric: str | None = None) -> dict[str, Any]:
    # Variants may declare other metrics (a multi-task variant its tasks'): a name any of them reports will do.
    declared = [task.metric_names(job) for _, _, task, job in jobs]
    if metric is not None and all(names is not None for names in declared):
        known = list(dict.fromkeys(name for names in declared for name in names or ()))
        if any(job.adapt.target_test for *_, job in jobs):
            known += [f"{TARGET}.{name}" for name in known]
        if metric not in known:
            raise ConfigError(f"--metric {metric!r} is not a metric of task {jobs[0][2].name!r}", where="--metric",
                              fix=f"choose one of: {', '.join(known)}")
    protected = [getattr(job.data, "path", None) for *_, job in jobs] + [Path.cwd()]
    prepare_output(output, "comparison", overwrite=overwrite, protected=protected)
    runs, resamples, first_strategy = [], [], []
    for strategy, fold, task, job in jobs:
        result = execute(plugins, task, job)
        m = result.metrics
        history = m["history"]
        runs.append(_row(strategy, fold, result.directory, with_target_test(m), m["wall_seconds"],
                         statistics.fmean(h["samples_per_second"] for h in history) if history else None,
                         chosen=m.get("strategy_choice", {}).get("chosen"), evaluated_on=m.get("evaluated_on")))
        resamples.append(run_resamples(result.directory))
        if strategy == jobs[0][0]:  # the baseline reads the data these built (not their models: let them go)
            first_strategy.append((fold, task, job, result.built_data, result.context))
    for run, boot in baselines(first_strategy, output):
        runs.append(run)
        resamples.append(boot)
    summary = summarise(runs)
    first_task, first_job = jobs[0][2], jobs[0][3]
    name, mode = ranking_metric(first_task, first_job, metric, runs)
    verdict = judge(runs, resamples, name, mode)
    report = {"runs": runs, "summary": summary, "verdict": verdict}
    atomic_write_text(output / "comparison.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(output / "comparison.md", table(summary) + "\n" + verdict["text"] + "\n")
    plot(summary, output / "comparison.png")
    return report


def baselines(built: list[tuple[int | None, Task, cfg.JobSpec, DataBundle, Context]],
              output: Path) -> list[tuple[dict[str, Any], Bootstrap | None]]:
    """The classical baseline on each fold's splits, read from the data the first strategy's runs built, as
    compare rows; none when the task offers no baseline. Its metrics and resamples go into
    ``classical-baseline/``."""
    rows = []
    for fold, task, job, data, context in built:
        result = classical_baseline(task, job, data, context)
        if result is None:
            log.info("task %r offers no classical baseline for this job", task.name)
            return []
        folder = output / NAME / (f"fold-{fold}" if fold is not None else "")
        folder.mkdir(parents=True, exist_ok=True)
        boot = result.pop("resamples")
        if boot is not None:
            boot.save(folder / RESAMPLES_FILE)
        atomic_write_text(folder / "metrics.json", json.dumps(result, indent=2) + "\n")
        log.info("%s (%s): %s", NAME, result["description"], shown(result["metrics"]))
        rows.append((_row(NAME, fold, folder, result["metrics"], result["wall_seconds"], None, chosen=None,
                          evaluated_on=result["evaluated_on"], description=result["description"]), boot))
    return rows


TARGET = "target_test"  # the prefix of a run's metrics on adapt.target_test in the comparison's rows


def with_target_test(metrics: dict[str, Any]) -> dict[str, Any]:
    """A run's final metrics, with those on its labelled target-domain data (``adapt.target_test``) beside them as
    ``target_test.<metric>``, so that source-only and adapted runs compare on the target domain."""
    final = flatten_tasks(metrics["metrics"])
    if TARGET in metrics:
        final = {**final, **{f"{TARGET}.{k}": v for k, v in flatten_tasks(metrics[TARGET]["metrics"]).items()}}
    return final


def run_resamples(directory: Path) -> Bootstrap | None:
    """A run's bootstrap resamples, its target test's as ``target_test.<metric>`` (the same resample count and
    seed, so they pair across runs as the source test's do)."""
    boot = Bootstrap.load(directory / RESAMPLES_FILE)
    target = Bootstrap.load(directory / TARGET_RESAMPLES_FILE)
    if boot is not None and target is not None and target.resamples == boot.resamples:
        boot.values.update({f"{TARGET}.{k}": v for k, v in target.values.items()})
    return boot


def _row(strategy: str, fold: int | None, directory: Path, final: dict[str, Any], wall_seconds: float,
         samples_per_second: float | None, **about: Any) -> dict[str, Any]:
    """One row of the comparison: a run's (or the baseline's) scalar final metrics and their intervals (a
    multi-task run's per task as ``<task>.<metric>``)."""
    final = flatten_tasks(final)
    return {"strategy": strategy, "fold": fold, "directory": str(directory), **about,
            "metrics": {k: v for k, v in final.items() if _scalar(v)},
            "intervals": {k[:-3]: v for k, v in final.items() if k.endswith("_ci") and isinstance(v, list)},
            "wall_seconds": wall_seconds, "samples_per_second": samples_per_second}


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per strategy, every metric's mean and spread (sample standard deviation over folds), and for a single
    run its bootstrap interval."""
    out: dict[str, dict[str, Any]] = {}
    for strategy in dict.fromkeys(r["strategy"] for r in runs):
        mine = [r for r in runs if r["strategy"] == strategy]
        names = sorted({k for r in mine for k in r["metrics"]})
        stats = {}
        for name in names + ["wall_seconds", "samples_per_second"]:
            found = [r["metrics"].get(name) if name in r["metrics"] else r.get(name) for r in mine]
            values: list[float] = [v for v in found if v is not None]
            if values:
                stats[name] = {"mean": statistics.fmean(values),
                               "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}
                if len(mine) == 1 and name in mine[0].get("intervals", {}):
                    stats[name]["ci"] = mine[0]["intervals"][name]
        chosen = [r["chosen"] for r in mine if r["chosen"]]
        out[strategy] = {"runs": len(mine), "metrics": stats, **({"chosen": chosen} if chosen else {})}
    return out


def ranking_metric(task, job, asked: str | None, runs: list[dict[str, Any]]) -> tuple[str, str]:
    """The metric the verdict ranks by, and whether higher ("max") or lower ("min") is better: ``--metric``,
    else ``train.monitor`` unless it is the loss, else the first metric the task reports besides the loss."""
    reported = list(dict.fromkeys(k for r in runs for k in r["metrics"]))
    if asked is not None:
        if asked not in reported:
            raise ConfigError(f"--metric {asked!r} is not a final metric of these runs",
                              where="--metric", fix=f"choose one of: {', '.join(reported)}")
        return asked, metric_mode(job, asked)
    return headline_metric(task, job, reported)


def headline_metric(task, job, reported: list[str]) -> tuple[str, str]:
    """The metric a task's results are judged by, among the scalar metrics ``reported``, and whether higher
    ("max") or lower ("min") is better: ``train.monitor`` unless it is the loss, else the first metric the task
    declares besides the loss."""
    prefix = f"{TARGET}." if job.adapt.target_test else ""  # adaptation is judged on the target domain
    if job.train.monitor != "loss" and prefix + job.train.monitor in reported:
        return prefix + job.train.monitor, metric_mode(job, prefix + job.train.monitor)
    declared = task.metric_names(job) or reported
    name = next((prefix + m for m in declared if m != "loss" and prefix + m in reported),
                reported[0] if reported else "loss")
    return name, metric_mode(job, name)


def metric_mode(job, metric: str) -> str:
    """Whether higher ("max") or lower ("min") is better: ``train.monitor_mode`` for the monitored metric,
    else lower for losses and higher for the rest."""
    if metric.removeprefix(f"{TARGET}.") == job.train.monitor:
        return job.train.monitor_mode
    return "min" if "loss" in metric else "max"


def judge(runs: list[dict[str, Any]], resamples: list[Bootstrap | None], metric: str, mode: str) -> dict[str, Any]:
    """Whether the best strategy on ``metric`` leads the runner-up and ``scratch`` by more than the test split
    can resolve: the percentile interval of the paired per-resample difference must exclude 0."""
    sign = 1.0 if mode == "max" else -1.0
    per_strategy: dict[str, tuple[float, list[float | None] | None]] = {}
    for strategy in dict.fromkeys(r["strategy"] for r in runs):
        mine = [(r, b) for r, b in zip(runs, resamples) if r["strategy"] == strategy]
        values = [r["metrics"].get(metric) for r, _ in mine]
        if any(v is None for v in values):
            continue
        per_strategy[strategy] = (statistics.fmean(values), _mean_resamples([b for _, b in mine], metric))
    verdict: dict[str, Any] = {"metric": metric, "mode": mode, "comparisons": []}
    if len(per_strategy) < 2:
        verdict["text"] = f"One strategy defines {metric}: nothing to compare."
        return verdict
    ranked = sorted(per_strategy, key=lambda s: -sign * per_strategy[s][0])
    winner = verdict["best"] = ranked[0]
    lines = [f"Best on {metric} ({'higher' if mode == 'max' else 'lower'} is better): {winner}."]
    # the runner-up, and the references that say whether transfer helped at all
    others = list(dict.fromkeys([ranked[1], *(r for r in ("scratch", NAME) if r in per_strategy and r != winner)]))
    for other in others:
        margin = sign * (per_strategy[winner][0] - per_strategy[other][0])
        entry: dict[str, Any] = {"against": other, "margin": margin}
        interval = _difference_interval(per_strategy[winner][1], per_strategy[other][1], sign,
                                        next((b for b in resamples if b is not None), None))
        if interval is None:
            entry["distinguishable"] = None
            lines.append(f"- over {other}: by {margin:.4g}; no paired resamples to judge it (evaluation.bootstrap "
                         "was 0, or the runs were evaluated on different splits)")
        else:
            entry["interval"] = interval
            entry["distinguishable"] = interval[0] > 0
            said = ("distinguishable" if interval[0] > 0 else "not distinguishable on this test set")
            lines.append(f"- over {other}: by {margin:.4g} (95% interval of the paired difference "
                         f"{interval[0]:.4g} to {interval[1]:.4g}): {said}")
        verdict["comparisons"].append(entry)
    if NAME in per_strategy:
        transfer = [s for s in ranked if s not in (NAME, "scratch")]
        if transfer:
            best = transfer[0]
            margin = sign * (per_strategy[best][0] - per_strategy[NAME][0])
            verdict["transfer_beats_baseline"] = margin > 0
            lines.append(f"Transfer against the classical baseline: {best}, the best transfer strategy, is "
                         f"{'ahead of' if margin > 0 else 'behind'} it by {abs(margin):.4g} on {metric}"
                         + ("" if margin > 0 else "; transfer did not help on this data"))
    verdict["text"] = "\n".join(lines)
    return verdict


def _mean_resamples(boots: list[Bootstrap | None], metric: str) -> list[float | None] | None:
    """Per resample, the mean of ``metric`` over a strategy's runs (its folds), which share the test split."""
    if not boots or any(b is None or metric not in b.values for b in boots):
        return None
    first = boots[0]
    assert first is not None
    if any((b.resamples, b.seed, b.units, b.unit) != (first.resamples, first.seed, first.units, first.unit)
           for b in boots if b is not None):
        return None
    columns = zip(*(b.values[metric] for b in boots if b is not None))
    return [None if any(v is None for v in column) else statistics.fmean(column) for column in columns]


def _difference_interval(a: list[float | None] | None, b: list[float | None] | None, sign: float,
                         like: Bootstrap | None) -> list[float] | None:
    if a is None or b is None or like is None or len(a) != len(b):
        return None
    differences = Bootstrap(len(a), like.confidence, like.seed, like.unit, like.units,
                            {"d": [None if x is None or y is None else sign * (x - y) for x, y in zip(a, b)]})
    return differences.interval("d")


def table(summary: dict[str, dict[str, Any]]) -> str:
    metrics = [k for k in next(iter(summary.values()))["metrics"] if k not in ("wall_seconds", "samples_per_second")]
    columns = metrics + ["wall_seconds", "samples_per_second"]
    lines = ["| strategy | runs | " + " | ".join(columns) + " |", "|---" * (len(columns) + 2) + "|"]
    for strategy, s in summary.items():
        name = strategy + (f" (chose {', '.join(s['chosen'])})" if s.get("chosen") else "")
        cells = []
        for c in columns:
            v = s["metrics"].get(c)
            if v is None:
                cells.append("n/a")
            elif s["runs"] > 1:
                cells.append(f"{v['mean']:.4g} ± {v['std']:.2g}")
            elif v.get("ci"):
                cells.append(f"{v['mean']:.3f} [{v['ci'][0]:.3f}, {v['ci'][1]:.3f}]")
            else:
                cells.append(f"{v['mean']:.4g}")
        lines.append(f"| {name} | {s['runs']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [k for k in next(iter(summary.values()))["metrics"]
               if k not in ("wall_seconds", "samples_per_second", "loss")][:4]
    fig, axes = plt.subplots(1, max(len(metrics), 1), figsize=(3.2 * max(len(metrics), 1), 3.2), squeeze=False)
    names = list(summary)
    for ax, metric in zip(axes[0], metrics):
        means = [summary[n]["metrics"].get(metric, {}).get("mean", 0.0) for n in names]
        stds = [summary[n]["metrics"].get(metric, {}).get("std", 0.0) for n in names]
        ax.bar(range(len(names)), means, yerr=stds, capsize=3, color="tab:blue")
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
        ax.set_title(metric)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _scalar(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
