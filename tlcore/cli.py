"""The ``tlapp`` command line (click).

Exit codes: 0 success; 2 bad usage, config or data (one message: what, where,
how to fix); 1 any other failure. Tracebacks only with ``--debug``.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Iterator, Sized
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, cast

import click

from .errors import TlappError
from .plugins import load_plugins

log = logging.getLogger("tlapp")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (it is swapped under test runners)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _setup_logging() -> None:
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


@click.group()
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="tlapp")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Transfer learning for domain teams: adapt a pretrained model and see whether transfer helped."""
    ctx.obj = {"debug": debug}
    _setup_logging()


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json: bool) -> None:
    """List plugins: name, version, package, what each provides, status (ok, unavailable, broken)."""
    loaded = load_plugins()
    infos = [info.as_dict() for info in loaded.infos.values()]
    if as_json:
        click.echo(json.dumps(infos, indent=2))
        return
    for info in infos:
        if info["status"] == "ok":
            status = "ok"
        elif info["status"] == "unavailable":  # a dependency is not installed; `fix` says what to install
            status = f"unavailable: {info['error']}"
        else:
            status = f"BROKEN: {info['error']}"
        click.echo(f"{info['name']} {info['version'] or ''} ({info['package'] or info['module']}): {status}")
        if info["fix"]:
            click.echo(f"    fix: {info['fix']}")
        for kind, names in info["provides"].items():
            click.echo(f"    {kind}: {', '.join(names)}")


def _overrides(**flags: Any) -> dict[str, Any]:
    """CLI flags as a nested job-spec dict (only the ones given)."""
    paths = {"data": "data.path", "init": "model.init", "strategy": "strategy.name", "epochs": "train.epochs",
             "batch_size": "train.batch_size", "lr": "train.lr", "device": "train.device", "seed": "train.seed",
             "output": "output", "target_data": "adapt.target", "target_test": "adapt.target_test",
             "unlabelled_data": "semi.unlabelled"}
    out: dict[str, Any] = {}
    for flag, value in flags.items():
        if value is None:
            continue
        if flag == "teacher":  # one flag, two keys: the method and its teacher
            out["method"] = {"name": "distill", "teacher": value}
            continue
        node = out
        *parents, leaf = paths[flag].split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def _with_options(command, options):
    for option in reversed(options):
        command = option(command)
    return command


def common_options(command):
    """The options of every command that trains: which job, where its weights start, and overrides of its spec."""
    return _with_options(command, [
        click.option("--plugin", help="Plugin whose task to run (e.g. medical)."),
        click.option("--config", "config_file", type=click.Path(dir_okay=False), help="Job spec YAML file."),
        click.option("--init", help="a weights name of the backbone (imagenet, pretrained, ...) | file:PATH | "
                     "run:DIR | none"),
        click.option("--epochs", type=click.IntRange(min=1)),
        click.option("--batch-size", type=click.IntRange(min=1)),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True)),
        click.option("--device", help="auto | cpu | cuda | cuda:N | mps"),
        click.option("--seed", type=int),
        click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                     help="Override any job-spec key (repeatable)."),
    ])


def job_options(command):
    """The options every command that trains on labelled data shares: ``common_options``, the data, and the
    methods' own data (a teacher, a target domain, an unlabelled pool)."""
    return common_options(_with_options(command, [
        click.option("--data", help="Dataset path (default: the plugin's bundled sample data)."),
        click.option("--teacher", metavar="run:DIR", help="Distil from this earlier run of the same task (method "
                     "distill; options method.temperature, method.alpha)."),
        click.option("--target-data", metavar="PATH", help="Domain adaptation: the target domain's unlabelled data "
                     "(with --set adapt.method=dann|coral)."),
        click.option("--target-test", metavar="PATH", help="Labelled target-domain data the final metrics are "
                     "also measured on (metrics.json target_test)."),
        click.option("--unlabelled-data", metavar="PATH", help="Semi-supervised learning: unlabelled in-domain "
                     "data (with --set semi.method=pseudo-label|fixmatch)."),
    ]))


