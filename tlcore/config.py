"""The job spec: one YAML file, overridden by CLI flags and ``--set key=value``.

Validated with pydantic before any data is read. Each task adds its own
``data`` (and ``model``) options; unknown keys fail with the key probably meant.
"""

from __future__ import annotations

import copy
import difflib
import math
import types
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, create_model,
                      field_validator)
from pydantic_core import PydanticCustomError

from .errors import ConfigError

OptionsT = TypeVar("OptionsT", bound=BaseModel)

# Every seed consumer must accept it: numpy's RandomState takes 0..2**32-1, torch's generators
# 64 bits (the engine reseeds with seed * 100_003 + epoch, which stays below that).
MAX_SEED = 2**32 - 1


def _numbers_only(annotation: Any) -> bool:
    """True when a field takes int and/or float (optionally None) but not bool."""
    args = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    kinds = [a for a in args if a is not type(None)]
    return bool(kinds) and all(a in (int, float) for a in kinds)


class Section(BaseModel):
    """A strict section: unknown keys are errors, not silently ignored; numbers must be finite and
    must not be booleans (pydantic would read ``true`` as 1 and ``.inf`` as a valid learning rate)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_as_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name and _numbers_only(cls.model_fields[info.field_name].annotation):
            raise PydanticCustomError("bool_not_number", "a boolean is not a number")
        return value


class ModelSpec(Section):
    backbone: str = Field(description="backbone name, see `tlapp plugins`")
    head: str = "linear"
    head_options: dict[str, Any] = Field(default_factory=dict)
    init: str = Field("imagenet", description="a weights name of the backbone (imagenet, pretrained, ...) | "
                                               "file:PATH | run:DIR | none")
    init_allow_empty: bool = Field(False, description="let a file: or run: init that copies no tensor train "
                                                      "from random weights (with a warning) instead of failing")
    backbone_options: dict[str, Any] = Field(default_factory=dict)


class ScheduleSpec(Section):
    name: Literal["cosine", "onecycle", "constant"] = "cosine"
    warmup_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of each phase's steps spent warming up")


class EarlyStoppingSpec(Section):
    patience: int | None = Field(None, ge=1, description="epochs without improvement before stopping; null: never")
    min_delta: float = 0.0


class TrainSpec(Section):
    epochs: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        5, description="passes over the training set; auto: enough for train.min_steps optimizer steps, "
                       "within [train.min_epochs, train.max_epochs] (metrics.json `budget` records the number)")
    min_steps: int = Field(300, ge=1, description="with epochs auto: the optimizer steps to take at least, "
                                                  "rounded up to whole epochs")
    min_epochs: int = Field(1, ge=1, description="with epochs auto: the fewest epochs")
    max_epochs: int = Field(50, ge=1, description="with epochs auto: the most epochs")
    batch_size: int = Field(16, ge=1)
    min_batches: int | None = Field(None, ge=1, description="a training set smaller than this many batches trains "
                                                            "at batch size samples // min_batches (at least 1), so "
                                                            "an epoch still has that many steps; null: batch_size "
                                                            "always. A batch size the user gives (--batch-size, "
                                                            "--set, config file) is exact unless min_batches is "
                                                            "given too")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = 0.9
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    clip_grad_norm: float | None = Field(1.0, gt=0)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    monitor: str = Field("loss", description="validation metric that picks best.pt and drives early stopping; "
                                             "in a multi-task job (model.heads) a metric's mean over the tasks "
                                             "(auroc) or one task's (finding.auroc)")
    monitor_mode: Literal["min", "max"] = "min"
    early_stopping: EarlyStoppingSpec = Field(default_factory=EarlyStoppingSpec)
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seeds Python, numpy and torch (0 to 2**32-1)")
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool = False
    num_workers: int = Field(0, ge=0)
    num_threads: int | None = Field(None, ge=1, description="CPU threads for torch; null: torch's default")
    task_weights: dict[str, Annotated[float, Field(ge=0)]] = Field(
        default_factory=dict, description="multi-task jobs (model.heads), train.task_weighting fixed: each task's "
                                          "weight in the summed loss; a task not named weighs 1")
    task_weighting: Literal["fixed", "uncertainty"] = Field(
        "fixed", description="multi-task jobs: fixed (train.task_weights) | uncertainty (weights learned from each "
                             "task's noise, Kendall, Gal and Cipolla 2018)")
    feature_cache: bool = Field(True, description="head-only phases without augmentation train on cached features")
    preview_batches: int = Field(2, ge=0, le=16, description="the first training batches a new run draws, as "
                                                             "the model receives them, in train_batch<i>.png (or "
                                                             ".html); 0: none")

    @field_validator("epochs", mode="before")
    @classmethod
    def _whole_number_or_auto(cls, value: Any) -> Any:
        """One clear message for every wrong value (the union would report a problem per member)."""
        if isinstance(value, bool):
            raise PydanticCustomError("bool_not_number", "a boolean is not a number")
        if value == "auto":
            return value
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or value < 1:
            raise PydanticCustomError("epochs", "expected a whole number of epochs (1 or more) or 'auto'")
        return value

    @field_validator("max_epochs")
    @classmethod
    def _max_not_below_min(cls, value: int, info: ValidationInfo) -> int:
        least = info.data.get("min_epochs")
        if least is not None and value < least:
            raise PydanticCustomError("max_below_min", "below train.min_epochs ({least})", {"least": least})
        return value


class EvaluationSpec(Section):
    """How the final metrics are reported: their bootstrap intervals, and when a split is too small to trust."""

    bootstrap: int = Field(1000, ge=0, description="resamples (by group: patient, ...) behind the intervals of "
                                                   "the final metrics; 0: no intervals")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="coverage of the intervals")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seeds the resamples: runs on one test split with one "
                                                        "seed draw the same resamples, so they compare paired")
    min_samples: int = Field(30, ge=1, description="an evaluation split with fewer samples is warned about")
    min_groups: int = Field(10, ge=1, description="... and one with fewer groups (patients, ...)")


class StrategySpec(BaseModel):
    """``name`` plus the chosen strategy's own options, validated by that strategy."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    name: str = "finetune"


