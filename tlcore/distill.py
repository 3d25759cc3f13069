"""Knowledge distillation (Hinton, Vinyals and Dean, 2015): the method ``distill`` teaches the job's model, the
student, to match an earlier run's model, the teacher, as well as the labels.

The loss of a step is ``alpha * hard + (1 - alpha) * T^2 * KL(teacher_T || student_T)``: ``hard`` is the task's
own loss (``Task.loss_function``, so label smoothing, multi-label and multi-task weighting stay as the job
says), and the KL divergence is between the temperature-``T`` softened outputs (softmax for single-label,
one sigmoid per label for multi-label; a multi-task model's per-task divergences are averaged). ``T^2`` keeps the
soft gradients' scale independent of ``T``.

The teacher is the best checkpoint of ``method.teacher`` (``run:DIR``), rebuilt with its own architecture,
frozen, in evaluation mode, on the run's device. It sees the student's inputs, so it must be a run of the same
plugin and task over the same classes; a teacher trained on other input settings (a larger image size, say) is
allowed, with a warning naming them.

When the inputs do not change between epochs (no augmentation), the teacher's outputs for the training split
are computed once, in dataset order, before the first step and looked up by the content of each sample's
inputs (padding stripped): later epochs skip the teacher's forward pass, and a resumed run finds the same
values an uninterrupted one used.

After the final evaluation, metrics.json gets a ``distillation`` block: teacher and student metrics on the same
split, how often their predictions agree, parameter counts, weight sizes and latency per sample, the two
timed side by side in this process.
"""

from __future__ import annotations

import hashlib
import io
import logging
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from collections.abc import Sized

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn
from torch.utils.data import DataLoader

from . import checkpoint, config as cfg
from .classification import ClassificationTask
from .engine import to_device
from .errors import ConfigError
from .methods import Method, MethodOptions

if TYPE_CHECKING:
    from .device import Precision
    from .run import Run
    from .task import DataBundle, Task

log = logging.getLogger("tlapp")

Outputs = torch.Tensor | dict[str, torch.Tensor]


class DistillOptions(MethodOptions):
    teacher: str = Field(description="the teacher: run:DIR, the output folder of an earlier run of this task")
    temperature: float = Field(4.0, gt=0, description="T: both models' logits are divided by it before the KL")
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the hard-label loss; 1 - alpha weighs the "
                                                      "teacher's soft targets")
    cache_teacher: bool = Field(True, description="without augmentation, compute the teacher's outputs for the "
                                                  "training split once instead of every epoch")
    latency_rounds: int = Field(10, ge=1, description="timed forward passes per model for the latency figures")

    @field_validator("teacher")
    @classmethod
    def _run_dir(cls, value: str) -> str:
        return value if value.startswith("run:") else f"run:{value}"

    @property
    def teacher_dir(self) -> Path:
        return Path(self.teacher.removeprefix("run:"))