def _resumed_job(resume: bool, overwrite: bool, output: str | None) -> dict[str, Any] | None:
    """The job of the run ``--resume`` continues (None without it), after checking the flags that go with it."""
    from .resume import resume_base

    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite exclude each other")
    if not resume:
        return None
    if not output:
        raise click.UsageError("--resume needs --output DIR, the run to continue")
    return resume_base(Path(output))


@cli.command()
@job_options
@click.option("--strategy", help="Transfer strategy, e.g. finetune, linear-probe, freeze-unfreeze, gradual, scratch, "
              "auto.")
@click.option("--output", help="Run directory (default runs/<plugin>-<time>).")
@click.option("--resume", is_flag=True, help="Continue the run in --output from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace an existing run directory.")
def run(plugin, config_file, resume, overwrite, sets, **flags) -> None:
    """Train: run a plugin's task on your data (or its sample data) and write a run directory."""
    from .run import execute, resolve_job

    base = _resumed_job(resume, overwrite, flags.get("output"))
    loaded = load_plugins()
    task, job = resolve_job(loaded, plugin=plugin, config_file=config_file, overrides=_overrides(**flags),
                            sets=sets, base=base)
    result = execute(loaded, task, job, resume=resume, overwrite=overwrite)
    from .intervals import shown

    click.echo(f"done: {result.directory} ({result.metrics['evaluated_on']}: {shown(result.metrics['metrics'])})")


@cli.command()
@common_options
@click.option("--data", "pretrain_data", metavar="PATH", help="Unlabelled in-domain data in the task's own format "
              "(labels absent or ignored).")
@click.option("--method", help="Self-supervised method: simclr, or a plugin's own (mlm for text); see `tlapp plugins`.")
@click.option("--output", help="Run directory (default runs/<plugin>-<time>).")
@click.option("--resume", is_flag=True, help="Continue the run in --output from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace an existing run directory.")
def pretrain(plugin, config_file, resume, overwrite, sets, pretrain_data, method, **flags) -> None:
    """Self-supervised pretraining of a task's backbone on unlabelled data; fine-tune from it with
    `tlapp run --init run:DIR`."""
    from . import config as cfg
    from .run import execute, resolve_job

    base = _resumed_job(resume, overwrite, flags.get("output"))
    loaded = load_plugins()
    overrides = cfg.merge(_overrides(**flags), {"pretrain": {k: v for k, v in (("method", method),
                                                                               ("data", pretrain_data)) if v}})
    task, job = resolve_job(loaded, plugin=plugin, config_file=config_file, overrides=overrides, sets=sets,
                            base=base, pretraining=True)
    result = execute(loaded, task, job, resume=resume, overwrite=overwrite)
    from .intervals import shown

    click.echo(f"done: {result.directory} (held-out {shown(result.metrics['metrics'])}); fine-tune from it with "
               f"--init run:{result.directory}")


