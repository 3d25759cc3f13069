"""The text recipe on few-shot cuts of the bundled sample, against a linear probe and the classical baseline.

For each number of labelled examples per class and each seed, cuts that many training rows per class (and as
many validation rows) from the text sample, keeps its whole test split (160 rows, so every cut is scored on
the same texts), and runs ``tlapp compare`` with the default recipe (``finetune``), ``linear-probe`` and
``auto``; the comparison adds the classical baseline (logistic regression on TF-IDF). Prints one JSON line per
cut and a summary: how far the default run and ``auto`` land from the best of the linear probe and fixed
strategies on macro F1.

    python benchmarks/few_shot_text.py [--per-class 10,25] [--seeds 0,1] [--strategies finetune,linear-probe,auto]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import tempfile
from collections import defaultdict
from pathlib import Path

from tlcore.compare import plan, run_comparison
from tlcore.plugins import load_plugins

SAMPLE = Path(__file__).resolve().parent.parent / "plugins" / "tlapp_text" / "sample_data"


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def cut(source: list[dict[str, str]], per_class: int, seed: int) -> list[dict[str, str]]:
    by_class = defaultdict(list)
    for row in source:
        by_class[row["label"]].append(row)
    rng = random.Random(seed)
    return [row for label in sorted(by_class) for row in rng.sample(by_class[label], per_class)]


def write(path: Path, chosen: list[dict[str, str]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows({"text": r["text"], "label": r["label"]} for r in chosen)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-class", default="10,25")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--strategies", default="finetune,linear-probe,auto")
    parser.add_argument("--metric", default="f1_macro")
    args = parser.parse_args()
    plugins = load_plugins()
    strategies = args.strategies.split(",")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for per_class in (int(k) for k in args.per_class.split(",")):
            for seed in (int(s) for s in args.seeds.split(",")):
                data = Path(tmp) / f"k{per_class}-s{seed}"
                data.mkdir()
                write(data / "train.csv", cut(rows(SAMPLE / "train.csv"), per_class, seed))
                write(data / "val.csv", cut(rows(SAMPLE / "val.csv"), min(per_class, 25), seed))
                write(data / "test.csv", rows(SAMPLE / "test.csv"))
                out = Path(tmp) / f"compare-k{per_class}-s{seed}"
                jobs = plan(plugins, plugin="text", strategies=strategies, folds=None, config_file=None,
                            overrides={"data": {"path": str(data)}, "train": {"seed": seed}}, sets=(), output=out)
                report = run_comparison(plugins, jobs, out, overwrite=False, metric=args.metric)
                scores = {r["strategy"]: r["metrics"].get(args.metric) for r in report["runs"]}
                epochs = {r["strategy"]: json.loads((Path(r["directory"]) / "metrics.json").read_text())["epochs"]
                          for r in report["runs"] if r["strategy"] != "classical-baseline"}
                chosen = {r["strategy"]: r["chosen"] for r in report["runs"] if r.get("chosen")}
                line = {"per_class": per_class, "seed": seed, "metric": args.metric, "scores": scores,
                        "epochs": epochs, "auto_chose": chosen.get("auto"), "verdict": report["verdict"]["text"]}
                results.append(line)
                print(json.dumps(line), flush=True)
    fixed = [s for s in strategies if s != "auto"]
    for line in results:
        scores = line["scores"]
        best_fixed = max(scores[s] for s in fixed)
        line["default_below_probe"] = scores["linear-probe"] - scores["finetune"]
        line["auto_below_best_fixed"] = best_fixed - scores["auto"] if "auto" in scores else None
    print(json.dumps({"summary": [{k: line[k] for k in ("per_class", "seed", "default_below_probe",
                                                        "auto_below_best_fixed")} for line in results]}))


if __name__ == "__main__":
    main()