class Distill(Method):
    name = "distill"
    description = "the task's loss plus the KL divergence to an earlier run's softened outputs (--teacher run:DIR)"
    Options = DistillOptions

    def __init__(self, options: DistillOptions):
        super().__init__(options)
        self.options: DistillOptions = options
        self.teacher: nn.Module | None = None
        self.cache: dict[bytes, Outputs] = {}
        self.lookups = {"hits": 0, "misses": 0}

    # ------------------------------------------------------------ before training

    def check(self, job: cfg.JobSpec, task: Task) -> None:
        """A task without class outputs, or a teacher that cannot serve this job, fails before any data is read."""
        if not isinstance(task, ClassificationTask):
            raise ConfigError(f"distillation needs a classification task; plugin {job.plugin}'s task {task.name!r} "
                              "is not one", where="method.name",
                              fix="train without --teacher; the plugin's README, section 'Distillation', says what "
                                  "it offers instead")
        folder = self.options.teacher_dir
        where = "method.teacher"
        config = folder / "config.yaml"
        if not config.exists():
            raise ConfigError(f"teacher {folder} is not a tlapp run directory (no config.yaml)", where=where,
                              fix="pass --teacher run:DIR with the output folder of an earlier `tlapp run` of this "
                                  "task")
        if job.output and Path(job.output).resolve() == folder.resolve():
            raise ConfigError(f"the teacher {folder} is this run's own output folder", where=where,
                              fix="write the student to another --output")
        if not any((folder / "checkpoints" / name).exists() for name in ("best.pt", "last.pt")):
            raise ConfigError(f"teacher {folder} has no checkpoint (checkpoints/best.pt)", where=where,
                              fix="train the teacher first: it stopped before its first epoch ended")
        saved = cfg.read_yaml(config)
        theirs, ours = (saved.get("plugin"), saved.get("task")), (job.plugin, job.task)
        if theirs != ours:
            raise ConfigError(f"teacher {folder} is a run of plugin {theirs[0]!r}, task {theirs[1]!r}; this job is "
                              f"plugin {ours[0]!r}, task {ours[1]!r}", where=where,
                              fix="distil from a run of the same plugin and task: the teacher sees the student's "
                                  "inputs and must predict the same classes")

    def setup(self, run: Run, model: nn.Module) -> None:
        from .run import load_run

        folder = self.options.teacher_dir
        # Rebuilding the teacher draws random initial weights before its checkpoint replaces them; the draws must
        # not move the random state training starts from (with alpha 1, a distilled run is a supervised one).
        before = checkpoint.rng_state()
        _, job, teacher, class_names, _, _ = load_run(run.plugins, folder)
        checkpoint.restore_rng(before)
        data = run.built_data
        if class_names != data.class_names:
            raise ConfigError(f"teacher {folder} predicts the classes {class_names}; this run's data has "
                              f"{data.class_names}", where="method.teacher",
                              fix="distil from a teacher trained on the same classes (same label column and "
                                  "class names), or relabel the data")
        changed = _changed_settings(job.data.model_dump(), run.job.data.model_dump())
        if changed:
            log.warning("the teacher was trained with other data settings (%s); it sees this run's inputs",
                        ", ".join(changed))
        self.teacher = teacher.to(run.context.device).eval().requires_grad_(False)
        self._loss = run.task.loss_function(run.job)
        self._precision = run.precision
        self._device = run.context.device
        self._channels_last = run.job.train.channels_last
        specs = cast(ClassificationTask, run.task).task_specs(run.job)
        self._multilabel = ({name: spec.multilabel for name, spec in specs.items()} if specs
                            else bool(getattr(run.job.model, "multilabel", False)))
        self._teacher_spec = {"run": str(folder), "backbone": job.model.backbone,
                              "strategy": job.strategy.name}
        self.cache = {}
        if self.options.cache_teacher and not run.job.augment:
            self._fill_cache(data, run.job)

    def modules(self) -> dict[str, nn.Module]:
        return {"teacher": self.teacher} if self.teacher is not None else {}

    @torch.no_grad()
    def _fill_cache(self, data: DataBundle, job: cfg.JobSpec) -> None:
        """The teacher's outputs for every training sample, in dataset order at a fixed batch size: the same
        values whichever epoch or resumption asks for them."""
        assert self.teacher is not None
        started = time.perf_counter()
        # Its own generator: iterating must not draw from the global RNG the training loop resumes from.
        loader = DataLoader(data.train, batch_size=job.train.batch_size, shuffle=False, collate_fn=data.collate_fn,
                            num_workers=job.train.num_workers, generator=torch.Generator())
        for inputs, _ in loader:
            inputs = to_device(inputs, self._device, self._channels_last)
            with self._precision.autocast(self._device):
                outputs = self.teacher(inputs)
            for key, row in zip(sample_keys(inputs), _rows(outputs)):
                self.cache[key] = row
        log.info("distill: the teacher's outputs for %d training samples cached in %.1f s",
                 len(cast(Sized, data.train)), time.perf_counter() - started)

    # ------------------------------------------------------------ training

    def loss(self, model: nn.Module, batch: Any, extras: dict[str, Any]) -> tuple[torch.Tensor, int]:
        recorder = _Recorder(model)
        hard, n = self._loss(cast(nn.Module, recorder), batch)
        if recorder.inputs is None or recorder.outputs is None:
            raise ConfigError("distillation needs the task's loss to call the model on the batch's inputs",
                              where="method.name", fix="train this task without --teacher")
        with torch.no_grad():
            teacher = self._teacher_outputs(recorder.inputs)
        soft = soft_target_loss(recorder.outputs, teacher, self.options.temperature, self._multilabel)
        alpha = self.options.alpha
        return alpha * hard + (1 - alpha) * soft, n

    def _teacher_outputs(self, inputs: Any) -> Outputs:
        assert self.teacher is not None
        if self.cache:
            keys = sample_keys(inputs)
            found = [self.cache.get(k) for k in keys]
            if all(f is not None for f in found):
                self.lookups["hits"] += len(keys)
                return _stack(cast(list[Outputs], found))
            self.lookups["misses"] += len(keys)
        return self.teacher(inputs)

    # ------------------------------------------------------------ after training

    def report(self, run: Run, model: nn.Module, data: DataBundle) -> dict[str, Any]:
        from .run import evaluate_final

        assert self.teacher is not None
        split, teacher_metrics, _ = evaluate_final(run.task, run.job, data, self.teacher, run.context, run.precision)
        _, dataset = data.evaluation_split()
        loader = DataLoader(dataset, batch_size=run.job.train.batch_size, shuffle=False,
                            collate_fn=data.collate_fn, num_workers=run.job.train.num_workers)
        agreement = prediction_agreement(model, self.teacher, loader, self._device, self._precision,
                                         self._multilabel, self._channels_last)
        timing = side_by_side_latency({"teacher": self.teacher, "student": model}, loader, self._device,
                                      self._precision, self.options.latency_rounds, self._channels_last)
        teacher_entry = {**self._teacher_spec, **_size(self.teacher), **timing["teacher"], "metrics": teacher_metrics}
        student_entry = {"backbone": run.job.model.backbone, **_size(model), **timing["student"],
                         "metrics": run.metrics.get("metrics", {})}
        block = {
            "evaluated_on": split,
            "temperature": self.options.temperature,
            "alpha": self.options.alpha,
            "agreement": agreement,
            "teacher": teacher_entry,
            "student": student_entry,
            "latency": {k: v for k, v in timing.items() if k not in ("teacher", "student")},
            "teacher_cache": {"samples": len(self.cache), **self.lookups} if self.cache else None,
        }
        t, s = teacher_entry, student_entry
        log.info("distillation: agreement with the teacher %.3f; student %d parameters (teacher %d), %.2f ms per "
                 "sample (teacher %.2f)", agreement["overall"], s["parameters"], t["parameters"],
                 s["ms_per_sample"], t["ms_per_sample"])
        return {"distillation": block}