@cli.command("lr-find")
@job_options
@click.option("--strategy", help="Strategy whose first phase is swept (default: the job's).")
@click.option("--output", help="Folder for lr_find.json and lr_find.png (default runs/lr-find-<plugin>-<time>).")
@click.option("--steps", type=click.IntRange(min=10), default=100, show_default=True)
@click.option("--start-lr", type=float, default=1e-7, show_default=True)
@click.option("--end-lr", type=float, default=1.0, show_default=True)
def lr_find(plugin, config_file, sets, steps, start_lr, end_lr, **flags) -> None:
    """LR range test: sweep the rate, plot loss against it, suggest one; the weights are restored after."""
    from datetime import datetime

    from . import lr_find as finder
    from .checkpoint import atomic_write_text
    from .run import Run, make_context, prepare, resolve_job, training_budget
    from .device import resolve_precision
    from .strategies import phase_at, plan_phases

    if not 0 < start_lr < end_lr:
        raise click.BadParameter("need 0 < --start-lr < --end-lr")
    loaded = load_plugins()
    output = flags.pop("output")
    task, job = resolve_job(loaded, plugin=plugin, config_file=config_file, overrides=_overrides(**flags), sets=sets)
    out = Path(output) if output else Path("runs") / f"lr-find-{job.plugin}-{datetime.now():%Y%m%d-%H%M%S}"
    if (out / "lr_find.json").exists():
        raise TlappError(f"{out} already holds an LR range test", fix="choose another --output")
    out.mkdir(parents=True, exist_ok=True)
    context = make_context(loaded, job)
    run = Run(job=job, task=task, directory=out, context=context, plugins=loaded,
              precision=resolve_precision(job.train.precision, context.device))
    prepared = prepare(run)
    budget, loader = training_budget(job, prepared.data, torch_generator(job.train.seed))
    phase = phase_at(plan_phases(prepared.strategy, prepared.groups, budget.epochs), 0)[1]
    result = finder.range_test(prepared.model, task.loss_function(job), loader, prepared.groups,
                               phase, job.train, run.precision, context.device, start_lr=start_lr, end_lr=end_lr,
                               steps=steps)
    atomic_write_text(out / "lr_find.json", json.dumps({"strategy": prepared.strategy.name, **result.as_dict()},
                                                       indent=2) + "\n")
    finder.plot(result, out / "lr_find.png")
    shown = f"{result.suggestion:.3g}" if result.suggestion else "none (loss did not fall; widen the range)"
    click.echo(f"suggested lr: {shown} ({result.stopped}); plot: {out / 'lr_find.png'}")


@cli.command("augment-preview")
@job_options
@click.option("--augment", help="Augmentation pipeline to show (default: the job's; `none` for none); see "
                                "`tlapp plugins`.")
@click.option("--n", "count", type=click.IntRange(1, 64), default=16, show_default=True,
              help="Training samples to draw.")
@click.option("--output", help="Folder for the picture (default runs/augment-preview-<plugin>-<time>).")
def augment_preview(plugin, config_file, sets, augment, count, **flags) -> None:
    """Draw training samples through the augmentation as a run's train_batch pictures show them, without
    training: tune an augmentation before spending hours on it."""
    from datetime import datetime

    from .augmentation import check_augment_options
    from .preview import write_previews
    from .run import make_context, resolve_job, train_loader

    loaded = load_plugins()
    output = flags.pop("output")
    overrides = _overrides(**flags)
    if augment is not None:
        overrides["augment"] = None if augment.lower() == "none" else augment
    task, job = resolve_job(loaded, plugin=plugin, config_file=config_file, overrides=overrides, sets=sets)
    check_augment_options(job, loaded.registry)
    out = Path(output) if output else Path("runs") / f"augment-preview-{job.plugin}-{datetime.now():%Y%m%d-%H%M%S}"
    context = make_context(loaded, job)
    data = task.build_data(job, context)
    generator = torch_generator(job.train.seed)
    out.mkdir(parents=True, exist_ok=True)
    written = write_previews(task, job, data, context, train_loader(data, job, generator, count), generator, out, 1)
    if not written:
        raise TlappError(f"task {task.name!r} of plugin {job.plugin!r} does not draw its inputs",
                         fix="a task shows its training batches by implementing Task.preview (docs/plugins.md)")
    click.echo(f"written: {written[0]} ({count} training samples, augment {job.augment})")


def torch_generator(seed: int):
    import torch

    return torch.Generator().manual_seed(seed)


@cli.command()
@job_options
@click.option("--strategies", required=True, help="Comma-separated, e.g. scratch,linear-probe,finetune,auto")
@click.option("--folds", type=click.IntRange(min=2), help="k-fold by the task's groups (e.g. patients).")
@click.option("--output", help="Comparison folder (default runs/compare-<plugin>-<time>).")
@click.option("--overwrite", is_flag=True, help="Replace an existing comparison folder.")
@click.option("--metric", help="The final metric the verdict ranks by (default: train.monitor unless it is the "
                               "loss, else the task's first metric).")
