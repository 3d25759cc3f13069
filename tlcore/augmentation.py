"""The augmentation pipeline a job names, built from the registry with the job's options."""

from __future__ import annotations

import difflib
import inspect
from typing import Any

from .config import JobSpec
from .errors import ConfigError
from .registry import Registry
from .task import Context


def check_augment_options(job: JobSpec, registry: Registry) -> None:
    """Fail on an unknown ``augment`` name or an option its factory does not take, before any data is read.

    The options are bound to the factory's signature (the image size comes first); factories whose
    signature cannot be read, or that take ``**kwargs``, are left to ``build_augmentation``.
    """
    if not job.augment:
        return
    entry = registry.augmentations.get_or_fail(job.augment, where="augment")
    try:
        signature = inspect.signature(entry.factory)
    except (TypeError, ValueError):
        return
    params = signature.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    # The first parameter is the image size, which the task passes; the user's options are the rest.
    taken = [name for name, p in list(params.items())[1:]
             if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    for key in job.augment_options:
        if key not in taken:
            close = difflib.get_close_matches(key, taken, n=1)
            hint = f"did you mean 'augment_options.{close[0]}'? " if close else ""
            raise ConfigError(f"augmentation {job.augment!r} has no option {key!r}",
                              where=f"augment_options.{key}",
                              fix=f"{hint}options of {job.augment}: {', '.join(taken) or '(none)'}")
    try:
        signature.bind(None, **job.augment_options)
    except TypeError as exc:
        raise ConfigError(f"bad augment_options for {job.augment!r}: {exc}", where="augment_options",
                          fix=f"options of {job.augment}: {', '.join(taken) or '(none)'}") from None


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
