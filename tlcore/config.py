"""The job spec: one YAML file, overridden by CLI flags and ``--set key=value``.

Validated with pydantic before any data is read. Each task adds its own
``data`` (and ``model``) options; unknown keys fail with the key probably meant.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from .errors import ConfigError

OptionsT = TypeVar("OptionsT", bound=BaseModel)


class Section(BaseModel):
    """A strict section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ModelSpec(Section):
    backbone: str = Field(description="backbone name, see `tlapp plugins`")
    head: str = "linear"
    head_options: dict[str, Any] = Field(default_factory=dict)
    init: str = Field("imagenet", description="a weights name of the backbone (imagenet, pretrained, ...) | "
                                               "file:PATH | run:DIR | none")
    backbone_options: dict[str, Any] = Field(default_factory=dict)


class ScheduleSpec(Section):
    name: Literal["cosine", "onecycle", "constant"] = "cosine"
    warmup_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of each phase's steps spent warming up")


class EarlyStoppingSpec(Section):
    patience: int | None = Field(None, ge=1, description="epochs without improvement before stopping; null: never")
    min_delta: float = 0.0


class TrainSpec(Section):
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = 0.9
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    clip_grad_norm: float | None = Field(1.0, gt=0)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    monitor: str = Field("loss", description="validation metric that picks best.pt and drives early stopping")
    monitor_mode: Literal["min", "max"] = "min"
    early_stopping: EarlyStoppingSpec = Field(default_factory=EarlyStoppingSpec)
    seed: int = 0
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool = False
    num_workers: int = Field(0, ge=0)
    num_threads: int | None = Field(None, ge=1, description="CPU threads for torch; null: torch's default")
    feature_cache: bool = Field(True, description="head-only phases without augmentation train on cached features")


class StrategySpec(BaseModel):
    """``name`` plus the chosen strategy's own options, validated by that strategy."""

    model_config = ConfigDict(extra="allow")
    name: str = "finetune"


class MethodSpec(BaseModel):
    """``name`` of the training method plus its own options, validated by that method."""

    model_config = ConfigDict(extra="allow")
    name: str = "supervised"


class JobSpec(Section):
    plugin: str
    task: str | None = None
    data: Section
    model: ModelSpec
    train: TrainSpec = Field(default_factory=TrainSpec)
    strategy: StrategySpec = Field(default_factory=StrategySpec)
    method: MethodSpec = Field(default_factory=MethodSpec)
    augment: str | None = Field(None, description="augmentation pipeline name; null: none")
    augment_options: dict[str, Any] = Field(default_factory=dict)
    output: str | None = None


def job_model(data_options: type[BaseModel], model_options: type[ModelSpec] = ModelSpec) -> type[JobSpec]:
    """The JobSpec class for one task, with its own data and model sections."""
    return create_model(
        "JobSpec",
        __base__=JobSpec,
        data=(data_options, Field(default_factory=data_options)),
        model=(model_options, ...),
    )


def validate_options(options: type[OptionsT], raw: dict[str, Any], section: str, owner: str) -> OptionsT:
    """A strategy's or method's own options (``section`` is ``strategy`` or ``method``), or one clear error."""
    try:
        return options.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = section + "." + ".".join(str(p) for p in err["loc"])
        allowed = ", ".join(["name", *options.model_fields])
        raise ConfigError(f"bad {section} option {key!r} for {section} {owner!r}: {err['msg']}",
                          where="job spec", fix=f"options of {owner}: {allowed}") from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror}", where=str(path)) from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"config file is not valid YAML: {getattr(exc, 'problem', exc)}", where=where) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError("config file must hold a mapping of sections", where=str(path),
                          fix="start with keys such as `plugin:`, `data:`, `model:`, `train:`")
    return loaded


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base``; mappings merge, everything else replaces."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_set(assignments: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Turn ``["train.lr=0.01", "data.window=lung"]`` into a nested dict; values are YAML scalars."""
    out: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}", fix="e.g. --set train.lr=0.001")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {part!r} is set both as a value and as a section")
        node[parts[-1]] = value
    return out


def validate(spec_cls: type[JobSpec], raw: dict[str, Any], source: str = "job spec") -> JobSpec:
    """Validate a merged job dict, turning the first pydantic error into one clear message."""
    try:
        return spec_cls.model_validate(raw)
    except ValidationError as exc:
        raise _config_error(spec_cls, exc, source) from None


def _config_error(spec_cls: type[BaseModel], exc: ValidationError, source: str) -> ConfigError:
    errors = exc.errors()
    first = errors[0]
    loc = [str(p) for p in first["loc"]]
    key = ".".join(loc)
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    if first["type"] == "extra_forbidden":
        known = _fields_at(spec_cls, loc[:-1])
        close = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.5)
        hint = f"did you mean {'.'.join(loc[:-1] + [close[0]])!r}? " if close else ""
        return ConfigError(f"unknown key {key!r}{more}", where=source,
                           fix=f"{hint}keys allowed here: {', '.join(known)}")
    if first["type"] == "missing":
        return ConfigError(f"missing required key {key!r}{more}", where=source,
                           fix=f"set it in the config file or with --set {key}=...")
    return ConfigError(f"bad value for {key!r}: {first['msg']} (got {first.get('input')!r}){more}",
                       where=source, fix="correct the value in the config file or with --set")


def _fields_at(model: type[BaseModel], loc: list[str]) -> list[str]:
    current: Any = model
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        current = fields[part].annotation
    fields = getattr(current, "model_fields", None)
    return sorted(fields) if fields else []


def to_yaml(spec: JobSpec) -> str:
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
