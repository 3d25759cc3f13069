"""A plugin's recipe on few-shot cuts of its bundled sample, against a linear probe and the classical baseline.

For each K (labelled examples per class) and each seed, cuts a small training set and a small validation set
from the plugin's sample, keeps the sample's whole test split (so every cut is scored on the same examples),
and runs ``tlapp compare`` with the given strategies; the comparison adds the classical baseline row. The seed
draws the cut and is the runs' ``train.seed``.

* ``text``: K training rows per class from ``train.csv``, min(K, 25) validation rows per class from
  ``val.csv``, all 160 rows of ``test.csv``.
* ``medical``: the sample has no split of its own, so its splits are the ones a plain ``tlapp run --plugin
  medical`` carves by patient (recipe's ``train.seed``, ``val_fraction``, ``test_fraction``: 8 training, 3
  validation and 3 test patients). The cut takes *whole patients*, never part of one, in a seeded order:
  for the rarest class first, the next patient that has files of the class still short, until every class
  has at least K files (min(K, 25) for validation). K counts files, which are images under the recipe's
  ``frames: middle`` (the one multi-frame file gives one image). Most patients have files of both classes,
  so a class usually gets more than K. Validation keeps at least 2 patients, so that the validation loss that
  picks the best epoch is not one patient's. Where a split has fewer than K files of a class (the sample's 3
  validation patients hold 18 per class, so K = 25 takes all of them) the cut takes what there is and says
  so on stderr. The cut is written as a manifest (``labels.csv``: path, label, split) beside copies of the
  files: copies, because the plugin refuses symlinks that lead out of the dataset folder.

Prints one JSON line per cut, then a summary as a markdown table and as JSON: each strategy's score and the
baseline's, ``default - linear-probe`` (default: the recipe's strategy), ``auto - best fixed`` (best of the
non-auto strategies asked for) and what ``auto`` chose.

    python benchmarks/few_shot.py --plugin text|medical [--per-class 10,25] [--seeds 0,1]
        [--strategies finetune,linear-probe,freeze-unfreeze,auto] [--metric NAME]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

from tlcore.compare import plan, run_comparison
from tlcore.plugins import load_plugins
from tlcore.run import resolve_job

DEFAULT_METRIC = {"text": "f1_macro", "medical": "auroc"}
VAL_CAP = 25  # validation examples per class at most: the text sample's val.csv holds 25 per class
MIN_VAL_PATIENTS = 2
BASELINE = "classical-baseline"


def note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr, flush=True)


def write_csv(path: Path, rows: list[dict[str, str]], columns: list[str]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({c: r[c] for c in columns} for r in rows)


# ------------------------------------------------------------ text: rows per class


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def rows_per_class(source: list[dict[str, str]], per_class: int, seed: int) -> list[dict[str, str]]:
    by_class = defaultdict(list)
    for row in source:
        by_class[row["label"]].append(row)
    rng = random.Random(seed)
    return [row for label in sorted(by_class) for row in rng.sample(by_class[label], per_class)]


def text_cut(sample: Path, out: Path, per_class: int, seed: int, job) -> tuple[Path, dict]:
    """The text plugin reads a folder of train/val/test CSV files as those splits."""
    splits = {"train": rows_per_class(read_rows(sample / "train.csv"), per_class, seed),
              "val": rows_per_class(read_rows(sample / "val.csv"), min(per_class, VAL_CAP), seed),
              "test": read_rows(sample / "test.csv")}
    for split, rows in splits.items():
        write_csv(out / f"{split}.csv", rows, ["text", "label"])
    counts = {split: {"per_class": dict(sorted(Counter(r["label"] for r in rows).items()))}
              for split, rows in splits.items()}
    return out, counts


# ------------------------------------------------------------ medical: whole patients per class


def whole_patients(samples: list, per_class: int, seed: int, min_patients: int = 1) -> list:
    """Whole patients in a seeded order until every class has ``per_class`` files and ``min_patients``
    patients are in (or the split runs out). Classes are filled rarest first, each by the next patient that
    has files of it, so a patient of only the common class is not taken to fill the rare one."""
    files = defaultdict(list)
    for s in samples:
        files[s.patient_key].append(s)
    order = sorted(files)
    random.Random(seed).shuffle(order)
    pool = Counter(s.labels[0] for s in samples)
    taken: list[str] = []
    have: Counter[str] = Counter()

    def take(key: str) -> None:
        taken.append(key)
        have.update(s.labels[0] for s in files[key])

    for label in sorted(pool, key=lambda c: (pool[c], c)):
        for key in order:
            if have[label] >= per_class:
                break
            if key not in taken and any(s.labels[0] == label for s in files[key]):
                take(key)
    for key in order:
        if len(taken) >= min_patients:
            break
        if key not in taken:
            take(key)
    return [s for s in samples if s.patient_key in taken]


def medical_cut(sample: Path, out: Path, per_class: int, seed: int, job) -> tuple[Path, dict]:
    from tlapp_medical import formats  # only the medical cut needs pydicom

    # The split a plain run of the sample makes, whatever seed the cut's runs train with: the test patients
    # stay the same for every cut, and no cut trains or validates on them.
    carved = formats.split_by_patient(formats.index_folders(sample), val_fraction=job.data.val_fraction,
                                      test_fraction=job.data.test_fraction, seed=job.train.seed)
    wanted = {"train": per_class, "val": min(per_class, VAL_CAP)}
    splits = {"train": whole_patients(carved["train"], wanted["train"], seed),
              "val": whole_patients(carved["val"], wanted["val"], seed, MIN_VAL_PATIENTS),
              "test": carved["test"]}
    rows = []
    for split, items in splits.items():
        for s in items:
            relative = s.path.relative_to(sample)
            (out / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(s.path, out / relative)
            rows.append({"path": relative.as_posix(), "label": s.labels[0], "split": split})
    write_csv(out / "labels.csv", rows, ["path", "label", "split"])
    counts = {split: {"patients": len({s.patient_key for s in items}),
                      "per_class": dict(sorted(Counter(s.labels[0] for s in items).items()))}
              for split, items in splits.items()}
    for split, need in wanted.items():
        short = {c: n for c, n in counts[split]["per_class"].items() if n < need}
        if short:
            note(f"K={per_class} seed {seed}: the sample's {split} split has only {short} file(s) of these "
                 f"classes, fewer than {need}: all are taken")
    return out / "labels.csv", counts


CUTS = {"text": text_cut, "medical": medical_cut}


# ------------------------------------------------------------ comparison and summary


def compare_cut(plugins, plugin: str, data: Path, strategies: list[str], seed: int, metric: str, out: Path) -> dict:
    jobs = plan(plugins, plugin=plugin, strategies=strategies, folds=None, config_file=None,
                overrides={"data": {"path": str(data)}, "train": {"seed": seed}}, sets=(), output=out)
    report = run_comparison(plugins, jobs, out, overwrite=False, metric=metric)
    runs = report["runs"]
    return {"scores": {r["strategy"]: r["metrics"].get(metric) for r in runs},
            "epochs": {r["strategy"]: json.loads((Path(r["directory"]) / "metrics.json").read_text())["epochs"]
                       for r in runs if r["strategy"] != BASELINE},
            "auto_chose": next((r["chosen"] for r in runs if r["strategy"] == "auto"), None),
            "mode": report["verdict"]["mode"], "verdict": report["verdict"]["text"]}


def minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def gaps(line: dict, strategies: list[str], default: str) -> dict:
    """default - linear-probe, and auto - the best fixed strategy (by the verdict's direction of better)."""
    scores = line["scores"]
    fixed = [scores[s] for s in strategies if s != "auto" and scores.get(s) is not None]
    best = (max if line["mode"] == "max" else min)(fixed) if fixed else None
    return {"default_minus_probe": minus(scores.get(default), scores.get("linear-probe")),
            "auto_minus_best_fixed": minus(scores.get("auto"), best)}


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def markdown(results: list[dict], strategies: list[str], default: str) -> str:
    columns = [f"{s} (default)" if s == default else s for s in strategies] + [BASELINE]
    lines = ["| K per class | seed | " + " | ".join(columns) + " | default - linear-probe | auto - best fixed "
             "| auto chose |", "| --- " * (len(columns) + 5) + "|"]
    for r in results:
        cells = [str(r["per_class"]), str(r["seed"]), *(fmt(r["scores"].get(s)) for s in [*strategies, BASELINE]),
                 fmt(r["default_minus_probe"]), fmt(r["auto_minus_best_fixed"]), r["auto_chose"] or "n/a"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plugin", required=True, choices=sorted(CUTS))
    parser.add_argument("--per-class", default="10,25")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--strategies", default="finetune,linear-probe,freeze-unfreeze,auto")
    parser.add_argument("--metric", help="default: f1_macro for text, auroc for medical")
    args = parser.parse_args()
    metric = args.metric or DEFAULT_METRIC[args.plugin]
    strategies = args.strategies.split(",")
    plugins = load_plugins()
    # What a plain `tlapp run --plugin NAME` would do: the recipe's strategy, and (medical) the sample's split.
    task, job = resolve_job(plugins, plugin=args.plugin, config_file=None, overrides={}, sets=())
    default = job.strategy.name
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for per_class in (int(k) for k in args.per_class.split(",")):
            for seed in (int(s) for s in args.seeds.split(",")):
                folder = Path(tmp) / f"k{per_class}-s{seed}"
                folder.mkdir()
                data, counts = CUTS[args.plugin](Path(task.sample_data), folder, per_class, seed, job)
                line = {"plugin": args.plugin, "per_class": per_class, "seed": seed, "metric": metric,
                        "counts": counts, **compare_cut(plugins, args.plugin, data, strategies, seed, metric,
                                                        Path(tmp) / f"compare-k{per_class}-s{seed}")}
                line.update(gaps(line, strategies, default))
                results.append(line)
                print(json.dumps(line), flush=True)
    print(f"\n{args.plugin}, test {metric}; default strategy (the recipe's): {default}\n")
    print(markdown(results, strategies, default) + "\n")
    keys = ("per_class", "seed", "scores", "default_minus_probe", "auto_minus_best_fixed", "auto_chose")
    print(json.dumps({"summary": {"plugin": args.plugin, "metric": metric, "default": default,
                                  "cuts": [{k: r[k] for k in keys} for r in results]}}))


if __name__ == "__main__":
    main()
