"""Linear probe with and without the backbone feature cache, on the medical sample data.

Runs both jobs side by side in this process (same data, seed, epochs) and prints the ratio of
their wall times (feature extraction included). The cache needs augmentation off, so both runs
use augment=null. Decoded pixels are cached by the first run, so a warm-up run goes first.

    python benchmarks/bench_feature_cache.py [--epochs 6]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from tlcore.plugins import load_plugins
from tlcore.run import execute, resolve_job


def wall_seconds(plugins, out: Path, cache: bool, epochs: int) -> tuple[float, float]:
    task, job = resolve_job(plugins, plugin="medical", config_file=None,
                            overrides={"output": str(out), "strategy": {"name": "linear-probe"},
                                       "augment": None, "train": {"epochs": epochs, "feature_cache": cache}})
    run = execute(plugins, task, job)
    return run.metrics["wall_seconds"], run.metrics["metrics"]["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=6)
    epochs = parser.parse_args().epochs
    plugins = load_plugins()
    with tempfile.TemporaryDirectory() as tmp:
        wall_seconds(plugins, Path(tmp) / "warm-up", True, 1)
        plain, plain_acc = wall_seconds(plugins, Path(tmp) / "plain", False, epochs)
        cached, cached_acc = wall_seconds(plugins, Path(tmp) / "cached", True, epochs)
    print(json.dumps({"epochs": epochs, "wall_seconds_without_cache": round(plain, 2),
                      "wall_seconds_with_cache": round(cached, 2), "speed_up": round(plain / cached, 1),
                      "test_accuracy": {"without": plain_acc, "with": cached_acc}}))


if __name__ == "__main__":
    main()
