"""Seeds: one for the run, and one per (epoch, sample) so augmentation is resumable and worker-safe."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = True) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def sample_seed(*parts: int) -> int:
    """A 32-bit seed from (run seed, epoch, index): the same sample in the same epoch gets the same draw,
    whichever worker loads it and whether or not the run was resumed."""
    digest = hashlib.blake2b(",".join(str(p) for p in parts).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")
