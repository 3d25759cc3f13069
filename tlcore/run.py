"""One training run, from job spec to ``metrics.json``: the sequence ``tlapp run`` follows.

resolve the job -> prepare the run directory -> build data and model -> transfer
weights -> for each strategy phase: apply, verify, train epochs (checkpointing)
-> evaluate the best weights -> write metrics.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from collections.abc import Sized
from typing import Any, cast

import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from . import checkpoint, config as cfg
from .directories import prepare_output
from .device import Precision, resolve_device, resolve_precision
from .engine import evaluate, is_improvement, train_one_epoch
from .errors import ConfigError, TlappError
from .features import FeatureCache, HeadOnly, cache_decision
from .methods import ExtraStreams, Method
from .plugins import Plugins
from .schedule import make_optimizer, make_scheduler
from .seeding import seed_everything
from .registry import ParameterGroup
from .strategies import (Phase, Strategy, apply_phase, check_groups, format_table, optimizer_groups, plan_phases,
                         set_train_mode, verify_phase)
from .task import BackboneHeadModel, Context, DataBundle, Task, TransferModel, parameter_groups
from .transfer import initialise, parse_init

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
                base: dict[str, Any] | None = None) -> tuple[Task, cfg.JobSpec]:
    """Merge recipe < earlier run's architecture (for run: inits) < base < file < flags < --set, then validate."""
    user: dict[str, Any] = cfg.merge(base or {}, cfg.read_yaml(config_file) if config_file else {})
    user = cfg.merge(user, overrides)
    user = cfg.merge(user, cfg.parse_set(list(sets)))
    plugin = plugin or user.get("plugin")
    if not plugin:
        raise ConfigError("no plugin given", fix="pass --plugin NAME or set `plugin:` in the config file")
    if user.get("plugin") not in (None, plugin):
        raise ConfigError(f"--plugin {plugin} disagrees with the config file's plugin {user['plugin']!r}")
    task = find_task(plugins, plugin, user.get("task"))
    raw = cfg.merge(task.recipe, {"plugin": plugin, "task": task.name})
    init = user.get("model", {}).get("init", raw.get("model", {}).get("init", "imagenet"))
    if isinstance(init, str) and (parsed := parse_init(init))[0] == "run" and parsed[1] is not None:
        raw = cfg.merge(raw, {"model": source_architecture(Path(parsed[1]))})
    if user.get("strategy", {}).get("name", raw.get("strategy", {}).get("name")) != raw.get("strategy", {}).get("name"):
        # Another strategy than the recipe's: the recipe's options were meant for its own strategy.
        raw["strategy"] = {}
    raw = cfg.merge(raw, user)
    spec_cls = cfg.job_model(task.DataOptions, task.ModelOptions)
    job = cfg.validate(spec_cls, raw, source=config_file or "job spec")
    strategy_class(plugins, job)  # unknown strategies, methods and options fail here, before any data is read
    method_class(plugins, job)
    return task, job


def source_architecture(run_dir: Path) -> dict[str, Any]:
    """The model section of an earlier run (structure transfer), without its own init."""
    path = run_dir / "config.yaml"
    if not path.exists():
        raise ConfigError(f"{run_dir} is not a tlapp run directory (no config.yaml)", where="model.init",
                          fix="use run:DIR with the output folder of an earlier `tlapp run`")
    model = dict(cfg.read_yaml(path).get("model", {}))
    model.pop("init", None)
    return model


def method_class(plugins: Plugins, job: cfg.JobSpec) -> Method:
    cls = plugins.registry.methods.get_or_fail(job.method.name, where="method.name")
    options = {k: v for k, v in job.method.model_dump().items() if k != "name"}
    return cls.from_spec(options)


def strategy_class(plugins: Plugins, job: cfg.JobSpec) -> Strategy:
    cls = plugins.registry.strategies.get_or_fail(job.strategy.name, where="strategy.name")
    options = {k: v for k, v in job.strategy.model_dump().items() if k != "name"}
    return cls.from_spec(options)


# ---------------------------------------------------------------- run directory

def prepare_directory(job: cfg.JobSpec, *, resume: bool, overwrite: bool) -> Path:
    out = Path(job.output) if job.output else Path("runs") / f"{job.plugin}-{datetime.now():%Y%m%d-%H%M%S}"
    if resume:
        if not (out / "checkpoints" / "last.pt").exists():
            raise ConfigError(f"nothing to resume in {out}: no checkpoints/last.pt",
                              fix="check --output, or start a new run without --resume")
        return out
    prepare_output(out, "run", overwrite=overwrite, protected=(getattr(job.data, "path", None), Path.cwd()))
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    return out