# ---------------------------------------------------------------- pieces


class _Recorder:
    """Calls the student and remembers the inputs and outputs, so that the task's own loss function runs
    the one forward pass the soft loss needs too."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.inputs: Any = None
        self.outputs: Outputs | None = None

    def __call__(self, inputs: Any) -> Any:
        self.inputs, self.outputs = inputs, self.model(inputs)
        return self.outputs

    def __getattr__(self, name: str) -> Any:  # a loss function may read model attributes
        return getattr(self.model, name)


def soft_target_loss(student: Outputs, teacher: Outputs, temperature: float,
                     multilabel: bool | dict[str, bool]) -> torch.Tensor:
    """T^2 times the KL divergence from the teacher's softened outputs to the student's, averaged over samples
    (multi-label: over samples and labels; multi-task: the mean over tasks)."""
    if isinstance(student, dict):
        if not isinstance(teacher, dict) or set(teacher) != set(student):
            raise ConfigError("the teacher's outputs are not those of the student's tasks", where="method.teacher",
                              fix="distil from a teacher trained on the same tasks")
        flags = multilabel if isinstance(multilabel, dict) else {}
        return torch.stack([soft_target_loss(student[t], teacher[t], temperature, flags.get(t, False))
                            for t in student]).mean()
    if isinstance(teacher, dict):
        raise ConfigError("the teacher is a multi-task model and the student is not", where="method.teacher",
                          fix="distil from a teacher with the student's single task")
    s, t = student.float() / temperature, teacher.float() / temperature
    if multilabel is True:
        target = torch.sigmoid(t)
        # BCE(s, p) - BCE(t, p) = KL(Bernoulli(p) || Bernoulli(sigmoid(s))): the cross-entropy minus the
        # teacher's own entropy, so that a perfect student scores 0.
        kl = (F.binary_cross_entropy_with_logits(s, target, reduction="mean")
              - F.binary_cross_entropy_with_logits(t, target, reduction="mean"))
    else:
        kl = F.kl_div(F.log_softmax(s, dim=1), F.log_softmax(t, dim=1), reduction="batchmean", log_target=True)
    return kl * temperature ** 2


def sample_keys(inputs: Any) -> list[bytes]:
    """One key per sample from the content of its inputs: a tensor's row, or a dict's tensors' rows cut to the
    sample's ``attention_mask`` length (padding depends on the batch a text lands in, its outputs do not)."""
    if isinstance(inputs, torch.Tensor):
        rows = inputs.detach().contiguous().cpu()
        return [hashlib.blake2b(r.numpy().tobytes(), digest_size=16).digest() for r in rows]
    if isinstance(inputs, dict):
        tensors = {k: v.detach().cpu() for k, v in sorted(inputs.items()) if isinstance(v, torch.Tensor)}
        mask = tensors.get("attention_mask")
        lengths = mask.sum(dim=1).tolist() if mask is not None and mask.dim() == 2 else None
        keys = []
        for i in range(len(next(iter(tensors.values())))):
            digest = hashlib.blake2b(digest_size=16)
            for name, tensor in tensors.items():
                row = tensor[i]
                if mask is not None and lengths is not None and row.dim() >= 1 and tensor.shape[:2] == mask.shape:
                    row = row[:int(lengths[i])]
                digest.update(name.encode())
                digest.update(row.contiguous().numpy().tobytes())
            keys.append(digest.digest())
        return keys
    raise ConfigError(f"distillation cannot key a batch of {type(inputs).__name__} for its teacher cache",
                      where="method.cache_teacher", fix="--set method.cache_teacher=false")


