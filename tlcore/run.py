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
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from . import checkpoint, config as cfg
from .directories import prepare_output
from .device import Precision, resolve_device, resolve_precision
from .engine import evaluate, is_improvement, train_one_epoch
from .errors import ConfigError, TlappError
from .features import HeadOnly, cache_decision, extract_features
from .plugins import Plugins
from .schedule import make_optimizer, make_scheduler
from .seeding import seed_everything
from .strategies import (Strategy, apply_phase, check_groups, format_table, optimizer_groups, phase_at,
                         plan_phases, set_train_mode, verify_phase)
from .task import Context, DataBundle, Task, parameter_groups
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
    if isinstance(init, str) and parse_init(init)[0] == "run":
        raw = cfg.merge(raw, {"model": source_architecture(Path(parse_init(init)[1]))})
    if user.get("strategy", {}).get("name", raw.get("strategy", {}).get("name")) != raw.get("strategy", {}).get("name"):
        # Another strategy than the recipe's: the recipe's options were meant for its own strategy.
        raw["strategy"] = {}
    raw = cfg.merge(raw, user)
    spec_cls = cfg.job_model(task.DataOptions, task.ModelOptions)
    job = cfg.validate(spec_cls, raw, source=config_file or "job spec")
    strategy_class(plugins, job)  # unknown strategies and options fail here, before any data is read
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
    init = strategy_class(plugins, job).forces_init or job.model.init
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
            _train(run, resume)
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
    init_report = initialise(model, model.backbone, context.registry.backbones.get(job.model.backbone), context.init)
    log.info(init_report.summary())
    return Prepared(data, model, groups, init_report, strategy)


def train_loader(data: DataBundle, job: cfg.JobSpec, generator: torch.Generator) -> DataLoader:
    """The shuffled training loader; all its randomness comes from ``generator``, reseeded every epoch."""
    if data.batch_sampler is not None:
        return DataLoader(data.train, batch_sampler=data.batch_sampler(data.train, job.train.batch_size, generator),
                          collate_fn=data.collate_fn, num_workers=job.train.num_workers, generator=generator)
    return DataLoader(data.train, batch_size=job.train.batch_size, collate_fn=data.collate_fn,
                      sampler=RandomSampler(data.train, generator=generator),
                      num_workers=job.train.num_workers, generator=generator)


