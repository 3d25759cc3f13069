"""The classical baseline ``compare`` measures beside the transfer strategies: a logistic regression on
features that owe nothing to pretraining (TF-IDF of the words, downsampled raw pixels), fitted on the same
training split and scored on the same evaluation split, through the task's own evaluator and the same
bootstrap resamples. "Did transfer help?" is only answered against something that is not transfer.

A task offers it through ``ClassificationTask.classical_inputs``; the regularisation strength is chosen by
cross-validation on the training split (scikit-learn's ``LogisticRegressionCV``), so the baseline is a fair
one and not a strawman.
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .config import JobSpec
from .intervals import add_intervals
from .task import Context, DataBundle, Task

NAME = "classical-baseline"  # its row in compare's table


@dataclass
class ClassicalInputs:
    """What a classical baseline fits: ``features`` (a scikit-learn transformer, fitted on ``train`` only)
    turns ``train`` and ``evaluated`` (texts, arrays: whatever it takes, one sample each, ``evaluated`` in
    the evaluation split's dataset order) into feature rows; targets are class indices."""

    description: str
    features: Any
    train: Any
    train_targets: Sequence[int]
    evaluated: Any
    evaluated_targets: Sequence[int]


def fit_and_score(inputs: ClassicalInputs, num_classes: int, seed: int) -> np.ndarray:
    """Class probabilities of the evaluation samples (columns: every class, also those absent from train)."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.pipeline import make_pipeline

    targets = np.asarray(inputs.train_targets)
    smallest = min(Counter(targets.tolist()).values())
    # Cross-validate the strength where every fold can hold every class; else a fixed, moderate strength.
    classifier = (LogisticRegressionCV(Cs=10, cv=min(5, smallest), max_iter=3000, random_state=seed)
                  if smallest >= 2 else LogisticRegression(C=1.0, max_iter=3000, random_state=seed))
    model = make_pipeline(inputs.features, classifier)
    with warnings.catch_warnings():  # the announced renaming of LogisticRegressionCV's fitted attributes: unused
        warnings.filterwarnings("ignore", category=FutureWarning, module="sklearn")
        model.fit(inputs.train, targets)
    probabilities = np.zeros((len(inputs.evaluated_targets), num_classes))
    probabilities[:, model.classes_] = model.predict_proba(inputs.evaluated)
    return probabilities


def classical_baseline(task: Task, job: JobSpec, data: DataBundle, context: Context) -> dict[str, Any] | None:
    """The baseline's final metrics (with intervals) on the split the runs are evaluated on, how it was
    made, and its resamples; None when the task offers no baseline for this job."""
    split, _ = data.evaluation_split()
    if isinstance(data.num_outputs, dict):  # a multi-task bundle: the baseline is one logistic regression
        return None
    offer = getattr(task, "classical_inputs", None)
    inputs = offer(job, data, split) if offer is not None else None
    if inputs is None:
        return None
    started = time.perf_counter()
    probabilities = fit_and_score(inputs, data.num_outputs, job.train.seed)
    evaluator = task.evaluator(job, data, context)
    # The evaluator takes (inputs, targets) batches through a model; here the "model" hands back
    # log-probabilities, whose softmax is the baseline's probabilities.
    logits = torch.from_numpy(np.log(np.clip(probabilities, 1e-12, 1.0))).float()
    evaluator.update(nn.Identity(), (logits, torch.as_tensor(list(inputs.evaluated_targets), dtype=torch.long)))
    metrics, boot = add_intervals(evaluator.compute(), evaluator, data.groups.get(split),
                                  len(inputs.evaluated_targets), data.group_unit, job.evaluation)
    return {"description": inputs.description, "evaluated_on": split, "metrics": metrics,
            "wall_seconds": time.perf_counter() - started, "resamples": boot}
