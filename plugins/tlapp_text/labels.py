"""Label columns as tasks: the text task's side of multi-task learning (see ``tlcore.multitask``).

With ``data.label_columns: [label, urgency]`` every column (JSONL: field) is a task with a head of its own on
the one encoder: ``model.head`` with the top-level ``model`` options, or with ``model.heads`` (which then names
every column) a head and options per task. ``model.heads`` alone declares the tasks too, its names the columns.
The core reads both options from the job (``ClassificationTask.task_specs``); this module reads the columns.

A row's cell for a task may be empty (CSV) or its key absent (JSONL): the row is then unlabelled for that task
only, and left out of that task's loss and metrics. A task's classes are the labels of its column in the
training split, sorted, as for one label column. Carved splits are stratified by the first column's labels.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from tlcore import TaskLabels, multitask_targets

from .formats import SPLITS, Problem, Record


def task_labels(records: Iterable[Record], column: str) -> Iterable[str]:
    """Every label the records carry in ``column``."""
    return (lb for r in records for lb in (r.tasks or {}).get(column, []))


def task_classes(parts: Mapping[str, list[Record]], columns: list[str], for_training: bool,
                 run_classes: Mapping[str, list[str]] | None) -> tuple[dict[str, list[str]], str]:
    """Each task's class names, and where they came from: the run's (evaluating a run on new data), the
    training split's (sorted), or when evaluating without a run's, the data's."""
    if run_classes is not None:
        return {c: list(run_classes.get(c, [])) for c in columns}, "the run's classes"
    if for_training:
        return {c: sorted(set(task_labels(parts["train"], c))) for c in columns}, "the training split"
    rows = [r for rs in parts.values() for r in rs]
    return {c: sorted(set(task_labels(rows, c))) for c in columns}, "the data"


def unknown_labels(parts: Mapping[str, list[Record]], class_names: Mapping[str, list[str]],
                   origin: str) -> list[tuple[Record, Problem]]:
    """The rows with a label that is not a class of its task, each with the problem naming the column."""
    known = {c: set(names) for c, names in class_names.items()}
    bad = []
    for split in SPLITS:
        for r in parts.get(split, []):
            for column, labels in (r.tasks or {}).items():
                unknown = [lb for lb in labels if lb not in known.get(column, ())]
                if unknown:
                    bad.append((r, Problem(r.file, r.line, f"unknown label {unknown[0]!r} in column {column!r} "
                                                           f"(not in {origin})")))
                    break
    return bad


def label_counts(records: list[Record], columns: list[str]) -> dict[str, dict[str, int]]:
    """Per task, how many rows carry each class."""
    return {c: dict(sorted(Counter(task_labels(records, c)).items())) for c in columns}


def labelled_counts(records: list[Record], columns: list[str]) -> dict[str, int]:
    """Per task, how many rows have a label for it (the rest are masked out of its loss and metrics)."""
    return {c: sum(1 for r in records if c in (r.tasks or {})) for c in columns}


def unlabelled_warnings(parts: Mapping[str, list[Record]], columns: list[str]) -> list[str]:
    """A warning per task that no row of a validation or test split is labelled for: the split measures
    nothing of it."""
    return [f"task {c!r} has no labelled row in the {split} split: its {split} metrics are undefined"
            for split in ("val", "test") if parts.get(split) for c, n in labelled_counts(parts[split], columns).items()
            if n == 0]


def targets(records: list[Record], tasks: list[TaskLabels]) -> list[dict[str, Any]]:
    """Each row's targets, task -> tensor (``tlcore.MISSING`` where the row has no label for the task)."""
    multilabel = {t.name: t.multilabel for t in tasks}

    def cells(r: Record) -> dict[str, Any]:
        return {c: labels if multilabel.get(c) else labels[0] for c, labels in (r.tasks or {}).items()}

    return [multitask_targets(tasks, cells(r), where=r.where) for r in records]
