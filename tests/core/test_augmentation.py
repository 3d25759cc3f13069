"""build_augmentation: the pipeline a job names, with its options, or a clear error."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from tlcore import ConfigError, Context, Entry, JobSpec, ModelSpec, Registry, Section, TlappError, build_augmentation


def pipeline(image_size, strength: float = 1.0):
    return ("pipeline", image_size, strength)


@pytest.fixture
def context(tmp_path: Path) -> Context:
    registry = Registry()
    registry.augmentations.add("light", Entry("light", pipeline, plugin="test"), plugin="test")
    return Context(registry=registry, device=torch.device("cpu"), cache_dir=tmp_path, log=logging.getLogger("test"))


def job(augment=None, **options) -> JobSpec:
    return JobSpec(plugin="test", data=Section(), model=ModelSpec(backbone="b"), augment=augment,
                   augment_options=options)


def test_the_named_pipeline_gets_the_image_size_and_the_options(context):
    assert build_augmentation(job("light", strength=0.5), context, 128) == ("pipeline", 128, 0.5)
    assert build_augmentation(job(), context, 128) is None


def test_unknown_pipelines_and_options_are_config_errors(context):
    with pytest.raises(TlappError, match="unknown augmentation pipeline 'lihgt'") as info:
        build_augmentation(job("lihgt"), context, 128)
    assert "did you mean 'light'" in info.value.fix
    with pytest.raises(ConfigError, match="bad augment_options for 'light'") as info:
        build_augmentation(job("light", hflip=True), context, 128)
    assert info.value.where == "augment_options"