@click.option("--variant", "variants", multiple=True, metavar="NAME:KEY=VALUE",
              help="Also vary the job: each strategy runs once per variant NAME with these --set items "
                   "(repeat for several keys; NAME: alone for the job unchanged).")
def compare(plugin, config_file, sets, strategies, folds, output, overwrite, metric, variants, **flags) -> None:
    """Run several strategies on the same data and seed; write a table and a plot."""
    from datetime import datetime

    from .compare import parse_variants, plan, run_comparison

    loaded = load_plugins()
    names = [s.strip() for s in strategies.split(",") if s.strip()]
    out = Path(output) if output else Path("runs") / f"compare-{plugin or 'job'}-{datetime.now():%Y%m%d-%H%M%S}"
    jobs = plan(loaded, plugin=plugin, strategies=names, folds=folds, config_file=config_file,
                overrides=_overrides(**flags), sets=sets, output=out, variants=parse_variants(variants))
    run_comparison(loaded, jobs, out, overwrite, metric)
    click.echo((out / "comparison.md").read_text())
    click.echo(f"written: {out / 'comparison.json'}, {out / 'comparison.png'}")


@cli.command()
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--data", help="Evaluate on this dataset instead of the run's own test split.")
@click.option("--output", type=click.Path(dir_okay=False), help="Write the metrics JSON here.")
def evaluate(run_dir: str, data: str | None, output: str | None) -> None:
    """Evaluate a finished run's best weights."""
    from .checkpoint import atomic_write_text
    from .directories import check_output_file
    from .run import evaluate_final, labelled_data, load_run

    target = Path(output) if output else Path(run_dir) / "evaluation.json"
    check_output_file(target, "--output", may_replace=("evaluation.json",))
    loaded = load_plugins()
    task, job, model, class_names, context, precision = load_run(loaded, Path(run_dir))
    bundle = (labelled_data(task, job, context, data, class_names, where="--data") if data
              else task.build_data(job, context))
    split, metrics, _ = evaluate_final(task, job, bundle, model, context, precision)
    samples = len(cast(Sized, bundle.evaluation_split()[1]))
    result = {"run": str(run_dir), "data": data or f"{split} split of the run", "samples": samples,
              "metrics": metrics}
    text = json.dumps(result, indent=2)
    atomic_write_text(target, text + "\n")
    click.echo(text)


@cli.command()
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--output", type=click.Path(file_okay=False), help="Folder for prediction files "
              "(default: RUN/predictions).")
@click.argument("inputs", nargs=-1, required=True)
def predict(run_dir: str, output: str | None, inputs: tuple[str, ...]) -> None:
    """Predict with a finished run's best weights; writes prediction files."""
    from .run import load_run

    loaded = load_plugins()
    task, job, model, class_names, context, _ = load_run(loaded, Path(run_dir))
    out_dir = Path(output) if output else Path(run_dir) / "predictions"
    out_dir.mkdir(parents=True, exist_ok=True)
    records = task.predict(model, job, class_names, list(inputs), context, out_dir)
    click.echo(f"{len(records)} predictions written to {out_dir}")


@cli.group()
def data() -> None:
    """Inspect datasets."""


@data.command("check")
@click.option("--plugin", required=True)
@click.option("--data", "data_path", help="Dataset path (default: the plugin's sample data).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False))
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the report as JSON here.")
def data_check(plugin: str, data_path: str | None, config_file: str | None, sets, json_path: str | None) -> None:
    """Preflight a dataset: files, formats, sizes, classes, splits, unreadable files."""
    from .checkpoint import atomic_write_text
    from .run import make_context, resolve_job

    loaded = load_plugins()
    task, job = resolve_job(loaded, plugin=plugin, config_file=config_file,
                            overrides=_overrides(data=data_path), sets=sets)
    report = task.check_data(job, make_context(loaded, job))
    text = json.dumps(report, indent=2, default=str)
    if json_path:
        atomic_write_text(Path(json_path), text + "\n")
    click.echo(text)


@cli.command("init-plugin")
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(), help="Folder to write, new or empty "
              "(default ./tlapp-NAME).")