class _RunLog:
    """The run's log file beside the console output, removed again when the run ends."""

    def __init__(self, path: Path):
        self.handler = logging.FileHandler(path)
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))

    def __enter__(self):
        log.addHandler(self.handler)
        return self

    def __exit__(self, *exc):
        log.removeHandler(self.handler)
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
    run_dir = prepare_directory(job, resume=resume, overwrite=overwrite)
    if not resume:
        job = job.model_copy(update={"output": str(run_dir)})
        checkpoint.atomic_write_text(run_dir / "config.yaml", cfg.to_yaml(job))
    context = make_context(plugins, job, run_dir)
    run = Run(job=job, task=task, directory=run_dir, context=context, plugins=plugins,
              precision=resolve_precision(job.train.precision, context.device))
    with _RunLog(run_dir / "train.log"):
        try:
            fit(run, resume)
        except BaseException as exc:
            if run.metrics:
                run.metrics["status"] = "failed" if isinstance(exc, Exception) else "interrupted"
                run.metrics["error"] = exc.render() if isinstance(exc, TlappError) else f"{type(exc).__name__}"
                run.write_metrics()
            raise
    return run


@dataclass
class Prepared:
    """Data, model with transferred weights, its parameter groups, and the strategy to train it with."""

    data: DataBundle
    model: nn.Module
    groups: list
    init_report: Any
    strategy: Strategy


def prepare(run: Run) -> Prepared:
    """Seed, build data and model, transfer weights: everything before the first step."""
    job, task, context = run.job, run.task, run.context
    if job.train.num_threads is not None:
        torch.set_num_threads(job.train.num_threads)
    seed_everything(job.train.seed, deterministic=context.device.type == "cpu")
    strategy = strategy_class(run.plugins, job)
    data = task.build_data(job, context)
    run.data = data
    model = task.build_model(job, data.num_outputs, context).to(context.device)
    if job.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    run.model = model
    groups = parameter_groups(model)
    check_groups(model, groups)
    init_report = initialise(model, cast(TransferModel, model).backbone,
                             context.registry.backbones.get(job.model.backbone), context.init)
    log.info(init_report.summary())
    return Prepared(data, model, groups, init_report, strategy)


def train_loader(data: DataBundle, job: cfg.JobSpec, generator: torch.Generator) -> DataLoader:
    """The shuffled training loader; all its randomness comes from ``generator``, reseeded every epoch."""
    if data.batch_sampler is not None:
        return DataLoader(data.train, batch_sampler=data.batch_sampler(data.train, job.train.batch_size, generator),
                          collate_fn=data.collate_fn, num_workers=job.train.num_workers, generator=generator)
    return DataLoader(data.train, batch_size=job.train.batch_size, collate_fn=data.collate_fn,
                      sampler=RandomSampler(cast(Sized, data.train), generator=generator),
                      num_workers=job.train.num_workers, generator=generator)


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
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None

    @property
    def job(self) -> cfg.JobSpec:
        return self.run.job


def fit(run: Run, resume: bool) -> None:
    """Train a run: prepare, resume, then per strategy phase an optimizer and per epoch train,
    validate, checkpoint and report; finally evaluate the best weights on the test split."""
    started = time.perf_counter()
    log.info("run %s: plugin %s, task %s, strategy %s, method %s, device %s, precision %s", run.directory,
             run.job.plugin, run.task.name, run.job.strategy.name, run.job.method.name, run.context.device,
             run.precision.name)
    prepared = prepare(run)
    resumed = checkpoint.load(run.checkpoints / "last.pt") if resume else None
    strategy, choice = prepared.strategy.choose(run, prepared, _recorded_choice(resumed))
    loop = start(run, prepared, strategy, choice, resumed)
    run.plugins.hook.on_run_start(run=run)
    for index, phase in enumerate(plan_phases(strategy, loop.groups, run.job.train.epochs)):
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
    run.metrics["status"] = "completed"
    run.metrics["wall_seconds"] = run.metrics.get("wall_seconds", 0.0) + (time.perf_counter() - started)
    run.write_metrics()
    run.plugins.hook.on_run_end(run=run, metrics=run.metrics)


