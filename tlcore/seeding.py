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


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of the training loader's generator for one epoch (its shuffling and batch sampling)."""
    return seed * 100_003 + epoch


def sample_seed(*parts: int) -> int:
    """A 32-bit seed from (run seed, epoch, index): the same sample in the same epoch gets the same draw,
    whichever worker loads it and whether or not the run was resumed."""
    digest = hashlib.blake2b(",".join(str(p) for p in parts).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


class EpochSeeded:
    """For datasets and batch samplers whose random draws depend only on (seed, epoch, index).

    The engine calls ``set_epoch`` before each epoch; ``draw_seed(index)`` gives the seed of one
    sample's (or one epoch's, without an index) random draws, the same in every worker and after
    ``--resume``.
    """

    seed: int = 0
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def draw_seed(self, *index: int) -> int:
        return sample_seed(self.seed, self.epoch, *index)
