"""Property tests: whatever a user writes into a config file or ``--set``, the answer is a job spec or one
tlapp error (exit 2), never a Python exception with a traceback."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tlcore.classification import ClassifierSpec
from tlcore.config import JobSpec, Section, job_model, merge, parse_set, read_yaml, validate, validate_options
from tlcore.errors import TlappError
from tlcore.strategies import FreezeUnfreezeOptions

FAST = settings(max_examples=150, deadline=None)


class Data(Section):
    path: str | None = None
    size: int = 32
    fraction: float = 0.2


SPEC = job_model(Data, ClassifierSpec)
BASE = {"plugin": "p", "task": "t", "model": {"backbone": "b"}}

# Fragments YAML gives meaning to, so generated text reaches the parser's and constructor's corners.
YAML_BITS = ["\n", "  ", ": ", "- ", "[", "]", "{", "}", ",", "'", '"', "#", "&a ", "*a", "<<: ", "!!int ", "!!float ",
             "!!binary ", "!!python/object ", "? ", "|", ">", "---", "...", "%YAML 1.1", "lr", "train", "1",
             "1e999", ".inf", ".nan", "true", "null", "2024-13-45", "0x", "\t", "\ufeff", "é", "\x00", "~"]
yamlish = st.lists(st.sampled_from(YAML_BITS) | st.text(max_size=5), max_size=30).map("".join)

scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=2**63) | st.floats()
           | st.text(max_size=8))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
KEYS = {"train": ["epochs", "batch_size", "lr", "weight_decay", "seed", "monitor", "num_threads", "schedule",
                  "early_stopping", "clip_grad_norm", "precision", "bogus"],
        "model": ["backbone", "metrics", "threshold", "head_options", "multilabel", "bogus"],
        "data": ["path", "size", "fraction", "bogus"],
        "strategy": ["name", "layer_decay", "lr_mult", "head_epochs"],
        "method": ["name", "weight"],
        "augment_options": ["p", "hflip"]}
overrides = st.dictionaries(
    st.sampled_from([*KEYS, "augment", "output", "plugin", "bogus"]),
    st.one_of(values, st.sampled_from(list(KEYS.values())).flatmap(
        lambda keys: st.dictionaries(st.sampled_from(keys), values, max_size=4))),
    max_size=4)


def _only_tlapp_errors(call) -> Any:
    try:
        return call()
    except TlappError:
        return None


@FAST
@given(text=yamlish)
def test_read_yaml_of_any_text(text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "job.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        loaded = _only_tlapp_errors(lambda: read_yaml(path))
    assert loaded is None or isinstance(loaded, dict)


@FAST
@given(data=st.binary(max_size=200))
def test_read_yaml_of_any_bytes(data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "job.yaml"
        path.write_bytes(data)
        loaded = _only_tlapp_errors(lambda: read_yaml(path))
    assert loaded is None or isinstance(loaded, dict)


@FAST
@given(assignments=st.lists(st.text(max_size=20) | st.builds("{}={}".format, st.sampled_from(
    ["train.lr", "a.b.c", "a", ".", "a..b", "train"]), yamlish), max_size=5))
def test_parse_set_of_any_strings(assignments):
    parsed = _only_tlapp_errors(lambda: parse_set(assignments))
    assert parsed is None or isinstance(parsed, dict)


@FAST
@given(raw=st.dictionaries(st.text(max_size=8), values, max_size=5) | overrides.map(lambda o: merge(BASE, o)))
def test_validate_any_nested_dict(raw):
    job = _only_tlapp_errors(lambda: validate(SPEC, raw))
    if job is not None:
        assert isinstance(job, JobSpec)
        assert not isinstance(job.train.epochs, bool) and job.train.epochs >= 1
        assert math.isfinite(job.train.lr) and math.isfinite(job.train.weight_decay)
        assert 0 <= job.train.seed < 2**32


@FAST
@given(raw=st.dictionaries(st.sampled_from(KEYS["strategy"][1:] + ["train_bn", "bogus"]), values, max_size=4))
def test_validate_any_strategy_options(raw):
    options = _only_tlapp_errors(lambda: validate_options(FreezeUnfreezeOptions, raw, "strategy", "freeze-unfreeze"))
    if options is not None:
        assert not isinstance(options.head_epochs, bool)
        assert all(math.isfinite(v) for v in options.lr_mult.values())


def test_floats_still_take_ints_and_booleans_stay_booleans():
    job = validate(SPEC, merge(BASE, {"train": {"lr": 1, "channels_last": True}, "data": {"fraction": 0}}))
    assert job.train.lr == 1.0 and isinstance(job.train.lr, float) and job.train.channels_last is True