def _recorded_choice(resumed: dict[str, Any] | None) -> dict[str, Any] | None:
    return resumed["metrics"].get("strategy_choice") if resumed is not None else None


def start(run: Run, prepared: Prepared, strategy: Strategy, choice: dict[str, Any] | None,
          resumed: dict[str, Any] | None) -> Loop:
    """The loop before its first epoch: method set up, metrics begun, or both restored from ``last.pt``."""
    job, data, model = run.job, prepared.data, prepared.model
    method = build_method(run, model)
    groups = prepared.groups + method.parameter_groups()
    check_groups(model, groups)
    run.metrics = {
        "plugin": job.plugin, "task": run.task.name, "status": "running",
        "strategy": strategy.name, "strategy_options": strategy.options.model_dump(),
        "method": {"name": method.name, "options": method.options.model_dump()},
        "init": prepared.init_report.as_dict(), "device": str(run.context.device), "precision": run.precision.name,
        "seed": job.train.seed, "epochs": 0, "monitor": job.train.monitor,
        "data": data.summary, "class_names": data.class_names, "phases": [], "history": [],
        **({"strategy_choice": choice} if choice is not None else {}),
    }
    features = FeatureCache(model, {"train": data.train, "val": data.val}, job.train.batch_size, data.collate_fn,
                            job.train.num_workers, run.precision, run.context.device)
    scaler = torch.amp.GradScaler(run.context.device.type) if run.precision.needs_scaler else None
    generator = torch.Generator()
    val_batches = DataLoader(data.val, batch_size=job.train.batch_size, shuffle=False, collate_fn=data.collate_fn,
                             num_workers=job.train.num_workers)
    loop = Loop(run, model, method, groups, LoopState(), resumed, scaler, features, generator,
                train_loader(data, job, generator), val_batches)
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        method.load_state_dict(resumed.get("method", {}))
        loop.state = LoopState(**resumed["loop"])
        run.metrics = resumed["metrics"]
        run.metrics["status"] = "running"
        log.info("resuming after epoch %d", loop.state.epoch)
    return loop


def start_phase(loop: Loop, index: int, phase: Phase) -> None:
    """Freeze and unfreeze per the phase, build its optimizer and schedule, prove they match, log the table."""
    job, model, groups = loop.job, loop.model, loop.groups
    apply_phase(model, groups, phase)
    loop.optimizer = make_optimizer(optimizer_groups(groups, phase, job.train.lr), job.train)
    loop.scheduler = make_scheduler(loop.optimizer, job.train,
                                    math.ceil(len(loop.batches) / job.train.grad_accum) * (phase.end - phase.start))
    table = verify_phase(model, groups, phase, loop.optimizer, job.train.lr)
    log.info("phase %d (epochs %d-%d):\n%s", index, phase.start + 1, phase.end, format_table(table))
    resumed = loop.resumed
    if resumed is not None and resumed["loop"]["phase"] == index:
        loop.optimizer.load_state_dict(resumed["optimizer"])
        loop.scheduler.load_state_dict(resumed["scheduler"])
        if loop.scaler is not None and resumed.get("scaler"):
            loop.scaler.load_state_dict(resumed["scaler"])
    elif not any(p["phase"] == index for p in loop.run.metrics["phases"]):
        loop.run.metrics["phases"].append({"phase": index, "start_epoch": phase.start + 1, "end_epoch": phase.end,
                                           "groups": table})
    if resumed is not None:
        # The random state of the moment the interrupted run stopped: the next epoch draws as it would have.
        checkpoint.restore_rng(resumed["rng"])
        loop.resumed = None
    use_cache, _ = _cache_decision(loop, phase)
    loop.features.for_phase(use_cache)


def _cache_decision(loop: Loop, phase: Phase) -> tuple[bool, str]:
    job = loop.job
    return cache_decision(loop.model, loop.groups, phase, job.augment, job.train.feature_cache,
                          loop.method.supports_feature_cache)