def _rows(outputs: Outputs) -> list[Outputs]:
    if isinstance(outputs, dict):
        names = list(outputs)
        return [{n: outputs[n][i].float() for n in names} for i in range(len(outputs[names[0]]))]
    return [row.float() for row in outputs]


def _stack(rows: list[Outputs]) -> Outputs:
    first = rows[0]
    if isinstance(first, dict):
        return {n: torch.stack([cast(dict, r)[n] for r in rows]) for n in first}
    return torch.stack(cast(list[torch.Tensor], rows))


def _changed_settings(theirs: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    return [f"data.{k}={theirs.get(k)!r} where this run has {ours.get(k)!r}"
            for k in sorted(set(theirs) | set(ours)) if k != "path" and theirs.get(k) != ours.get(k)]


def _size(model: nn.Module) -> dict[str, int]:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return {"parameters": sum(p.numel() for p in model.parameters()), "weights_bytes": buffer.tell()}


def _decisions(outputs: torch.Tensor, multilabel: bool) -> torch.Tensor:
    return (outputs > 0).long() if multilabel else outputs.argmax(dim=1)


@torch.no_grad()
def prediction_agreement(student: nn.Module, teacher: nn.Module, loader: DataLoader, device: torch.device,
                         precision: Precision, multilabel: bool | dict[str, bool],
                         channels_last: bool = False) -> dict[str, Any]:
    """How close the student's predictions are to the teacher's: ``overall``, the share of samples whose
    predicted class is the same for both (multi-label: of sample-label decisions at the 0.5 probability
    threshold), and ``kl``, the mean KL divergence from the teacher's probabilities to the student's (at
    temperature 1), which also sees differences that do not flip a decision; per task and their mean for
    multi-task models."""
    student.eval()
    same: dict[str, list[float]] = {}
    divergence: dict[str, float] = {}  # summed over samples
    samples: dict[str, int] = {}
    for inputs, _ in loader:
        inputs = to_device(inputs, device, channels_last)
        with precision.autocast(device):
            s, t = student(inputs), teacher(inputs)
        pairs = {n: (s[n], cast(dict, t)[n]) for n in s} if isinstance(s, dict) else {"": (s, cast(torch.Tensor, t))}
        for name, (a, b) in pairs.items():
            flag = multilabel.get(name, False) if isinstance(multilabel, dict) else multilabel
            same.setdefault(name, []).extend((_decisions(a, flag) == _decisions(b, flag)).float().flatten().tolist())
            divergence[name] = divergence.get(name, 0.0) + float(soft_target_loss(a, b, 1.0, flag)) * len(a)
            samples[name] = samples.get(name, 0) + len(a)
    shares = {name: sum(v) / len(v) for name, v in same.items() if v}
    kls = {name: divergence[name] / samples[name] for name in divergence if samples[name]}
    if set(shares) == {""}:
        return {"overall": shares[""], "kl": kls[""], "samples": samples[""]}
    return {"overall": sum(shares.values()) / len(shares), "kl": sum(kls.values()) / len(kls), "per_task": shares,
            "kl_per_task": kls}


@torch.no_grad()
def side_by_side_latency(models: dict[str, nn.Module], loader: DataLoader, device: torch.device,
                         precision: Precision, rounds: int, channels_last: bool = False) -> dict[str, Any]:
    """Milliseconds per sample of each model on the same batch (the evaluation split's first), timed in
    alternation, ``rounds`` passes each after one warm-up pass, the median reported."""
    inputs, _ = next(iter(loader))
    inputs = to_device(inputs, device, channels_last)
    size = len(inputs["input_ids"]) if isinstance(inputs, dict) else len(inputs)
    times: dict[str, list[float]] = {name: [] for name in models}
    for model in models.values():
        model.eval()

    def timed(model: nn.Module) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        with precision.autocast(device):
            model(inputs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started

    for model in models.values():
        timed(model)
    for _ in range(rounds):
        for name, model in models.items():
            times[name].append(timed(model))
    out: dict[str, Any] = {name: {"ms_per_sample": 1000 * statistics.median(t) / size} for name, t in times.items()}
    out["batch_size"] = size
    out["rounds"] = rounds
    out["device"] = str(device)
    out["threads"] = torch.get_num_threads()
    return out
