"""Initialisation as parameter transfer: copy every tensor whose name and shape match, and say so.

``--init`` sources: a backbone's named weights (``imagenet``), ``file:PATH`` (a state
dict or tlapp checkpoint), ``run:DIR`` (an earlier run's best checkpoint), ``none``. A ``file:`` or ``run:``
source that copies no tensor is refused unless ``model.init_allow_empty`` says random weights are meant.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import checkpoint
from .errors import ConfigError, TlappError
from .registry import Backbone

log = logging.getLogger("tlapp")

# A checkpoint key: the prefix of the state-dict entries the run hands on to ``--init run:DIR`` (a self-supervised
# pretraining run's backbone, ``backbone.``); absent, everything is handed on.
HANDS_ON = "hands_on"


@dataclass
class InitReport:
    source: str
    loaded: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    not_initialised: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "loaded": self.loaded,
            "skipped": self.skipped,
            "not_initialised": len(self.not_initialised),
            "not_initialised_examples": self.not_initialised[:20],
        }

    def summary(self) -> str:
        text = f"init {self.source}: loaded {self.loaded} tensors, skipped {len(self.skipped)}"
        if self.skipped:
            text += " (" + "; ".join(f"{s['name']}: {s['reason']}" for s in self.skipped[:3])
            text += ", ..." if len(self.skipped) > 3 else ""
            text += ")"
        return text + f", {len(self.not_initialised)} model tensors keep their fresh initialisation"


def copy_matching(target: nn.Module, source: dict[str, torch.Tensor], source_name: str,
                  prefix: str = "") -> InitReport:
    """Copy tensors whose name (under ``prefix`` in the target) and shape match; report the rest."""
    report = InitReport(source=source_name)
    own = target.state_dict()
    copied: set[str] = set()
    with torch.no_grad():
        for name, tensor in source.items():
            key = prefix + name
            if not isinstance(tensor, torch.Tensor):
                report.skipped.append({"name": name, "reason": "not a tensor"})
            elif key not in own:
                report.skipped.append({"name": name, "reason": "no parameter of that name in the model"})
            elif tuple(own[key].shape) != tuple(tensor.shape):
                report.skipped.append({
                    "name": name,
                    "reason": f"shape {tuple(tensor.shape)} in source, {tuple(own[key].shape)} in model",
                })
            else:
                own[key].copy_(tensor.to(own[key].dtype))
                copied.add(key)
    report.loaded = len(copied)
    report.not_initialised = [k for k in own if k not in copied and not k.endswith("num_batches_tracked")]
    return report


def parse_init(init: str) -> tuple[str, str | None]:
    """``file:PATH`` -> ("file", PATH); ``run:DIR`` -> ("run", DIR); ``none``; else a weights name."""
    kind, sep, rest = init.partition(":")
    if sep and kind in ("file", "run"):
        if not rest:
            raise ConfigError(f"--init {init!r} needs a path after the colon", where="model.init")
        return kind, rest
    if init == "none":
        return "none", None
    return "weights", init


def run_checkpoint(run_dir: Path) -> Path:
    for name in ("best.pt", "last.pt"):
        path = run_dir / "checkpoints" / name
        if path.exists():
            return path
    raise ConfigError(f"no checkpoint in earlier run {run_dir}", where="model.init",
                      fix="point run: at a tlapp run directory holding checkpoints/best.pt")


def initialise(model: nn.Module, backbone_module: nn.Module, backbone: Backbone | None, init: str, *,
               allow_empty: bool = False) -> InitReport:
    """Fill ``model`` from the ``init`` source, where ``backbone_module`` is the model's backbone part.

    A ``file:`` or ``run:`` source that matches no tensor of the model is refused unless ``allow_empty``:
    training would start from random weights while the user believes it transfers.
    """
    kind, value = parse_init(init)
    if kind == "none":
        return InitReport(source="none", not_initialised=list(model.state_dict()))
    assert value is not None  # parse_init gives a value for every kind but none
    if kind == "weights":
        if backbone is None or value not in backbone.weights:
            have = ", ".join(sorted(backbone.weights)) if backbone else "(none)"
            raise ConfigError(f"backbone {getattr(backbone, 'name', '?')!r} has no weights named {value!r}",
                              where="model.init", fix=f"use one of: {have}, file:PATH, run:DIR or none")
        state = backbone.weights[value](backbone_module)
        return _copy_into_backbone(model, backbone_module, state, f"{backbone.name}:{value}")
    if kind == "run":
        report = _from_run(model, value)
    else:
        report = _from_file(model, backbone_module, value)
    if report.loaded == 0:
        _nothing_copied(report, init, backbone, allow_empty)
    return report


def _from_run(model: nn.Module, value: str) -> InitReport:
    path = run_checkpoint(Path(value))
    where = f"model.init (run:{value})"
    loaded = checkpoint.load(path, what="checkpoint", where=where,
                             fix="that run's checkpoint is damaged: initialise from another run or a weights file, "
                                 "or train that run again")
    if not checkpoint.is_checkpoint(loaded):
        raise ConfigError(f"{path} is not a tlapp checkpoint (no model state in it)", where=where,
                          fix="point run: at the output folder of an earlier `tlapp run`, or use file:PATH")
    return copy_matching(model, _handed_on(loaded, path, where), f"run:{value}")


def _from_file(model: nn.Module, backbone_module: nn.Module, value: str) -> InitReport:
    path = Path(value)
    where = f"model.init (file:{value})"
    if not path.exists():
        raise ConfigError(f"weights file not found: {path}", where=where, fix="check the path")
    if path.is_dir():
        fix = (f"for an earlier run's folder use --init run:{value}" if (path / "config.yaml").exists()
               else "point file: at a .pt file saved with torch.save(model.state_dict(), PATH)")
        raise ConfigError(f"{path} is a directory, not a weights file", where=where, fix=fix)
    loaded = checkpoint.load(path, where=where)
    if checkpoint.is_checkpoint(loaded):
        return copy_matching(model, _handed_on(loaded, path, where), f"file:{value}")
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    state = _state_dict(loaded, path, where)
    # A whole-model state dict matches at the top; a bare backbone's under the backbone's prefix.
    backbone_prefix = _prefix_of(model, backbone_module)
    prefix = max(["", backbone_prefix], key=lambda p: _matches(model, state, p))
    return copy_matching(model, state, f"file:{value}", prefix=prefix)


def _handed_on(loaded: dict[str, Any], path: Path, where: str) -> dict[str, Any]:
    """The model tensors a tlapp checkpoint hands on: those under its ``HANDS_ON`` prefix, else all of them."""
    state = _state_dict(loaded["model"], path, where)
    prefix = loaded.get(HANDS_ON)
    return {k: v for k, v in state.items() if k.startswith(prefix)} if isinstance(prefix, str) else state


def _state_dict(obj: Any, path: Path, where: str) -> dict[str, Any]:
    """``obj`` if it is a mapping holding tensors by name, else the error saying what it holds instead."""
    fix = ("save weights with torch.save(model.state_dict(), PATH), or pass a tlapp checkpoint "
           "(checkpoints/best.pt of a run)")
    if not isinstance(obj, dict):
        raise TlappError(f"{path} holds no state dict but a {type(obj).__name__}", where=where, fix=fix)
    if not any(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        keys = ", ".join(repr(k) for k in list(obj)[:5]) + (", ..." if len(obj) > 5 else "")
        raise TlappError(f"{path} holds no tensors: a dict with keys {keys or '(none)'}", where=where, fix=fix)
    return obj


def _nothing_copied(report: InitReport, init: str, backbone: Backbone | None, allow_empty: bool) -> None:
    if allow_empty:
        log.warning("WARNING: --init %s copied no tensor into the model; it trains from its fresh random "
                    "initialisation (model.init_allow_empty is true)", init)
        return
    example = f" (e.g. {report.skipped[0]['name']}: {report.skipped[0]['reason']})" if report.skipped else ""
    name = getattr(backbone, "name", None)
    raise ConfigError(
        f"--init {init} copied no tensor into the model: none of the {len(report.skipped)} tensors in it "
        f"matches a parameter of this model by name and shape{example}", where="model.init",
        fix=(f"use weights of a model with backbone {name!r} " if name else "use weights of this model ")
        + "(its state dict, its backbone's, or a tlapp checkpoint); to train from random weights on purpose, "
          "use --init none or set model.init_allow_empty: true")


def _copy_into_backbone(model: nn.Module, backbone_module: nn.Module, state: dict[str, torch.Tensor],
                        source: str) -> InitReport:
    return copy_matching(model, state, source, prefix=_prefix_of(model, backbone_module))


def backbone_prefix(model: nn.Module) -> str:
    """The state-dict prefix of a TransferModel's backbone (``backbone.``; empty when it is the whole model)."""
    return _prefix_of(model, model.backbone)  # type: ignore[arg-type]


def _matches(model: nn.Module, state: dict[str, Any], prefix: str) -> int:
    own = model.state_dict()
    return sum(1 for k, t in state.items()
               if prefix + k in own and tuple(own[prefix + k].shape) == tuple(getattr(t, "shape", (None,))))


def _prefix_of(model: nn.Module, sub: nn.Module) -> str:
    if sub is model:
        return ""
    for name, module in model.named_modules():
        if module is sub:
            return name + "."
    raise ValueError("backbone module is not part of the model")
