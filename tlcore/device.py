"""Choosing the device and numeric precision."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .errors import ConfigError


@dataclass(frozen=True)
class Precision:
    """Autocast dtype (None: full precision) and whether fp16 loss scaling is needed."""

    name: str
    dtype: torch.dtype | None

    @property
    def needs_scaler(self) -> bool:
        return self.dtype is torch.float16

    def autocast(self, device: torch.device):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an unavailable explicit device is a config error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}", where="train.device",
                          fix="use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda was asked for but CUDA is not available", where="train.device",
                          fix="use --device auto or --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device mps was asked for but MPS is not available", where="train.device",
                          fix="use --device auto or --device cpu")
    return device


def resolve_precision(name: str, device: torch.device) -> Precision:
    """``auto``: bf16 where the accelerator supports it, else fp16 with a scaler; fp32 on CPU."""
    if name == "auto":
        if device.type == "cuda":
            name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        elif device.type == "mps":
            name = "fp16"
        else:
            name = "fp32"
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]
    if dtype is torch.float16 and device.type == "cpu":
        raise ConfigError("fp16 autocast is not supported on CPU", where="train.precision", fix="use bf16 or fp32")
    return Precision(name=name, dtype=dtype)
