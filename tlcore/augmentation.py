"""The augmentation pipeline a job names, built from the registry with the job's options."""

from __future__ import annotations

from typing import Any

from .config import JobSpec
from .errors import ConfigError
from .task import Context


def build_augmentation(job: JobSpec, context: Context, image_size: int | None) -> Any | None:
    """``job.augment`` built as ``factory(image_size, **job.augment_options)``, or None when it names none.

    ``image_size`` is what the task tells pipelines about its images (the input size, or a typical
    height); an unknown name or options the factory does not take are a ``ConfigError``.
    """
    if not job.augment:
        return None
    entry = context.registry.augmentations.get_or_fail(job.augment, where="augment")
    try:
        return entry.factory(image_size, **job.augment_options)
    except TypeError as exc:
        raise ConfigError(f"bad augment_options for {job.augment!r}: {exc}", where="augment_options",
                          fix=f"see the options of {job.augment!r} in `tlapp plugins`") from None
