"""``tlapp compare``: the same data and seed under several strategies (and folds), one table.

This is the report that answers "did transfer help, and which way of transferring was best?".
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from . import config as cfg
from .checkpoint import atomic_write_text
from .directories import prepare_output
from .plugins import Plugins
from .run import execute, resolve_job


def plan(plugins: Plugins, *, plugin: str, strategies: list[str], folds: int | None, config_file: str | None,
         overrides: dict[str, Any], sets: tuple[str, ...], output: Path) -> list[tuple[str, int | None, Any, Any]]:
    """Resolve every (strategy, fold) job before running any, so a bad option fails at once."""
    jobs = []
    for strategy in strategies:
        for fold in range(folds) if folds else [None]:
            extra: dict[str, Any] = {"strategy": {"name": strategy}}
            sub = output / strategy if fold is None else output / strategy / f"fold-{fold}"
            extra["output"] = str(sub)
            task, job = resolve_job(plugins, plugin=plugin, config_file=config_file,
                                    overrides=cfg.merge(overrides, extra), sets=sets)
            if fold is not None and folds is not None:
                task, job = resolve_job(plugins, plugin=plugin, config_file=config_file,
                                        overrides=cfg.merge(cfg.merge(overrides, extra),
                                                            task.fold_overrides(folds, fold)), sets=sets)
            jobs.append((strategy, fold, task, job))
    return jobs


def run_comparison(plugins: Plugins, jobs, output: Path, overwrite: bool) -> dict[str, Any]:
    protected = [getattr(job.data, "path", None) for *_, job in jobs] + [Path.cwd()]
    prepare_output(output, "comparison", overwrite=overwrite, protected=protected)
    runs = []
    for strategy, fold, task, job in jobs:
        result = execute(plugins, task, job)
        m = result.metrics
        history = m["history"]
        runs.append({
            "strategy": strategy, "fold": fold, "directory": str(result.directory),
            "chosen": m.get("strategy_choice", {}).get("chosen"),
            "metrics": {k: v for k, v in m["metrics"].items() if _scalar(v)},
            "wall_seconds": m["wall_seconds"],
            "samples_per_second": statistics.fmean(h["samples_per_second"] for h in history) if history else None,
        })
    summary = summarise(runs)
    report = {"runs": runs, "summary": summary}
    atomic_write_text(output / "comparison.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(output / "comparison.md", table(summary))
    plot(summary, output / "comparison.png")
    return report


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean and spread (sample standard deviation over folds) of every metric, per strategy."""
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
        chosen = [r["chosen"] for r in mine if r["chosen"]]
        out[strategy] = {"runs": len(mine), "metrics": stats, **({"chosen": chosen} if chosen else {})}
    return out


def table(summary: dict[str, dict[str, Any]]) -> str:
    metrics = [k for k in next(iter(summary.values()))["metrics"] if k not in ("wall_seconds", "samples_per_second")]
    columns = metrics + ["wall_seconds", "samples_per_second"]
    lines = ["| strategy | runs | " + " | ".join(columns) + " |", "|---" * (len(columns) + 2) + "|"]
    for strategy, s in summary.items():
        name = strategy + (f" (chose {', '.join(s['chosen'])})" if s.get("chosen") else "")
        cells = []
        for c in columns:
            v = s["metrics"].get(c)
            cells.append("-" if v is None else f"{v['mean']:.4g} ± {v['std']:.2g}" if s["runs"] > 1
                         else f"{v['mean']:.4g}")
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
