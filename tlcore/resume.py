"""``--resume``: continue the same job from ``checkpoints/last.pt``, or refuse, naming what changed.

A resume that trained with other settings than the run's own would leave a run directory whose
``config.yaml`` and metrics describe something else than its weights; one that loads state which does not
fit would crash halfway. So the job resolved for the resume is compared, key by key, with the job the
checkpoint stored, and only changes that cannot alter what the run computes are let through.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import checkpoint, config as cfg
from .budget import recorded_budget
from .errors import ConfigError

if TYPE_CHECKING:
    from .run import Run

log = logging.getLogger("tlapp")

def resume_base(run_dir: Path) -> dict[str, Any]:
    """The job spec a resume starts from: the run's ``config.yaml``, or the job its last checkpoint stored."""
    config, last = run_dir / "config.yaml", run_dir / "checkpoints" / "last.pt"
    if config.exists():
        return cfg.read_yaml(config)
    if not last.exists():
        raise ConfigError(f"nothing to resume in {run_dir}: no config.yaml and no checkpoints/last.pt",
                          where="--output", fix="check --output, or start a new run without --resume")
    loaded = checkpoint.load(last, what="checkpoint", fix=_DAMAGED, mmap=True)
    stored = loaded.get("job") if isinstance(loaded, dict) else None
    if not isinstance(stored, dict):
        raise ConfigError(f"{config} is missing, and {last} is from a tlapp version that did not store the job "
                          "in its checkpoints", where=str(run_dir),
                          fix="put back the config.yaml the run was started with, then --resume again")
    log.info("%s is missing: resuming the job stored in %s", config, last)
    return stored


_DAMAGED = ("the run's last checkpoint is damaged and cannot be continued: start the run again with --overwrite, "
            "or start a new run from its best weights with --init run:DIR")
_RESUMABLE = ("model", "optimizer", "scheduler", "loop", "metrics", "rng")


def resume_checkpoint(run_dir: Path, job: cfg.JobSpec) -> dict[str, Any]:
    """``checkpoints/last.pt`` of the run to continue, once it is certain ``job`` is that run's job.

    Resuming continues the same job: the job resolved for the resume (the run's config.yaml, flags,
    ``--set``) must equal the one stored in the checkpoint, but for ``output`` (where the run lives now)
    and ``train.epochs``, which may grow (a run of ``auto`` epochs counts the epochs it resolved to, recorded
    in the checkpoint). Any other change would train something else under the run's name, or crash on state
    that does not fit it. ``resumed["job"]`` is the run's job as stored.
    """
    path = run_dir / "checkpoints" / "last.pt"
    resumed = checkpoint.load(path, what="checkpoint", fix=_DAMAGED)
    missing = [k for k in _RESUMABLE if k not in resumed] if checkpoint.is_checkpoint(resumed) else ["format"]
    if missing:
        raise ConfigError(f"{path} is not a checkpoint --resume can continue (it lacks {', '.join(missing)})",
                          where=str(path), fix=_DAMAGED)
    stored, source = resumed.get("job"), str(path)
    if not isinstance(stored, dict):  # written before checkpoints stored their job: config.yaml is the record
        config = run_dir / "config.yaml"
        stored, source = cfg.read_yaml(config) if config.exists() else job.model_dump(mode="json"), str(config)
    stored = _normalised(type(job), stored)
    recorded = recorded_budget(resumed)
    _refuse_changes(stored, job, source, run_dir, recorded["epochs"] if recorded is not None else None)
    resumed["job"] = stored
    return resumed