class MethodSpec(BaseModel):
    """``name`` of the training method plus its own options, validated by that method."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    name: str = "supervised"


class AdaptSpec(BaseModel):
    """Domain adaptation: ``method`` (``none`` or an adaptation method: dann, coral) and that method's own options,
    validated by it; ``target`` the target domain's unlabelled data (``--target-data``), ``target_test`` its
    labelled data, on which the final metrics are measured as well as on the source test split
    (``--target-test``, also with method none: the source-only baseline)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    method: str = "none"
    target: str | None = None
    target_test: str | None = None


class SemiSpec(BaseModel):
    """Semi-supervised fine-tuning: ``method`` (``none``, pseudo-label, fixmatch) and its own options, validated
    by it; ``unlabelled`` the pool of unlabelled in-domain data (``--unlabelled-data``)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    method: str = "none"
    unlabelled: str | None = None


class PretrainSpec(BaseModel):
    """Self-supervised pretraining (``tlapp pretrain``): ``method`` (``none`` or a pretraining method: simclr, or a
    plugin's own, e.g. the text plugin's mlm) and its own options, validated by it; ``data`` the unlabelled
    in-domain data it learns from (``tlapp pretrain --data``)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    method: str = "none"
    data: str | None = None


class JobSpec(Section):
    plugin: str
    task: str | None = None
    data: Section
    model: ModelSpec
    train: TrainSpec = Field(default_factory=TrainSpec)
    strategy: StrategySpec = Field(default_factory=StrategySpec)
    method: MethodSpec = Field(default_factory=MethodSpec)
    adapt: AdaptSpec = Field(default_factory=AdaptSpec)
    semi: SemiSpec = Field(default_factory=SemiSpec)
    pretrain: PretrainSpec = Field(default_factory=PretrainSpec)
    augment: str | None = Field(None, description="augmentation pipeline name; null: none")
    augment_options: dict[str, Any] = Field(default_factory=dict)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    output: str | None = None


