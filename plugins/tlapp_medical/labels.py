"""Multi-task labels: the tasks of a manifest read with ``data.label_columns``, one per column.

``formats.read_manifest`` reads each file's labels per column (``Sample.tasks``, None for an empty cell);
this module turns them into what ``tlcore.multitask`` trains on: a ``TaskLabels`` per task, whose classes are
the labels its column holds, and per file a dict task -> target in which an empty cell is ``MISSING``, so
that the file is left out of that task's loss and metrics only. The counts the data summary and
``tlapp data check`` show per task live here too, so that both say the same.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import torch

from tlcore import ClassifierSpec, TaskLabels, multitask_targets

from .formats import Sample


def task_labels(specs: Mapping[str, ClassifierSpec], samples: Iterable[Sample]) -> list[TaskLabels]:
    """Each task of ``specs`` (in its order) with the classes its column holds among ``samples``, sorted.

    Classes come from the data, as the class folders do for one task; a task whose column holds fewer than
    two (one for multi-label) is refused by ``ClassificationTask.check_tasks``."""
    samples = list(samples)
    return [TaskLabels(name, sorted({label for s in samples for label in s.tasks.get(name) or ()}), spec.multilabel)
            for name, spec in specs.items()]


def targets(tasks: Sequence[TaskLabels], sample: Sample) -> dict[str, torch.Tensor]:
    """A file's targets, task -> tensor, ``MISSING`` for a task its manifest row leaves empty."""
    cells = {t.name: list(sample.tasks[t.name] or ()) or None for t in tasks if t.name in sample.tasks}
    return multitask_targets(tasks, cells, where=str(sample.path))


def class_counts(tasks: Iterable[str], samples: Iterable[Sample]) -> dict[str, dict[str, int]]:
    """Files per class, per task (a multi-label file counts once for each of its classes)."""
    samples = list(samples)
    return {t: dict(Counter(label for s in samples for label in s.tasks.get(t) or ())) for t in tasks}


def labelled_counts(tasks: Iterable[str], samples: Iterable[Sample]) -> dict[str, int]:
    """Files with a label, per task: the rest are masked out of that task."""
    samples = list(samples)
    return {t: sum(1 for s in samples if s.tasks.get(t)) for t in tasks}


def labels_of(task: str):
    """``sample -> its labels for task`` (``()`` where missing), for code that reads ``Sample.labels``."""
    return lambda sample: sample.tasks.get(task) or ()
