"""Rules every task's carved splits share: keep each class that can be kept, and say when a split is too small.

A task orders its samples (or groups of samples, e.g. patients) its own way, seeded; these functions decide
which of them a carved split takes, and what warnings its data check and run give about the result.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Hashable, Mapping, Sequence
from typing import TypeVar

K = TypeVar("K", bound=Hashable)


def take_covering(order: Sequence[K], labels: Mapping[K, Collection[str]], count: int) -> tuple[list[K], list[str]]:
    """The ``count`` units a carved split takes from ``order``, and the classes it could not be given.

    Start from the first ``count`` of ``order`` (the task's seeded, roughly stratified order), then, rarest
    class first, swap units between the split and what stays behind (training) so that:

    1. what stays behind keeps every class of ``order``: the model must see a class to be measured on it
       (a class with one unit always stays behind);
    2. the split holds every class that has at least two units, so that it can measure every class.

    A swap moves the latest-taken unit that the split can spare for the earliest one left that training can
    spare, so the split keeps its size and stays close to the task's order. A class the split cannot be
    given this way (too small for every class, or every candidate the last of another class in training)
    is returned, for the task to warn about, naming the class and the split.
    """
    count = max(0, min(count, len(order)))
    taken, rest = list(order[:count]), list(order[count:])
    members = Counter(label for unit in order for label in set(labels[unit]))
    rarest_first = sorted(members, key=lambda c: (members[c], c))

    def counts(units: list[K]) -> Counter[str]:
        return Counter(label for unit in units for label in set(labels[unit]))

    def swap(outgoing: K | None, incoming: K | None) -> bool:
        if outgoing is None or incoming is None:
            return False
        taken[taken.index(outgoing)] = incoming
        rest[rest.index(incoming)] = outgoing
        return True

    for cls in rarest_first:  # 1. training keeps every class
        held, left = counts(taken), counts(rest)
        if left[cls]:
            continue
        # the split may give up a unit of a class it holds twice, or of one it need not hold (one unit)
        outgoing = next((u for u in reversed(taken) if cls in labels[u]
                         and all(held[c] > 1 or members[c] < 2 for c in set(labels[u]))), None)
        incoming = next((u for u in rest if all(left[c] > 1 for c in set(labels[u]))), None)
        swap(outgoing, incoming)
    missed: list[str] = []
    for cls in (c for c in rarest_first if members[c] >= 2):  # 2. the split holds every class it can
        held, left = counts(taken), counts(rest)
        if held[cls]:
            continue
        incoming = next((u for u in rest if cls in labels[u] and all(left[c] > 1 for c in set(labels[u]))), None)
        outgoing = next((u for u in reversed(taken)
                         if all(held[c] > 1 or members[c] < 2 for c in set(labels[u]))), None)
        if not swap(outgoing, incoming):
            missed.append(cls)
    return taken, sorted(missed)


def missing_class_warnings(split: str, missed: Collection[str], unit: str) -> list[str]:
    """One warning per class a carved split could not be given (see :func:`take_covering`)."""
    return [f"class {c!r} could not be put in the {split} split: too few {unit}s of it (or the split is too small "
            f"for every class), so {split} metrics of {c!r} are undefined" for c in sorted(missed)]


def small_split_warning(split: str, samples: int, groups: int | None, unit: str, *, min_samples: int,
                        min_groups: int) -> str | None:
    """A warning for an evaluation split too small for its metrics to mean much, else None.

    ``groups`` is the number of distinct groups (patients, ...) when the task has groups, ``unit`` their name."""
    few_samples = samples < min_samples
    few_groups = groups is not None and unit != "sample" and groups < min_groups
    if not (few_samples or few_groups):
        return None
    size = f"{samples} sample{'s' if samples != 1 else ''}"
    if groups is not None and unit != "sample":
        size += f" from {groups} {unit}{'s' if groups != 1 else ''}"
    limit = " and ".join([f"{min_samples} samples"] * few_samples + [f"{min_groups} {unit}s"] * few_groups)
    caveat = (f"; with so few {unit}s even the bootstrap intervals, which resample {unit}s, understate the "
              f"uncertainty" if few_groups else "")
    return (f"the {split} split has {size}, fewer than {limit}: its metrics are mostly noise; read them with "
            f"their intervals{caveat} (evaluation.min_samples / evaluation.min_groups set this warning)")