def train_epoch(loop: Loop, index: int, phase: Phase, epoch: int) -> bool:
    """One epoch: train, validate, checkpoint, report. False when early stopping ends the run."""
    run, job, model, state = loop.run, loop.job, loop.model, loop.state
    data, optimizer = run.built_data, loop.optimizer
    assert optimizer is not None  # start_phase made it
    use_cache, why = _cache_decision(loop, phase)
    if use_cache and loop.features.features is None:
        log.info("training the head on cached backbone features (%s)", why)
    loop.generator.manual_seed(job.train.seed * 100_003 + epoch)
    data.set_epoch(epoch)
    set_train_mode(model, loop.groups, phase)
    if use_cache:
        cached = loop.features.get()
        stepped: nn.Module = HeadOnly(cast(BackboneHeadModel, model))
        batches = DataLoader(cached["train"], batch_size=job.train.batch_size,
                             sampler=RandomSampler(cached["train"], generator=loop.generator), generator=loop.generator)
        val_batches = DataLoader(cached["val"], batch_size=job.train.batch_size)
    else:
        stepped, batches, val_batches = model, loop.batches, loop.val_batches
    streams = ExtraStreams(loop.method.extra_loaders(epoch), run.context.device, job.train.channels_last)
    stats = train_one_epoch(stepped, lambda m, batch: loop.method.loss(m, batch, streams.draw()), batches,
                            optimizer, loop.scheduler, loop.scaler, run.precision, run.context.device,
                            grad_accum=job.train.grad_accum, clip_grad_norm=job.train.clip_grad_norm,
                            channels_last=job.train.channels_last, on_step=loop.method.on_step,
                            description=f"epoch {epoch + 1}/{job.train.epochs}")
    stats["feature_cache"] = use_cache
    val = evaluate(stepped, run.task.evaluator(job, data, run.context), val_batches, run.precision,
                   run.context.device, job.train.channels_last)
    if job.train.monitor not in val:
        raise ConfigError(f"train.monitor {job.train.monitor!r} is not a validation metric",
                          fix=f"choose one of: {', '.join(k for k, v in val.items() if _scalar(v))}")
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
    log.info("epoch %d/%d: train_loss %.4f, val %s %.4g, %.1f samples/s%s", epoch + 1, job.train.epochs,
             stats["train_loss"], job.train.monitor, monitored, stats["samples_per_second"],
             " (best)" if improved else "")
    run.plugins.hook.on_epoch_end(run=run, epoch=epoch + 1, logs=logs)
    patience = job.train.early_stopping.patience
    if patience is not None and state.stale >= patience:
        log.info("early stopping: %s did not improve for %d epochs", job.train.monitor, patience)
        run.metrics["early_stopped"] = True
        return False
    return True


def save_last(loop: Loop, epoch: int, monitored: Any) -> None:
    """``last.pt``: everything ``--resume`` needs to continue exactly as an uninterrupted run would."""
    assert loop.optimizer is not None  # start_phase made it
    checkpoint.save(loop.run.checkpoints / "last.pt", {
        **_model_state(loop.run, loop.model, epoch, monitored),
        "optimizer": loop.optimizer.state_dict(), "scheduler": loop.scheduler.state_dict(),
        "scaler": loop.scaler.state_dict() if loop.scaler is not None else None,
        "method": loop.method.state_dict(), "loop": asdict(loop.state), "rng": checkpoint.rng_state(),
        "metrics": loop.run.metrics,
    })


def finish(run: Run, model: nn.Module, data: DataBundle) -> dict[str, Any]:
    """Evaluate the best weights on the test split (the validation split when there is none)."""
    best = run.checkpoints / "best.pt"
    if best.exists():
        model.load_state_dict(checkpoint.load(best)["model"])
    test = data.test
    split, dataset = ("test", test) if test is not None and len(cast(Sized, test)) else ("val", data.val)
    loader = DataLoader(dataset, batch_size=run.job.train.batch_size, shuffle=False, collate_fn=data.collate_fn,
                        num_workers=run.job.train.num_workers)
    metrics = evaluate(model, run.task.evaluator(run.job, data, run.context), loader, run.precision,
                       run.context.device, run.job.train.channels_last)
    log.info("%s metrics: %s", split, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if _scalar(v)))
    return {"evaluated_on": split, "metrics": metrics}


def _model_state(run: Run, model: nn.Module, epoch: int, value: Any) -> dict[str, Any]:
    return {"model": model.state_dict(), "epoch": epoch, "monitor": run.job.train.monitor,
            "value": value, "class_names": run.built_data.class_names, "num_outputs": run.built_data.num_outputs}


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
    task, job = resolve_job(plugins, plugin=saved.get("plugin"), config_file=None,
                            overrides=cfg.merge(saved, overrides or {}))
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