def _normalised(spec_cls: type[cfg.JobSpec], raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` as the current spec reads it, so options added since (with their defaults) are no change."""
    try:
        return cfg.validate(spec_cls, raw).model_dump(mode="json")
    except ConfigError:
        return raw  # an option since renamed or removed: it shows up as a change


# Where the run lives and runs, not what it computes: a run moved to another folder or machine continues.
# (The loaders' randomness comes from per-sample seeds, so the number of workers does not change a batch.)
# ``evaluation`` only shapes the report made after training.
MAY_CHANGE = ("output", "train.device", "train.num_workers", "train.num_threads", "evaluation")
# What only ``train.epochs: auto`` reads: no change to a run of a whole number of epochs.
AUTO_EPOCHS_ONLY = ("train.min_steps", "train.min_epochs", "train.max_epochs")


def _refuse_changes(stored: dict[str, Any], job: cfg.JobSpec, source: str, run_dir: Path,
                    planned: int | None = None) -> None:
    """Refuse every change but those in MAY_CHANGE and more epochs. ``planned``: the epochs the run's budget
    resolved to (recorded in its checkpoint), what a stored ``auto`` stands for."""
    new = job.model_dump(mode="json")
    changes = [c for c in _differences(stored, new)
               if not any(c[0] == key or c[0].startswith(key + ".") for key in MAY_CHANGE)]
    train = stored.get("train")
    before = train.get("epochs") if isinstance(train, dict) else None
    before = planned if before == "auto" and planned is not None else before
    whole = isinstance(before, int) and isinstance(new["train"]["epochs"], int)

    def allowed(key: str, value: Any) -> bool:
        if key == "train.epochs":
            return whole and value >= before
        return whole and key in AUTO_EPOCHS_ONLY

    refused = [c for c in changes if not allowed(c[0], c[2])]
    if refused:
        listing = "; ".join(f"{key}: {_shown(old)}{_planned(key, old, planned)} -> {_shown(value)}"
                            for key, old, value in refused)
        raise ConfigError(
            f"--resume continues the run's own job, but this command changes {len(refused)} setting(s): {listing}",
            where=f"{source} against this command's flags, --set, --config and the run's config.yaml",
            fix="resume without those changes (train.epochs may grow; device, workers and threads may change); "
                "to train with other settings, start a "
                f"new run from this one's weights: --init run:{run_dir} --output NEW_DIR")


_UNSET = object()


def _differences(old: Any, new: Any, key: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for every leaf that differs between two dumped job specs."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in [*old, *(k for k in new if k not in old)]
                for d in _differences(old.get(k, _UNSET), new.get(k, _UNSET), f"{key}.{k}" if key else str(k))]
    return [] if old == new else [(key, old, new)]


def _shown(value: Any) -> str:
    return "(unset)" if value is _UNSET else json.dumps(value)


def _planned(key: str, old: Any, planned: int | None) -> str:
    return f" (resolved to {planned})" if key == "train.epochs" and old == "auto" and planned is not None else ""


def record_resumed_job(run: Run) -> None:
    """config.yaml says what the run trains: rewritten when more epochs were asked for, or when it is gone."""
    config = run.directory / "config.yaml"
    if not config.exists() or cfg.read_yaml(config) != run.job.model_dump(mode="json"):
        checkpoint.atomic_write_text(config, cfg.to_yaml(run.job))


# Keys of metrics.json that describe how a session ended; the resumed session writes its own.
_OUTCOME = ("status", "error", "evaluated_on", "evaluated_weights", "metrics")


def resumed_metrics(run_dir: Path, saved: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's metrics, plus what only metrics.json holds (time spent after the last checkpoint,
    ``early_stopped``, keys hooks added), without the outcome of the session that wrote it."""
    try:
        written = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        written = {}
    written = written if isinstance(written, dict) else {}
    metrics = {**{k: v for k, v in written.items() if k not in _OUTCOME}, **saved}
    seconds = [float(v) for v in (written.get("wall_seconds", 0.0), saved.get("wall_seconds", 0.0))
               if isinstance(v, (int, float)) and not isinstance(v, bool)]
    metrics["wall_seconds"] = max(seconds, default=0.0)
    metrics["status"] = "running"
    return metrics
