"""take_covering: the rule every plugin's carved splits follow."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from tlcore.splits import missing_class_warnings, take_covering


def test_missing_classes_are_swapped_in_and_the_rest_stays_whole():
    labels = {"a": ["x"], "b": ["x"], "c": ["x"], "d": ["y"], "e": ["x"], "f": ["y"], "g": ["z"]}
    assert take_covering(list("abcdefg"), labels, 2) == (["a", "d"], [])  # y swapped in for b
    assert take_covering(list("abcdefg"), labels, 1) == (["a"], ["y"])  # one unit cannot hold two classes
    # z has a single unit: training keeps it, and the split does not miss it
    assert take_covering(list("gabcdef"), labels, 2) == (["b", "d"], [])


def test_training_keeps_a_class_the_first_units_would_all_have_taken():
    labels = {i: {"car"} for i in range(10)} | {0: {"tram"}, 1: {"tram"}}
    taken, missed = take_covering(list(range(10)), labels, 3)
    assert missed == [] and 0 in taken and 1 not in taken and len(taken) == 3


def test_a_split_too_small_names_what_it_misses():
    labels = {i: {c} for i, c in enumerate("aabbccdd")}
    taken, missed = take_covering(list(range(8)), labels, 2)
    assert len(taken) == 2 and len(missed) == 2
    warnings = missing_class_warnings("test", missed, "patient")
    assert len(warnings) == 2 and all("test split" in w and "patient" in w for w in warnings)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from("abcdef"), min_size=2, max_size=40), st.data())
def test_single_label_splits_keep_every_class_they_can(classes, data):
    order = list(range(len(classes)))
    labels = {i: {c} for i, c in enumerate(classes)}
    count = data.draw(st.integers(0, len(order)))
    taken, missed = take_covering(order, labels, count)
    rest = [u for u in order if u not in taken]
    assert len(taken) == count and sorted(taken + rest) == order
    members = Counter(classes)
    held = {c for u in taken for c in labels[u]}
    assert missed == sorted(c for c in members if members[c] >= 2 and c not in held)
    shareable = [c for c in members if members[c] >= 2]
    if len(shareable) <= count <= len(order) - len(members):
        assert missed == []  # room for one of each class on both sides
        assert {c for u in rest for c in labels[u]} == set(members)