def job_model(data_options: type[BaseModel], model_options: type[ModelSpec] = ModelSpec) -> type[JobSpec]:
    """The JobSpec class for one task, with its own data and model sections."""
    return create_model(
        "JobSpec",
        __base__=JobSpec,
        data=(data_options, Field(default_factory=data_options)),
        model=(model_options, ...),
    )


def validate_options(options: type[OptionsT], raw: dict[str, Any], section: str, owner: str,
                     fixed: tuple[str, ...] = ("name",)) -> OptionsT:
    """A strategy's or method's own options (``section`` is ``strategy``, ``method``, ``adapt``, ``semi`` or
    ``pretrain``), or one clear error; ``fixed`` are the section's own keys besides the options (``name``)."""
    allowed = ", ".join([*fixed, *options.model_fields])

    def bad(key: str, msg: str) -> ConfigError:
        return ConfigError(f"bad {section} option {section + '.' + key!r} for {section} {owner!r}: {msg}",
                           where="job spec", fix=f"options of {owner}: {allowed}")

    try:
        validated = options.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise bad(".".join(str(p) for p in err["loc"]), err["msg"]) from None
    for loc, value in _non_finite(validated.model_dump()):
        raise bad(".".join(loc), f"not a finite number (got {value!r})")
    return validated


def _non_finite(value: Any, loc: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], float]]:
    """Where a dumped spec holds inf or nan, also inside free-form option dicts that pydantic does not type."""
    if isinstance(value, float) and not math.isfinite(value):
        return [(loc, value)]
    if isinstance(value, dict):
        return [hit for k, v in value.items() for hit in _non_finite(v, (*loc, str(k)))]
    if isinstance(value, (list, tuple)):
        return [hit for i, v in enumerate(value) for hit in _non_finite(v, (*loc, str(i)))]
    return []


class _DuplicateKey(yaml.constructor.ConstructorError):
    """Valid YAML, but the same key twice in one mapping: which one was meant is the user's call."""


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key given twice in one mapping is an error (plain YAML keeps the last
    silently), and a malformed scalar (``2020-13-45``, ``!!int abc``) is a YAML error, not a ValueError."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *anchor` keys may be overridden; that is what merging means
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:
                    continue  # unhashable: the safe loader reports it
                if first is not key_node:
                    raise _DuplicateKey(
                        None, None, f"duplicate key {key!r} (first given at line {first.start_mark.line + 1})",
                        key_node.start_mark)
        return super().construct_mapping(node, deep=deep)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, LookupError, OverflowError) as exc:  # e.g. `!!int` with no digits
            raise yaml.constructor.ConstructorError(None, None, f"cannot read {node.value!r}: {exc}",
                                                    node.start_mark) from None


def _load_yaml(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror}", where=str(path),
                          fix="check the --config path") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"config file is not UTF-8 text: byte 0x{data[exc.start]:02x} at byte position "
                          f"{exc.start} (line {line}) cannot be decoded", where=f"{path}:{line}",
                          fix="save the file with UTF-8 encoding (most editors offer it under 'Save with "
                              "encoding')") from None
    try:
        loaded = _load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        if isinstance(exc, _DuplicateKey):
            raise ConfigError(f"config file gives a {exc.problem}", where=where,
                              fix="keep one of the two; YAML would silently use the last") from None
        raise ConfigError(f"config file is not valid YAML: {getattr(exc, 'problem', None) or exc}", where=where,
                          fix="correct the YAML at that line") from None
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
            value = _load_yaml(raw) if raw != "" else ""
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
        job = spec_cls.model_validate(raw)
    except ValidationError as exc:
        raise _config_error(spec_cls, exc, source) from None
    for loc, value in _non_finite(job.model_dump()):
        raise ConfigError(f"bad value for {'.'.join(loc)!r}: not a finite number (got {value!r})", where=source,
                          fix="give a finite number in the config file or with --set")
    return job


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
        if get_origin(current) is dict:  # e.g. model.heads.<task>: the part is a key, the section its value
            current = get_args(current)[1]
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        current = fields[part].annotation
    fields = getattr(current, "model_fields", None)
    return sorted(fields) if fields else []


def to_yaml(spec: JobSpec) -> str:
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