def _train(run: Run, resume: bool) -> None:
    job, task, context = run.job, run.task, run.context
    started = time.perf_counter()
    log.info("run %s: plugin %s, task %s, strategy %s, device %s, precision %s", run.directory, job.plugin,
             task.name, job.strategy.name, context.device, run.precision.name)
    prepared = prepare(run)
    data, model, groups, strategy = prepared.data, prepared.model, prepared.groups, prepared.strategy
    resumed = checkpoint.load(run.checkpoints / "last.pt") if resume else None
    choice = None
    if hasattr(strategy, "choose"):
        recorded = resumed["metrics"].get("strategy_choice") if resumed is not None else None
        strategy, choice = strategy.choose(run, prepared, recorded)

    run.metrics = {
        "plugin": job.plugin, "task": task.name, "status": "running",
        "strategy": strategy.name, "strategy_options": strategy.options.model_dump(),
        "init": prepared.init_report.as_dict(), "device": str(context.device), "precision": run.precision.name,
        "seed": job.train.seed, "epochs": 0, "monitor": job.train.monitor,
        "data": data.summary, "class_names": data.class_names, "phases": [], "history": [],
    }
    if choice is not None:
        run.metrics["strategy_choice"] = choice

    loader_gen = torch.Generator()
    train_batches = train_loader(data, job, loader_gen)
    val_loader = DataLoader(data.val, batch_size=job.train.batch_size, shuffle=False,
                            collate_fn=data.collate_fn, num_workers=job.train.num_workers)
    phases = plan_phases(strategy, groups, job.train.epochs)
    steps_per_epoch = math.ceil(len(train_batches) / job.train.grad_accum)
    scaler = torch.amp.GradScaler(context.device.type) if run.precision.needs_scaler else None

    state = {"epoch": 0, "step": 0, "best": None, "best_epoch": None, "stale": 0, "phase": -1}
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        state.update(resumed["loop"])
        run.metrics = resumed["metrics"]
        run.metrics["status"] = "running"
        log.info("resuming after epoch %d", state["epoch"])

    context.run_dir = run.directory
    run.plugins.hook.on_run_start(run=run)
    optimizer = scheduler = features = None
    current_phase = -1
    for epoch in range(state["epoch"], job.train.epochs):
        index, phase = phase_at(phases, epoch)
        if index != current_phase:
            apply_phase(model, groups, phase)
            optimizer = make_optimizer(optimizer_groups(groups, phase, job.train.lr), job.train)
            scheduler = make_scheduler(optimizer, job.train, steps_per_epoch * (phase.end - phase.start))
            table = verify_phase(model, groups, phase, optimizer, job.train.lr)
            log.info("phase %d (epochs %d-%d):\n%s", index, phase.start + 1, phase.end, format_table(table))
            if resumed is not None and resumed["loop"]["phase"] == index:
                optimizer.load_state_dict(resumed["optimizer"])
                scheduler.load_state_dict(resumed["scheduler"])
                if scaler is not None and resumed.get("scaler"):
                    scaler.load_state_dict(resumed["scaler"])
            elif not any(p["phase"] == index for p in run.metrics["phases"]):
                run.metrics["phases"].append({"phase": index, "start_epoch": phase.start + 1,
                                              "end_epoch": phase.end, "groups": table})
            current_phase = index
        if resumed is not None:
            checkpoint.restore_rng(resumed["rng"])
            resumed = None

        use_cache, why = cache_decision(model, groups, phase, job.augment, job.train.feature_cache)
        if use_cache and features is None:
            log.info("training the head on cached backbone features (%s)", why)
            features = {split: extract_features(model, dataset, job.train.batch_size, data.collate_fn,
                                                job.train.num_workers, run.precision, context.device)
                        for split, dataset in (("train", data.train), ("val", data.val))}
        loader_gen.manual_seed(job.train.seed * 100_003 + epoch)
        if hasattr(data.train, "set_epoch"):
            data.train.set_epoch(epoch)
        set_train_mode(model, groups, phase)
        if use_cache:
            stepped = HeadOnly(model)
            epoch_train = DataLoader(features["train"], batch_size=job.train.batch_size,
                                     sampler=RandomSampler(features["train"], generator=loader_gen),
                                     generator=loader_gen)
            epoch_val = DataLoader(features["val"], batch_size=job.train.batch_size)
        else:
            stepped, epoch_train, epoch_val = model, train_batches, val_loader
        stats = train_one_epoch(stepped, task.loss_function(job), epoch_train, optimizer, scheduler, scaler,
                                run.precision, context.device, grad_accum=job.train.grad_accum,
                                clip_grad_norm=job.train.clip_grad_norm, channels_last=job.train.channels_last,
                                description=f"epoch {epoch + 1}/{job.train.epochs}")
        stats["feature_cache"] = use_cache
        state["step"] += stats["optimizer_steps"]
        val = evaluate(stepped, task.evaluator(job, data, context), epoch_val, run.precision, context.device,
                       job.train.channels_last)
        monitored = val.get(job.train.monitor)
        if job.train.monitor not in val:
            raise ConfigError(f"train.monitor {job.train.monitor!r} is not a validation metric",
                              fix=f"choose one of: {', '.join(k for k, v in val.items() if _scalar(v))}")
        logs = {"epoch": epoch + 1, "phase": current_phase, **stats,
                "val": {k: v for k, v in val.items() if _scalar(v)}}
        run.metrics["history"].append(logs)
        run.metrics["epochs"] = epoch + 1
        improved = is_improvement(monitored, state["best"], job.train.monitor_mode,
                                  job.train.early_stopping.min_delta)
        if improved:
            state.update(best=monitored, best_epoch=epoch + 1, stale=0)
            checkpoint.save(run.checkpoints / "best.pt", _model_state(run, model, epoch + 1, monitored))
        else:
            state["stale"] += 1
        state.update(epoch=epoch + 1, phase=current_phase)
        run.metrics["best_epoch"] = state["best_epoch"]
        checkpoint.save(run.checkpoints / "last.pt", {
            **_model_state(run, model, epoch + 1, monitored),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "loop": dict(state), "rng": checkpoint.rng_state(), "metrics": run.metrics,
            "sampler_seed": job.train.seed * 100_003 + epoch + 1,
        })
        run.write_metrics()
        log.info("epoch %d/%d: train_loss %.4f, val %s %.4g, %.1f samples/s%s", epoch + 1, job.train.epochs,
                 stats["train_loss"], job.train.monitor, monitored, stats["samples_per_second"],
                 " (best)" if improved else "")
        run.plugins.hook.on_epoch_end(run=run, epoch=epoch + 1, logs=logs)
        patience = job.train.early_stopping.patience
        if patience is not None and state["stale"] >= patience:
            log.info("early stopping: %s did not improve for %d epochs", job.train.monitor, patience)
            run.metrics["early_stopped"] = True
            break

    final = finish(run, model, data)
    run.metrics.update(final)
    run.metrics["status"] = "completed"
    run.metrics["wall_seconds"] = run.metrics.get("wall_seconds", 0.0) + (time.perf_counter() - started)
    run.write_metrics()
    run.plugins.hook.on_run_end(run=run, metrics=run.metrics)


def finish(run: Run, model: nn.Module, data: DataBundle) -> dict[str, Any]:
    """Evaluate the best weights on the test split (the validation split when there is none)."""
    best = run.checkpoints / "best.pt"
    if best.exists():
        model.load_state_dict(checkpoint.load(best)["model"])
    split, dataset = ("test", data.test) if data.test is not None and len(data.test) else ("val", data.val)
    loader = DataLoader(dataset, batch_size=run.job.train.batch_size, shuffle=False, collate_fn=data.collate_fn,
                        num_workers=run.job.train.num_workers)
    metrics = evaluate(model, run.task.evaluator(run.job, data, run.context), loader, run.precision,
                       run.context.device, run.job.train.channels_last)
    log.info("%s metrics: %s", split, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if _scalar(v)))
    return {"evaluated_on": split, "metrics": metrics}


def _model_state(run: Run, model: nn.Module, epoch: int, value: Any) -> dict[str, Any]:
    return {"model": model.state_dict(), "epoch": epoch, "monitor": run.job.train.monitor,
            "value": value, "class_names": run.data.class_names, "num_outputs": run.data.num_outputs}


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
