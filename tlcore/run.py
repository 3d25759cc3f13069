"""One training run, from job spec to ``metrics.json``: the sequence ``tlapp run`` follows.

resolve the job -> prepare the run directory -> build data and model -> transfer
weights -> size the budget (epochs, batch size) to the training set -> for each
strategy phase: apply, verify, train epochs (checkpointing) -> evaluate the best
weights -> write metrics.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
import shlex
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from collections.abc import Sized
from typing import Any, cast

import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from . import checkpoint, config as cfg
from .augmentation import check_augment_options
from .budget import Budget, plan_budget, recorded_budget, resumed_budget
from .directories import kind_of, mark, prepare_output
from .device import Precision, resolve_device, resolve_precision
from .engine import evaluate, is_improvement, train_one_epoch
from .errors import ConfigError, DataError, TlappError
from .features import FeatureCache, HeadOnly, cache_decision
from .intervals import RESAMPLES_FILE, TARGET_RESAMPLES_FILE, Bootstrap, add_intervals, flatten_tasks, shown
from .methods import SECTIONS, ExtraStreams, Method, chosen_method
from .plugins import Plugins
from .pretrain import PRETRAIN_DEFAULTS
from .preview import write_previews
from .schedule import make_optimizer, make_scheduler
from .seeding import epoch_seed, seed_everything
from .splits import small_split_warning
from .registry import ParameterGroup
from .resume import record_resumed_job, resume_checkpoint, resumed_metrics
from .strategies import (Phase, Strategy, apply_phase, check_groups, format_table, optimizer_groups, plan_phases,
                         set_train_mode, verify_phase)
from .task import BackboneHeadModel, Context, DataBundle, Evaluator, Task, TransferModel, parameter_groups
from .transfer import HANDS_ON, InitReport, backbone_prefix, initialise, parse_init

log = logging.getLogger("tlapp")


@dataclass
class Run:
    """What hooks see: the resolved job, its directory, the task and (once built) the model."""

    job: cfg.JobSpec
    task: Task
    directory: Path
    context: Context
    plugins: Plugins
    precision: Precision
    model: nn.Module | None = None
    data: DataBundle | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    budget: Budget | None = None  # epochs, batch size and steps, once sized (before the method is set up)
    target_test: DataBundle | None = None  # adapt.target_test's data, all in its test split, once built
    method: Method | None = None  # the job's training method, once set up (before the first epoch)

    @property
    def config(self) -> dict[str, Any]:
        return self.job.model_dump(mode="json")

    @property
    def built_data(self) -> DataBundle:
        """``data``, once the task has built it."""
        if self.data is None:
            raise RuntimeError("the run's data is not built yet")
        return self.data

    @property
    def checkpoints(self) -> Path:
        return self.directory / "checkpoints"

    def evaluator(self, data: DataBundle) -> Evaluator:
        """What validation and the final evaluation measure on ``data``: the method's own evaluator where it
        brings one (pretraining's pretext loss), else the task's."""
        own = self.method.evaluator(self, data) if self.method is not None else None
        return own if own is not None else self.task.evaluator(self.job, data, self.context)

    def write_metrics(self) -> None:
        checkpoint.atomic_write_text(self.directory / "metrics.json", json.dumps(self.metrics, indent=2) + "\n")


# ---------------------------------------------------------------- job resolution

def find_task(plugins: Plugins, plugin: str, task_name: str | None) -> Task:
    plugins.require(plugin)
    tasks = plugins.registry.tasks_of(plugin)
    if not tasks:
        raise ConfigError(f"plugin {plugin!r} offers no task", fix="see `tlapp plugins`")
    if task_name is None:
        return tasks[0]
    for t in tasks:
        if t.name == task_name:
            return t
    raise ConfigError(f"plugin {plugin!r} has no task {task_name!r}", where="task",
                      fix=f"tasks of {plugin}: {', '.join(t.name for t in tasks)}")


def resolve_job(plugins: Plugins, *, plugin: str | None, config_file: str | None,
                overrides: dict[str, Any], sets: tuple[str, ...] = (),
                base: dict[str, Any] | None = None, pretraining: bool = False) -> tuple[Task, cfg.JobSpec]:
    """Merge recipe < earlier run's architecture (for run: inits) < base < file < flags < --set, then validate.

    ``base`` is a run's own resolved job (resume, evaluate, predict): it took its ``run:`` source's
    architecture when it started, so the source is not read again (it may have been moved or deleted since).
    ``pretraining``: the job is ``tlapp pretrain``'s, whose method must be self-supervised; any other job's must
    not be.
    """
    user: dict[str, Any] = cfg.merge(base or {}, cfg.read_yaml(config_file) if config_file else {})
    user = cfg.merge(user, overrides)
    user = cfg.merge(user, cfg.parse_set(list(sets)))
    if pretraining and base is None:  # a resumed run's job already holds tlapp pretrain's defaults
        user = cfg.merge(pretrain_defaults(user), user)
    given = user.get("train")
    if isinstance(given, dict) and "batch_size" in given and "min_batches" not in given:
        # A batch size the user chose is the batch size; train.min_batches only lowers the recipe's.
        user = cfg.merge(user, {"train": {"min_batches": None}})
    plugin = plugin or user.get("plugin")
    if not plugin:
        raise ConfigError("no plugin given", fix="pass --plugin NAME or set `plugin:` in the config file")
    if user.get("plugin") not in (None, plugin):
        raise ConfigError(f"--plugin {plugin} disagrees with the config file's plugin {user['plugin']!r}")
    task = find_task(plugins, plugin, user.get("task"))
    raw = cfg.merge(task.recipe, {"plugin": plugin, "task": task.name})
    init = user.get("model", {}).get("init", raw.get("model", {}).get("init", "imagenet"))
    kind, source = parse_init(init) if isinstance(init, str) else (None, None)
    architecture = None
    if kind == "run" and source is not None and base is None:
        architecture = source_architecture(Path(str(source)), plugin, task.name)
        raw = cfg.merge(raw, {"model": architecture})
    if user.get("strategy", {}).get("name", raw.get("strategy", {}).get("name")) != raw.get("strategy", {}).get("name"):
        # Another strategy than the recipe's: the recipe's options were meant for its own strategy.
        raw["strategy"] = {}
    raw = cfg.merge(raw, user)
    spec_cls = cfg.job_model(task.DataOptions, task.ModelOptions)
    job = cfg.validate(spec_cls, raw, source=config_file or "job spec")
    strategy = strategy_class(plugins, job)  # unknown strategies, methods and options fail here, before any data
    strategy.check(plugins.registry)
    check_pretraining(plugins, job, pretraining)
    method = method_class(plugins, job)
    method.check(job, task)
    if architecture is not None and not strategy.forces_init:
        check_backbone_kept(job, architecture)
    check_augment_options(job, plugins.registry)
    check_monitor(task, job)
    return task, job


def pretrain_defaults(user: dict[str, Any]) -> dict[str, Any]:
    """What ``tlapp pretrain`` sets before the user's settings: ``PRETRAIN_DEFAULTS``, without its strategy options
    when the user chose another strategy (they are finetune's)."""
    chosen = (user.get("strategy") or {}).get("name", "finetune")
    return {k: v for k, v in PRETRAIN_DEFAULTS.items() if k != "strategy" or chosen == "finetune"}


def check_pretraining(plugins: Plugins, job: cfg.JobSpec, pretraining: bool) -> None:
    """``tlapp pretrain`` trains self-supervised methods and every other command the rest; checked before the
    method's own options, so that each command names its own way out."""
    _, name, _ = chosen_method(job)
    cls = plugins.registry.methods.get(name)
    if cls is None:
        return  # method_class says what is installed and what was probably meant
    if pretraining and not cls.self_supervised:
        known = ", ".join(sorted(n for n, c in plugins.registry.methods.items() if c.self_supervised))
        what = (f"{name!r} is not a self-supervised pretraining method" if job.pretrain.method != "none"
                else "pretraining needs a self-supervised method")
        raise ConfigError(what, where="pretrain.method", fix=f"pass --method NAME, one of: {known or '(none)'}")
    if cls.self_supervised and not pretraining:
        raise ConfigError(f"{name} is self-supervised pretraining, which `tlapp pretrain` trains, not this command",
                          where="pretrain.method",
                          fix=f"run `tlapp pretrain --plugin {job.plugin} --method {name} --data PATH`, then "
                              "fine-tune from it with --init run:DIR")
    if cls.self_supervised and job.strategy.name == "auto":
        raise ConfigError("strategy auto races strategies on labelled validation metrics, which pretraining has "
                          "none of", where="strategy.name",
                          fix="pretrain with strategy finetune (the default of `tlapp pretrain`), scratch or "
                              "freeze-unfreeze")


def check_monitor(task: Task, job: cfg.JobSpec) -> None:
    """A ``train.monitor`` the validation will not report fails here, not after the first epoch."""
    names = task.metric_names(job)
    if names is not None:
        check_metric_name(job.train.monitor, names, "train.monitor")


def check_metric_name(name: str, names: list[str], where: str) -> None:
    """Refuse a metric the job's validation does not report, naming the closest one and the rest."""
    if name in names:
        return
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(f"{where} {name!r} is not a validation metric of this job", where=where,
                      fix=f"{hint}choose one of: {', '.join(names)}")


def source_architecture(run_dir: Path, plugin: str, task: str) -> dict[str, Any]:
    """The model section of an earlier run (structure transfer), without its own init.

    Refused when that run belongs to another ``plugin`` or ``task``: its architecture is not one this task
    builds (a text encoder in an image task fails mid-run, far from the cause).
    """
    path = run_dir / "config.yaml"
    if not path.exists():
        raise ConfigError(f"{run_dir} is not a tlapp run directory (no config.yaml)", where="model.init",
                          fix="use run:DIR with the output folder of an earlier `tlapp run`")
    saved = cfg.read_yaml(path)
    theirs = (saved.get("plugin"), saved.get("task"))
    if theirs[0] != plugin or theirs[1] not in (None, task):
        raise ConfigError(
            f"--init run:{run_dir} is a run of plugin {theirs[0]!r}, task {theirs[1]!r}; this job is plugin "
            f"{plugin!r}, task {task!r}. run: copies an earlier run's architecture and weights, so it works only "
            "within one plugin and task", where="model.init",
            fix="initialise from named weights of this job's backbone (--init imagenet, pretrained, ...: see "
                "`tlapp plugins`), or from a state dict of a backbone of the same architecture: --init file:PATH")
    model = dict(saved.get("model") or {})
    model.pop("init", None)
    model.pop("init_allow_empty", None)
    return model


def check_backbone_kept(job: cfg.JobSpec, architecture: dict[str, Any]) -> None:
    """A ``run:`` init whose backbone the job overrides would copy little or nothing: refuse it up front."""
    theirs = architecture.get("backbone")
    if theirs is not None and theirs != job.model.backbone:
        raise ConfigError(f"--init {job.model.init} trained backbone {theirs!r}; this job asks for "
                          f"{job.model.backbone!r}", where="model.backbone",
                          fix=f"drop the backbone override to continue from that run's architecture, or "
                              f"initialise {job.model.backbone!r} from its own named weights or --init file:PATH")


def method_class(plugins: Plugins, job: cfg.JobSpec) -> Method:
    """The job's training method with its options validated: the one ``method.name``, ``adapt.method`` or
    ``semi.method`` names (see ``tlcore.methods.chosen_method``)."""
    section, name, options = chosen_method(job)
    key = SECTIONS[section][0]
    cls = plugins.registry.methods.get_or_fail(name, where=f"{section}.{key}")
    if cls.section != section:
        theirs = f"{cls.section}.{SECTIONS[cls.section][0]}"
        raise ConfigError(f"{name!r} is not chosen with {section}.{key}", where=f"{section}.{key}",
                          fix=f"choose it with --set {theirs}={name}")
    return cls.from_spec(options)


def strategy_class(plugins: Plugins, job: cfg.JobSpec) -> Strategy:
    cls = plugins.registry.strategies.get_or_fail(job.strategy.name, where="strategy.name")
    options = {k: v for k, v in job.strategy.model_dump().items() if k != "name"}
    return cls.from_spec(options)


# ---------------------------------------------------------------- run directory

def prepare_directory(job: cfg.JobSpec, *, resume: bool, overwrite: bool) -> Path:
    """The run's folder: new, the interrupted run to ``resume``, or an earlier attempt to start again.

    A run that stopped before its first checkpoint (``last.pt``) has nothing to continue and nothing to lose,
    so the same command starts it again in place, without ``--overwrite``; ``--resume`` needs ``last.pt``.
    """
    out = Path(job.output) if job.output else Path("runs") / f"{job.plugin}-{datetime.now():%Y%m%d-%H%M%S}"
    last = out / "checkpoints" / "last.pt"
    if resume:
        if not last.exists():
            if kind_of(out) == "run":
                raise ConfigError(f"nothing to resume in {out}: the run stopped before its first checkpoint "
                                  "(no checkpoints/last.pt)", where="--output",
                                  fix="start it again with the same command without --resume")
            raise ConfigError(f"nothing to resume in {out}: no checkpoints/last.pt", where="--output",
                              fix="check --output, or start a new run without --resume")
        _remove_partial_writes(out)
        return out
    if not overwrite and kind_of(out) == "run" and not last.exists():
        _remove_partial_writes(out)
        # A best.pt without last.pt, or a metrics.json saying "failed", belong to the attempt that stopped;
        # left in place they would pass for results of this one.
        for stale in (out / "checkpoints" / "best.pt", out / "metrics.json"):
            stale.unlink(missing_ok=True)
        mark(out, "run")
        (out / "checkpoints").mkdir(exist_ok=True)
        return out
    prepare_output(out, "run", overwrite=overwrite, protected=(getattr(job.data, "path", None), Path.cwd()))
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    return out


def _remove_partial_writes(run_dir: Path) -> None:
    for folder in (run_dir, run_dir / "checkpoints"):
        for path in checkpoint.remove_partial_writes(folder):
            log.info("removed %s, left by a write that was killed", path)


def continue_hint(run_dir: Path, command: str = "run") -> str:
    """How to carry on with an interrupted run of ``command`` (``run``, ``pretrain``), attached to the
    interruption, which the CLI prints."""
    if (run_dir / "checkpoints" / "last.pt").exists():
        return f"continue with --resume: tlapp {command} --output {shlex.quote(str(run_dir))} --resume"
    return f"{run_dir} stopped before its first checkpoint; the same command starts it again"


class _RunLog:
    """The run's log file beside the console output, removed again when the run ends.

    Library warnings (the ``py.warnings`` logger, see the CLI) go to this file only, and the error that ends
    a run is written here too, so the file tells what happened without the terminal's scrollback.
    """

    def __init__(self, path: Path):
        self.handler = logging.FileHandler(path)
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self.loggers = (log, logging.getLogger("py.warnings"))

    def __enter__(self):
        for logger in self.loggers:
            logger.addHandler(self.handler)
        return self

    def __exit__(self, kind, exc, tb):
        if exc is not None:
            # Straight to the file: the CLI prints the same error on the console once.
            if isinstance(exc, KeyboardInterrupt):
                message, info = f"interrupted ({type(exc).__name__}{f': {exc}' if str(exc) else ''})", None
            elif isinstance(exc, TlappError):
                message, info = f"error: {exc.render()}", None
            else:
                message, info = f"error: {type(exc).__name__}: {exc}", (kind, exc, tb)
            self.handler.handle(log.makeRecord(log.name, logging.ERROR, __file__, 0, message, (), info))
        for logger in self.loggers:
            logger.removeHandler(self.handler)
        self.handler.close()


# ---------------------------------------------------------------- the run

def make_context(plugins: Plugins, job: cfg.JobSpec, run_dir: Path | None = None) -> Context:
    device = resolve_device(job.train.device)
    cache_dir = Path(os.environ.get("TLAPP_CACHE_DIR", Path(".cache") / "tlapp"))
    strategy = plugins.registry.strategies.get_or_fail(job.strategy.name, where="strategy.name")
    init = strategy.forces_init or job.model.init
    return Context(registry=plugins.registry, device=device, cache_dir=cache_dir, log=log, run_dir=run_dir,
                   init=init)


def execute(plugins: Plugins, task: Task, job: cfg.JobSpec, *, resume: bool = False,
            overwrite: bool = False) -> Run:
    resumed = None
    if resume and job.output and (Path(job.output) / "checkpoints" / "last.pt").exists():
        # Changed settings are refused before the run directory is touched.
        resumed = resume_checkpoint(Path(job.output), job)
    run_dir = prepare_directory(job, resume=resume, overwrite=overwrite)
    run: Run | None = None
    # Only an earlier attempt leaves a log in a folder this run does not resume; prepare_directory kept it.
    again = not resume and (run_dir / "train.log").exists()
    with _RunLog(run_dir / "train.log"):
        try:
            if again:
                log.info("starting %s again: its earlier attempt stopped before the first checkpoint", run_dir)
            if not resume:
                job = job.model_copy(update={"output": str(run_dir)})
                checkpoint.atomic_write_text(run_dir / "config.yaml", cfg.to_yaml(job))
            context = make_context(plugins, job, run_dir)
            run = Run(job=job, task=task, directory=run_dir, context=context, plugins=plugins,
                      precision=resolve_precision(job.train.precision, context.device))
            fit(run, resumed)
        except BaseException as exc:
            _record_end(run_dir, job, task, run, exc)
            raise
    assert run is not None  # made before fit, which returned
    return run


def _record_end(run_dir: Path, job: cfg.JobSpec, task: Task, run: Run | None, exc: BaseException) -> None:
    """Make ``metrics.json`` say how the run ended (never "running"), and attach how to carry on."""
    interrupted = isinstance(exc, KeyboardInterrupt)
    metrics = run.metrics if run is not None and run.metrics else _earlier_metrics(run_dir / "metrics.json")
    metrics = metrics or {"plugin": job.plugin, "task": task.name}
    metrics["status"] = "interrupted" if interrupted else "failed"
    metrics["error"] = exc.render() if isinstance(exc, TlappError) else type(exc).__name__
    # A second interruption while this is written leaves the previous metrics.json whole (atomic write).
    checkpoint.atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    if interrupted:
        exc.add_note(continue_hint(run_dir, "pretrain" if job.pretrain.method != "none" else "run"))


def _earlier_metrics(path: Path) -> dict[str, Any]:
    """What an interrupted run recorded, kept when its resumption stops before it has its own."""
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return metrics if isinstance(metrics, dict) else {}


@dataclass
class Prepared:
    """Data, model with transferred weights, its parameter groups, and the strategy to train it with."""

    data: DataBundle
    model: nn.Module
    groups: list
    init_report: Any
    strategy: Strategy
    budget: Budget | None = None  # the full run's, once fit has sized it (what auto's race scales from)


def prepare(run: Run, resume: bool = False) -> Prepared:
    """Seed, build data and model, transfer weights: everything before the first step.

    On ``resume`` the weights come from the run's own checkpoint, so the init source is not read again
    (it may be offline, moved or deleted by now)."""
    job, task, context = run.job, run.task, run.context
    if job.train.num_threads is not None:
        torch.set_num_threads(job.train.num_threads)
    seed_everything(job.train.seed, deterministic=context.device.type == "cpu")
    strategy = strategy_class(run.plugins, job)
    own = method_class(run.plugins, job).build_data(run)
    data = own if own is not None else task.build_data(job, context)
    run.data = data
    if own is None:  # a method's own data is a held-out loss that picks the epoch, not metrics to read
        warn_small_splits(data, job)
        task.evaluator(job, data, context)  # what the metrics need to know of the data (a positive class) fails now
    if job.adapt.target_test:  # read before training, so that a bad target test fails now, not after it
        run.target_test = labelled_data(task, job, context, job.adapt.target_test, data.class_names,
                                        where="adapt.target_test")
    model = task.build_model(job, data.num_outputs, context).to(context.device)
    if job.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    run.model = model
    groups = parameter_groups(model)
    check_groups(model, groups)
    if resume:
        init_report = InitReport(source=context.init)
    else:
        init_report = initialise(model, cast(TransferModel, model).backbone,
                                 context.registry.backbones.get(job.model.backbone), context.init,
                                 allow_empty=job.model.init_allow_empty)
        log.info(init_report.summary())
    return Prepared(data, model, groups, init_report, strategy)


def warn_small_splits(data: DataBundle, job: cfg.JobSpec) -> None:
    """Warn about each evaluation split too small to measure much, and record the warning with the data."""
    for split, dataset in (("val", data.val), ("test", data.test)):
        size = len(cast(Sized, dataset)) if dataset is not None else 0
        if not size:
            continue
        groups = data.groups.get(split)
        warning = small_split_warning(split, size, len(set(groups)) if groups else None, data.group_unit,
                                      min_samples=job.evaluation.min_samples, min_groups=job.evaluation.min_groups)
        if warning is not None:
            log.warning("data: %s", warning)
            data.summary.setdefault("warnings", []).append(warning)


def train_loader(data: DataBundle, job: cfg.JobSpec, generator: torch.Generator,
                 batch_size: int | None = None) -> DataLoader:
    """The shuffled training loader (at ``batch_size``, default ``train.batch_size``); all its randomness
    comes from ``generator``, reseeded every epoch."""
    size = batch_size or job.train.batch_size
    if data.batch_sampler is not None:
        return DataLoader(data.train, batch_sampler=data.batch_sampler(data.train, size, generator),
                          collate_fn=data.collate_fn, num_workers=job.train.num_workers, generator=generator)
    samples = len(cast(Sized, data.train))
    # A last batch of one sample is dropped: batch norm cannot train on it, and a contrastive loss has no negatives.
    return DataLoader(data.train, batch_size=size, collate_fn=data.collate_fn,
                      sampler=RandomSampler(cast(Sized, data.train), generator=generator),
                      num_workers=job.train.num_workers, generator=generator,
                      drop_last=samples > size and samples % size == 1)


def training_budget(job: cfg.JobSpec, data: DataBundle, generator: torch.Generator,
                    resumed: dict[str, Any] | None = None) -> tuple[Budget, DataLoader]:
    """Epochs and batch size for this training set (see ``tlcore.budget``), and the training loader at that
    batch size. A resumed run keeps the budget its checkpoint recorded."""
    samples = len(cast(Sized, data.train))
    recorded = recorded_budget(resumed)
    if recorded is not None:
        budget = resumed_budget(job.train, recorded)
        if samples != budget.train_samples:
            log.warning("the training set has %d samples, the run was planned for %d: it continues with the "
                        "budget it recorded", samples, budget.train_samples)
    else:
        budget = plan_budget(job.train, samples, lambda size: len(train_loader(data, job, generator, size)))
    return budget, train_loader(data, job, generator, budget.batch_size)


def build_method(run: Run, model: nn.Module) -> Method:
    """The job's training method, set up for this model, its extra modules on the run's device."""
    method = method_class(run.plugins, run.job)
    method.setup(run, model)
    trainable = {id(m) for g in method.parameter_groups() for m in g.modules}
    for module in method.modules().values():
        module.to(run.context.device)
        if id(module) not in trainable:
            module.eval().requires_grad_(False)
    return method


@dataclass
class LoopState:
    """Where training stands; saved as ``loop`` in every checkpoint."""

    epoch: int = 0  # epochs completed
    best: float | None = None
    best_epoch: int | None = None
    stale: int = 0  # epochs since the monitored metric last improved
    phase: int = -1  # index of the phase the last completed epoch belonged to


@dataclass
class Loop:
    """What the epochs of a run share: model and method, their groups, optimizer, loaders, caches."""

    run: Run
    model: nn.Module
    method: Method
    groups: list[ParameterGroup]
    state: LoopState
    resumed: dict[str, Any] | None
    scaler: torch.amp.GradScaler | None
    features: FeatureCache
    generator: torch.Generator  # all the training loader's randomness, reseeded every epoch
    batches: DataLoader
    val_batches: DataLoader
    budget: Budget  # epochs and training batch size, resolved for the data
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None
    started: float = field(default_factory=time.perf_counter)  # when this session began
    earlier_seconds: float = 0.0  # wall time of the sessions before a resume
    phases_before: list[Phase] | None = None  # the plan of a resumed run whose epochs grew, as it was

    @property
    def job(self) -> cfg.JobSpec:
        return self.run.job


def fit(run: Run, resumed: dict[str, Any] | None = None) -> None:
    """Train a run: prepare, resume, then per strategy phase an optimizer and per epoch train,
    validate, checkpoint and report; finally evaluate the best weights on the test split."""
    started = time.perf_counter()
    log.info("run %s: plugin %s, task %s, strategy %s, method %s, device %s, precision %s", run.directory,
             run.job.plugin, run.task.name, run.job.strategy.name, chosen_method(run.job)[1], run.context.device,
             run.precision.name)
    if resumed is not None:
        record_resumed_job(run)
    prepared = prepare(run, resume=resumed is not None)
    generator = torch.Generator()
    prepared.budget, batches = training_budget(run.job, prepared.data, generator, resumed)
    run.budget = prepared.budget
    log.info("budget: %s", prepared.budget.summary())
    strategy, choice = prepared.strategy.choose(run, prepared, _recorded_choice(resumed))
    loop = start(run, prepared, strategy, choice, resumed, generator, batches)
    loop.started = started
    if resumed is None and run.job.train.preview_batches:
        shown = write_previews(run.task, run.job, prepared.data, run.context, batches, generator, run.directory,
                               run.job.train.preview_batches)
        if shown:
            log.info("what training sees: %s", ", ".join(p.name for p in shown))
    run.plugins.hook.on_run_start(run=run)
    phases = [] if _stopped_early(loop) else plan_phases(strategy, loop.groups, loop.budget.epochs)
    for index, phase in enumerate(phases):
        if phase.end <= loop.state.epoch:
            continue  # finished before an interruption
        start_phase(loop, index, phase)
        for epoch in range(max(phase.start, loop.state.epoch), phase.end):
            if not train_epoch(loop, index, phase, epoch):
                break
        else:
            continue
        break  # early stopping
    run.metrics.update(finish(run, loop.model, prepared.data))
    run.metrics.update(loop.method.report(run, loop.model, prepared.data))
    run.metrics["status"] = "completed"
    run.metrics["wall_seconds"] = _wall_seconds(loop)
    prepared.strategy.review(run, run.metrics.get("strategy_choice"))
    run.write_metrics()
    run.plugins.hook.on_run_end(run=run, metrics=run.metrics)


def _recorded_choice(resumed: dict[str, Any] | None) -> dict[str, Any] | None:
    return resumed["metrics"].get("strategy_choice") if resumed is not None else None


def start(run: Run, prepared: Prepared, strategy: Strategy, choice: dict[str, Any] | None,
          resumed: dict[str, Any] | None, generator: torch.Generator, batches: DataLoader) -> Loop:
    """The loop before its first epoch: method set up, metrics begun, or both restored from ``last.pt``."""
    job, data, model, budget = run.job, prepared.data, prepared.model, prepared.budget
    assert budget is not None  # fit sized it
    method = build_method(run, model)
    run.method = method
    groups = prepared.groups + method.parameter_groups()
    check_groups(model, groups)
    run.metrics = {
        "plugin": job.plugin, "task": run.task.name, "status": "running",
        "strategy": strategy.name, "strategy_options": strategy.options.model_dump(),
        "method": {"name": method.name, "section": method.section, "options": method.options.model_dump()},
        "init": prepared.init_report.as_dict(), "device": str(run.context.device), "precision": run.precision.name,
        "seed": job.train.seed, "epochs": 0, "budget": budget.as_dict(), "monitor": job.train.monitor,
        "data": data.summary, "class_names": data.class_names, "phases": [], "history": [],
        **({"strategy_choice": choice} if choice is not None else {}),
    }
    features = FeatureCache(model, {"train": data.train, "val": data.val}, job.train.batch_size, data.collate_fn,
                            job.train.num_workers, run.precision, run.context.device)
    scaler = torch.amp.GradScaler(run.context.device.type) if run.precision.needs_scaler else None
    val_batches = DataLoader(data.val, batch_size=job.train.batch_size, shuffle=False, collate_fn=data.collate_fn,
                             num_workers=job.train.num_workers)
    loop = Loop(run, model, method, groups, LoopState(), resumed, scaler, features, generator, batches, val_batches,
                budget)
    if resumed is not None:
        # First, so that a failure below leaves metrics.json with the run's history.
        run.metrics = resumed_metrics(run.directory, resumed["metrics"])
        try:
            model.load_state_dict(resumed["model"])
        except RuntimeError as exc:
            raise ConfigError(f"{run.checkpoints / 'last.pt'} does not fit this run's model: "
                              f"{str(exc).strip().splitlines()[0]}", where=str(run.directory),
                              fix="resume with the tlapp version and plugins that wrote the run, or start it again "
                                  "with --overwrite") from None
        method.load_state_dict(resumed.get("method", {}))
        loop.state = LoopState(**resumed["loop"])
        loop.earlier_seconds = float(run.metrics.get("wall_seconds", 0.0))
        recorded = recorded_budget(resumed)
        epochs_before = recorded["epochs"] if recorded is not None else resumed["job"]["train"]["epochs"]
        if epochs_before != budget.epochs:
            loop.phases_before = plan_phases(strategy, groups, epochs_before)
            log.info("resuming with %d epochs instead of %d", budget.epochs, epochs_before)
        run.metrics["budget"] = budget.as_dict()
        log.info("resuming after epoch %d", loop.state.epoch)
    return loop


def _wall_seconds(loop: Loop) -> float:
    return loop.earlier_seconds + (time.perf_counter() - loop.started)


def _stopped_early(loop: Loop) -> bool:
    """A resumed run that early stopping ended: more epochs would not change that verdict."""
    patience = loop.job.train.early_stopping.patience
    stopped = loop.resumed is not None and patience is not None and loop.state.stale >= patience
    if stopped:
        log.info("nothing to train: early stopping ended this run after epoch %d", loop.state.epoch)
    return stopped


def _restore_phase(loop: Loop, index: int, phase: Phase, resumed: dict[str, Any]) -> None:
    """Optimizer, schedule and scaler of the phase the run stopped in.

    When more epochs lengthened that phase, the schedule is rebuilt for the new length and advanced by the
    steps already taken, and the optimizer keeps its per-parameter state (moments): the remaining epochs
    follow the schedule of a phase planned that long, while the epochs before followed the shorter one.
    """
    assert loop.optimizer is not None  # start_phase made it
    before = loop.phases_before[index] if loop.phases_before is not None and index < len(loop.phases_before) else phase
    if before == phase:
        loop.optimizer.load_state_dict(resumed["optimizer"])
        loop.scheduler.load_state_dict(resumed["scheduler"])
    elif (before.start, before.lr_mult, before.train_bn) == (phase.start, phase.lr_mult, phase.train_bn):
        with warnings.catch_warnings():  # stepping the schedule without optimizer steps is the point here
            warnings.simplefilter("ignore")
            for _ in range(int(resumed["scheduler"]["last_epoch"])):
                loop.scheduler.step()
        current = loop.optimizer.state_dict()["param_groups"]
        loop.optimizer.load_state_dict({"state": resumed["optimizer"]["state"], "param_groups": current})
        for entry in loop.run.metrics["phases"]:
            if entry["phase"] == index:
                entry["end_epoch"] = phase.end
        log.info("phase %d now ends after epoch %d: its schedule continues as planned for that length",
                 index, phase.end)
    else:
        log.warning("with %d epochs the strategy plans phase %d differently; it starts with a fresh "
                    "optimizer", loop.budget.epochs, index)
        return
    if loop.scaler is not None and resumed.get("scaler"):
        loop.scaler.load_state_dict(resumed["scaler"])


def start_phase(loop: Loop, index: int, phase: Phase) -> None:
    """Freeze and unfreeze per the phase, build its optimizer and schedule, prove they match, log the table."""
    table = begin_phase(loop, phase)
    log.info("phase %d (epochs %d-%d):\n%s", index, phase.start + 1, phase.end, format_table(table))
    resumed = loop.resumed
    if resumed is not None and resumed["loop"]["phase"] == index:
        _restore_phase(loop, index, phase, resumed)
    elif not any(p["phase"] == index for p in loop.run.metrics["phases"]):
        loop.run.metrics["phases"].append({"phase": index, "start_epoch": phase.start + 1, "end_epoch": phase.end,
                                           "groups": table})
    if resumed is not None:
        # The random state of the moment the interrupted run stopped: the next epoch draws as it would have.
        checkpoint.restore_rng(resumed["rng"])
        loop.resumed = None


def begin_phase(loop: Loop, phase: Phase) -> list[dict[str, Any]]:
    """Freeze and unfreeze per the phase, build its optimizer and schedule, prove they match; the table of
    groups and rates. Cached features a phase training the backbone makes stale are dropped."""
    job, model, groups = loop.job, loop.model, loop.groups
    apply_phase(model, groups, phase)
    loop.optimizer = make_optimizer(optimizer_groups(groups, phase, job.train.lr), job.train)
    loop.scheduler = make_scheduler(loop.optimizer, job.train,
                                    math.ceil(len(loop.batches) / job.train.grad_accum) * (phase.end - phase.start))
    table = verify_phase(model, groups, phase, loop.optimizer, job.train.lr)
    loop.features.for_phase(_cache_decision(loop, phase)[0])
    return table


def _cache_decision(loop: Loop, phase: Phase) -> tuple[bool, str]:
    job = loop.job
    return cache_decision(loop.model, loop.groups, phase, job.augment, job.train.feature_cache,
                          loop.method.supports_feature_cache)


def train_and_validate(loop: Loop, phase: Phase, epoch: int, description: str) -> tuple[dict[str, Any],
                                                                                     dict[str, Any]]:
    """Train one epoch of ``phase`` (on cached features where the phase allows) and validate: the epoch's
    training statistics and validation metrics, which hold ``train.monitor``. A multi-task job's metrics come
    spread out as ``<task>.<metric>`` (``finding.auroc``), so a monitor and the history name them that way."""
    run, job, model = loop.run, loop.job, loop.model
    data, optimizer = run.built_data, loop.optimizer
    assert optimizer is not None  # begin_phase made it
    use_cache, why = _cache_decision(loop, phase)
    if use_cache and loop.features.features is None:
        log.info("training the head on cached backbone features (%s)", why)
    loop.generator.manual_seed(epoch_seed(job.train.seed, epoch))
    data.set_epoch(epoch)
    set_train_mode(model, loop.groups, phase)
    if use_cache:
        cached = loop.features.get()
        stepped: nn.Module = HeadOnly(cast(BackboneHeadModel, model))
        batches = DataLoader(cached["train"], batch_size=loop.budget.batch_size,
                             sampler=RandomSampler(cached["train"], generator=loop.generator), generator=loop.generator)
        val_batches = DataLoader(cached["val"], batch_size=job.train.batch_size)
    else:
        stepped, batches, val_batches = model, loop.batches, loop.val_batches
    streams = ExtraStreams(loop.method.extra_loaders(epoch), run.context.device, job.train.channels_last)
    stats: dict[str, Any] = train_one_epoch(
        stepped, lambda m, batch: loop.method.loss(m, batch, streams.draw()), batches, optimizer, loop.scheduler,
        loop.scaler, run.precision, run.context.device, grad_accum=job.train.grad_accum,
        clip_grad_norm=job.train.clip_grad_norm, channels_last=job.train.channels_last, on_step=loop.method.on_step,
        description=description)
    stats["feature_cache"] = use_cache
    measured = loop.method.epoch_summary()
    if measured:
        stats[loop.method.section] = measured
    val = flatten_tasks(evaluate(stepped, run.evaluator(data), val_batches, run.precision, run.context.device,
                                 job.train.channels_last))
    if job.train.monitor not in val:
        raise ConfigError(f"train.monitor {job.train.monitor!r} is not a validation metric",
                          fix=f"choose one of: {', '.join(k for k, v in val.items() if _scalar(v))}")
    return stats, val


def train_epoch(loop: Loop, index: int, phase: Phase, epoch: int) -> bool:
    """One epoch: train, validate, checkpoint, report. False when early stopping ends the run."""
    run, job, model, state = loop.run, loop.job, loop.model, loop.state
    stats, val = train_and_validate(loop, phase, epoch, f"epoch {epoch + 1}/{loop.budget.epochs}")
    monitored = val[job.train.monitor]
    logs = {"epoch": epoch + 1, "phase": index, **stats, "val": {k: v for k, v in val.items() if _scalar(v)}}
    run.metrics["history"].append(logs)
    run.metrics["epochs"] = epoch + 1
    improved = is_improvement(monitored, state.best, job.train.monitor_mode, job.train.early_stopping.min_delta)
    if improved:
        state.best, state.best_epoch, state.stale = monitored, epoch + 1, 0
        checkpoint.save(run.checkpoints / "best.pt", _model_state(run, model, epoch + 1, monitored))
    else:
        state.stale += 1
    state.epoch, state.phase = epoch + 1, index
    run.metrics["best_epoch"] = state.best_epoch
    save_last(loop, epoch + 1, monitored)
    run.write_metrics()
    log.info("epoch %d/%d: train_loss %.4f, val %s %.4g%s, %.1f samples/s%s", epoch + 1, loop.budget.epochs,
             stats["train_loss"], job.train.monitor, monitored, _task_values(val, job.train.monitor),
             stats["samples_per_second"], " (best)" if improved else "")
    run.plugins.hook.on_epoch_end(run=run, epoch=epoch + 1, logs=logs)
    patience = job.train.early_stopping.patience
    if patience is not None and state.stale >= patience:
        log.info("early stopping: %s did not improve for %d epochs", job.train.monitor, patience)
        run.metrics["early_stopped"] = True
        return False
    return True


def _task_values(val: dict[str, Any], monitor: str) -> str:
    """For a multi-task run monitoring a mean over tasks, each task's value of it (`` (label 0.91, urgency
    0.78)``) for the epoch's line; empty otherwise."""
    tasks = val.get("tasks")
    if not isinstance(tasks, list) or "." in monitor:
        return ""
    found = [(t, val.get(f"{t}.{monitor}")) for t in tasks]
    shown = [f"{t} {v:.4g}" if _scalar(v) else f"{t} n/a" for t, v in found]
    return f" ({', '.join(shown)})"


def save_last(loop: Loop, epoch: int, monitored: Any) -> None:
    """``last.pt``: everything ``--resume`` needs to continue exactly as an uninterrupted run would."""
    assert loop.optimizer is not None  # start_phase made it
    loop.run.metrics["wall_seconds"] = _wall_seconds(loop)
    checkpoint.save(loop.run.checkpoints / "last.pt", {
        **_model_state(loop.run, loop.model, epoch, monitored),
        "optimizer": loop.optimizer.state_dict(), "scheduler": loop.scheduler.state_dict(),
        "scaler": loop.scaler.state_dict() if loop.scaler is not None else None,
        "method": loop.method.state_dict(), "loop": asdict(loop.state), "rng": checkpoint.rng_state(),
        "metrics": loop.run.metrics, "job": loop.job.model_dump(mode="json"), "budget": loop.budget.as_dict(),
    })


def finish(run: Run, model: nn.Module, data: DataBundle) -> dict[str, Any]:
    """Evaluate the best weights on the test split (the validation split when there is none)."""
    best = run.checkpoints / "best.pt"
    if best.exists():
        saved = checkpoint.load(best)
        model.load_state_dict(saved["model"])
        if run.method is not None and "method" in saved:
            run.method.load_state_dict(saved["method"])
    else:  # e.g. an AUROC on validation splits that never hold both classes
        log.warning("train.monitor %r was undefined on every validation epoch, so no best weights were chosen: "
                    "evaluating the last weights; monitor a metric the validation split defines (e.g. loss)",
                    run.job.train.monitor)
    split, metrics, boot = evaluate_final(run.task, run.job, data, model, run.context, run.precision,
                                          run.evaluator(data))
    if split == "val" and not (run.method is not None and run.method.self_supervised):
        log.warning("there is no test split: the final metrics are on the validation split, which also picked "
                    "the best epoch, so they flatter the model")
    if boot is not None:
        boot.save(run.directory / RESAMPLES_FILE)
    log.info("%s metrics: %s", split, shown(metrics))
    out = {"evaluated_on": split, "evaluated_weights": "best" if best.exists() else "last", "metrics": metrics}
    if run.target_test is not None:
        _, target_metrics, target_boot = evaluate_final(run.task, run.job, run.target_test, model, run.context,
                                                        run.precision)
        if target_boot is not None:
            target_boot.save(run.directory / TARGET_RESAMPLES_FILE)
        log.info("target test metrics (%s): %s", run.job.adapt.target_test, shown(target_metrics))
        out["target_test"] = {"data": run.job.adapt.target_test,
                              "samples": len(cast(Sized, run.target_test.evaluation_split()[1])),
                              "summary": run.target_test.summary, "metrics": target_metrics}
    return out


def labelled_data(task: Task, job: cfg.JobSpec, context: Context, path: str, class_names: Any,
                  where: str) -> DataBundle:
    """Every labelled sample at ``path`` in the task's own format, as the test split of a bundle (how ``tlapp
    evaluate --data`` and ``adapt.target_test`` read data that did not train the model); its classes must be
    the run's ``class_names``. The task reads it without the run directory, so that what it records of its
    training data there (skipped files) stays as it is."""
    reading = replace(context, run_dir=None, class_names=class_names)
    bundle = task.build_data(job.model_copy(update={"data": job.data.model_copy(update={"path": path})}), reading,
                             for_training=False)
    if _as_lists(bundle.class_names) != _as_lists(class_names):
        raise DataError(f"classes of the data {bundle.class_names} differ from the run's {class_names}",
                        where=f"{where}: {path}", fix="evaluate on data labelled with the run's classes")
    return bundle


def _as_lists(class_names: Any) -> Any:
    """Class names as compared between a run and data: a list, or per task a list (multi-task)."""
    return {k: list(v) for k, v in class_names.items()} if isinstance(class_names, dict) else list(class_names)


def evaluate_final(task: Task, job: cfg.JobSpec, data: DataBundle, model: nn.Module, context: Context,
                   precision: Precision, evaluator: Evaluator | None = None) -> tuple[str, dict[str, Any],
                                                                                      Bootstrap | None]:
    """The metrics of the test split (the validation split when there is none) with their bootstrap
    intervals: which split, the metrics, and the resamples behind the intervals. ``evaluator``: the task's
    when not given."""
    split, dataset = data.evaluation_split()
    loader = DataLoader(dataset, batch_size=job.train.batch_size, shuffle=False, collate_fn=data.collate_fn,
                        num_workers=job.train.num_workers)
    evaluator = evaluator or task.evaluator(job, data, context)
    metrics = evaluate(model, evaluator, loader, precision, context.device, job.train.channels_last)
    metrics, boot = add_intervals(metrics, evaluator, data.groups.get(split), len(cast(Sized, dataset)),
                                  data.group_unit, job.evaluation)
    return split, metrics, boot


def _model_state(run: Run, model: nn.Module, epoch: int, value: Any) -> dict[str, Any]:
    state = {"model": model.state_dict(), "epoch": epoch, "monitor": run.job.train.monitor,
             "value": value, "class_names": run.built_data.class_names, "num_outputs": run.built_data.num_outputs}
    if run.method is not None and run.method.self_supervised:
        # The pretext loss of the best epoch needs that epoch's projection head too.
        state.update({HANDS_ON: backbone_prefix(model), "method": run.method.state_dict()})
    return state


def _scalar(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# ---------------------------------------------------------------- using a finished run

def load_run(plugins: Plugins, run_dir: Path, overrides: dict[str, Any] | None = None):
    """Rebuild a finished run's task, job, model (best weights) and class names."""
    path = run_dir / "config.yaml"
    if not path.exists():
        raise ConfigError(f"{run_dir} is not a tlapp run directory (no config.yaml)",
                          fix="pass the --output folder of an earlier `tlapp run`")
    saved = cfg.read_yaml(path)
    pretrained = (saved.get("pretrain") or {}).get("method", "none")
    if pretrained != "none":
        raise ConfigError(f"{run_dir} is a self-supervised pretraining run ({pretrained}): it trained a backbone, "
                          "not a model to evaluate or predict with", where=str(run_dir),
                          fix=f"fine-tune from it: tlapp run --plugin {saved.get('plugin')} --init run:{run_dir}")
    task, job = resolve_job(plugins, plugin=saved.get("plugin"), config_file=None, overrides=overrides or {},
                            base=saved)
    context = make_context(plugins, job, run_dir)
    ckpt_path = next((p for p in (run_dir / "checkpoints" / "best.pt", run_dir / "checkpoints" / "last.pt")
                      if p.exists()), None)
    if ckpt_path is None:
        raise ConfigError(f"run {run_dir} has no checkpoint", fix="train it first with `tlapp run`")
    state = checkpoint.load(ckpt_path)
    model = task.build_model(job, state["num_outputs"], context)
    model.load_state_dict(state["model"])
    model.to(context.device).eval()
    precision = resolve_precision(job.train.precision, context.device)
    return task, job, model, state["class_names"], context, precision