def init_plugin(name: str, directory: str | None) -> None:
    """Write a new plugin package: an image-folder task, a head, sample images and a test."""
    from .scaffold import write_plugin

    target, files = write_plugin(name, Path(directory) if directory else None)
    click.echo(f"wrote plugin {name!r} to {target}:")
    for f in files:
        if "sample_data" not in f.parts:
            click.echo(f"    {f}")
    click.echo(f"    (and {sum('sample_data' in f.parts for f in files)} sample images)")
    click.echo(f"next:\n    cd {target} && pip install -e \".[test]\"\n    tlapp plugins\n"
               f"    tlapp run --plugin {name} --epochs 1\n    python -m pytest")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that it unwinds like Ctrl-C: the run records itself as
    interrupted, temporary files are removed, and a checkpoint is either the old or the new one."""

    exit_code = 143  # 128 + SIGTERM, what a shell reports for a process the signal ended

    def __init__(self) -> None:
        super().__init__("SIGTERM")


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises ``Terminated`` for the duration of a command; the previous handler comes back after."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; an embedding program keeps its own
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    logging.getLogger("py.warnings").warning(
        "%s", warnings.formatwarning(message, category, filename, lineno, line).rstrip())


@contextmanager
def _warnings_to_log(debug: bool) -> Iterator[None]:
    """Python warnings (pydicom values, torchmetrics, torch deprecations) go to the ``py.warnings`` logger,
    which a run writes to its ``train.log``; on the console only with ``--debug``.

    The same as ``logging.captureWarnings``, but undone by restoring whatever was there before rather than
    switching capture off, which would also end a capture the embedding program had set up.
    """
    logger = logging.getLogger("py.warnings")
    # Without a handler of its own a record would reach logging's last-resort handler: stderr.
    handler = _StderrHandler() if debug else logging.NullHandler()
    if debug:
        handler.setFormatter(logging.Formatter("%(message)s"))
    propagate, previous = logger.propagate, warnings.showwarning
    logger.addHandler(handler)
    logger.propagate = False
    warnings.showwarning = _show_warning
    try:
        yield
    finally:
        warnings.showwarning = previous
        logger.propagate = propagate
        logger.removeHandler(handler)


def _interrupted(exc: KeyboardInterrupt, command: str | None) -> NoReturn:
    what = "interrupted by SIGTERM" if isinstance(exc, Terminated) else "interrupted"
    # Only `run` and `pretrain` can be continued; the hint comes with the interruption from the run it stopped.
    hints = getattr(exc, "__notes__", []) if command in ("run", "pretrain") else []
    click.echo("; ".join([what, *hints]), err=True)
    sys.exit(exc.exit_code if isinstance(exc, Terminated) else 130)


def main(argv: list[str] | None = None) -> None:
    args = argv if argv is not None else sys.argv[1:]
    debug = "--debug" in args
    # The group's own options take no values, so the first other word names the command.
    command = next((a for a in args if not a.startswith("-")), None)
    try:
        with _sigterm_as_interrupt(), _warnings_to_log(debug):
            cli.main(args=argv, prog_name="tlapp", standalone_mode=False)
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):  # click turns Ctrl-C into Abort
            _interrupted(exc.__cause__, command)
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except TlappError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"error: {exc.render()}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt as exc:  # outside click's invoke, e.g. while it parses
        _interrupted(exc, command)
    except Exception as exc:  # anything else is our bug or the environment's: exit 1
        if debug:
            traceback.print_exc()
        click.echo(f"error: {type(exc).__name__}: {exc}\n  (run with --debug for the traceback)", err=True)
        sys.exit(1)
