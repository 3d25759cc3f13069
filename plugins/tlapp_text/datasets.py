"""Token ids computed once, datasets over them, dynamic padding and length-grouped batches."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Dataset, Sampler

from tlcore import EpochSeeded

from .models import quiet_transformers

STRONG_RATE = 0.15  # share of a text's ordinary tokens the strong view masks (BERT's masking rate)


@dataclass
class Encoded:
    """Token ids (special tokens included, truncated to ``max_length``) and which texts were cut."""

    ids: list[list[int]]
    truncated: list[bool]
    max_length: int

    @property
    def lengths(self) -> list[int]:
        return [len(x) for x in self.ids]


def encode(tokenizer, texts: Sequence[str], max_length: int) -> Encoded:
    """Tokenize every text once; texts longer than ``max_length`` tokens are truncated and flagged.

    Lengths are measured without truncation first, so the count of truncated texts is
    exact; only those texts are tokenized a second time, with truncation.
    """
    texts = list(texts)
    if not texts:
        return Encoded([], [], max_length)
    common = dict(add_special_tokens=True, padding=False, return_attention_mask=False,
                  return_token_type_ids=False)
    with quiet_transformers():
        ids = tokenizer(texts, truncation=False, **common)["input_ids"]
        long = [i for i, x in enumerate(ids) if len(x) > max_length]
        if long:
            cut = tokenizer([texts[i] for i in long], truncation=True, max_length=max_length, **common)["input_ids"]
            for i, x in zip(long, cut):
                ids[i] = x
    flags = [False] * len(texts)
    for i in long:
        flags[i] = True
    return Encoded([list(x) for x in ids], flags, max_length)


def length_stats(lengths: Sequence[int]) -> dict[str, float | int]:
    if not lengths:
        return {"count": 0}
    ordered = sorted(lengths)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return {"count": len(ordered), "min": ordered[0], "mean": round(statistics.fmean(ordered), 2),
            "median": statistics.median(ordered), "p95": p95, "max": ordered[-1]}


class TokenizedTexts(Dataset):
    """Cached token ids and targets; items are ``(ids, target)``, or ``ids`` alone when unlabelled.

    A target is a class index, a tuple of 0/1 (multi-label), or for a multi-task job a dict task -> tensor
    (``tlcore.multitask_targets``), served as it is.

    ``order`` lists the texts' positions in the order the dataset serves them; the
    evaluation splits are served shortest first so that consecutive batches hold
    texts of similar length (less padding), which leaves metrics unchanged.
    """

    def __init__(self, ids: list[list[int]], targets: list[Any] | None = None, sort_by_length: bool = False,
                 texts: list[str] | None = None):
        order = list(range(len(ids)))
        if sort_by_length:
            order.sort(key=lambda i: len(ids[i]))
        self.order = order
        self.ids = [torch.tensor(ids[i], dtype=torch.long) for i in order]
        self.targets = None if targets is None else [targets[i] for i in order]
        # the raw texts, in the served order: what compare's classical baseline reads
        self.texts = None if texts is None else [texts[i] for i in order]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> list[int]:
        return [len(x) for x in self.ids]

    def __getitem__(self, index: int):
        if self.targets is None:
            return self.ids[index]
        target = self.targets[index]
        if isinstance(target, dict):
            return self.ids[index], target
        return self.ids[index], (torch.tensor(target, dtype=torch.float32) if isinstance(target, tuple)
                                 else int(target))


class PadCollate:
    """Pads a batch to its own longest text (dynamic padding) and builds the attention mask.

    ``[(ids, target), ...] -> ({"input_ids", "attention_mask"}, targets)``; unlabelled
    batches (ids only) give the inputs dict alone. Multi-task targets (a dict per text) give a dict
    task -> the batch's targets, as ``tlcore.multitask`` expects. Items whose ids are a tuple of views
    (``UnlabelledTexts`` with two views) give a tuple of inputs dicts, one per view, each padded on its own.
    """

    def __init__(self, pad_id: int):
        self.pad_id = int(pad_id)

    def pad(self, seqs: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        width = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            input_ids[row, :len(s)] = s
            mask[row, :len(s)] = 1
        return {"input_ids": input_ids, "attention_mask": mask}

    def __call__(self, batch: list[Any]):
        labelled = isinstance(batch[0], tuple)
        seqs = [item[0] for item in batch] if labelled else list(batch)
        inputs: Any = (tuple(self.pad([s[view] for s in seqs]) for view in range(len(seqs[0])))
                       if isinstance(seqs[0], tuple) else self.pad(seqs))
        if not labelled:
            return inputs
        targets = [item[1] for item in batch]
        if isinstance(targets[0], dict):
            return inputs, {task: torch.stack([t[task] for t in targets]) for task in targets[0]}
        target = torch.stack(targets) if isinstance(targets[0], torch.Tensor) else torch.tensor(targets)
        return inputs, target


class UnlabelledTexts(EpochSeeded, Dataset):
    """Token ids of unlabelled texts with their hidden labels (a class index, or ``tlcore.MISSING``): items are
    ``(ids, hidden)``, or with two views ``((weak, strong), hidden)``.

    The weak view is the text as training sees it (the text task does not augment). The strong view masks
    ``STRONG_RATE`` of the text's ordinary tokens (at least one), chosen from ``(seed, epoch, index)``, with
    ``mask_id``; without one (a tokenizer that has no mask token) it drops them instead. Special tokens
    (``[CLS]``, ``[SEP]``, ``[UNK]``) stay.
    """

    def __init__(self, ids: list[list[int]], hidden: list[int], *, views: int = 1, seed: int = 0,
                 mask_id: int | None = None, special_ids: Sequence[int] = ()):
        self.ids = [torch.tensor(x, dtype=torch.long) for x in ids]
        self.hidden = list(hidden)
        self.views, self.seed, self.epoch = views, seed, 0
        self.mask_id = mask_id
        self.special = torch.tensor(sorted(set(special_ids)), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        ids = self.ids[index]
        if self.views == 1:
            return ids, self.hidden[index]
        return (ids, self.strong(ids, index)), self.hidden[index]

    def strong(self, ids: torch.Tensor, index: int) -> torch.Tensor:
        ordinary = torch.nonzero(~torch.isin(ids, self.special)).flatten()
        if not len(ordinary):
            return ids.clone()
        generator = torch.Generator().manual_seed(self.draw_seed(index))
        count = max(1, round(STRONG_RATE * len(ordinary)))
        chosen = ordinary[torch.randperm(len(ordinary), generator=generator)[:count]]
        if self.mask_id is None:
            keep = torch.ones(len(ids), dtype=torch.bool)
            keep[chosen] = False
            return ids[keep]
        out = ids.clone()
        out[chosen] = self.mask_id
        return out


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Random batches of texts of similar length, different every epoch and reproducible.

    Each pass: shuffle, cut into pools of ``batch_size * pool_batches`` texts, sort each
    pool by length, cut it into batches, and shuffle the order of all batches. Every
    text appears exactly once. All randomness comes from ``generator``, which the engine
    reseeds every epoch, so resumed runs see the same batches.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, generator: torch.Generator,
                 pool_batches: int = 50, drop_last: bool = False):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.generator = generator
        self.pool_batches = pool_batches
        self.drop_last = drop_last

    def __len__(self) -> int:
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        gen = self.generator
        order = torch.randperm(len(self.lengths), generator=gen).tolist()
        pool = self.batch_size * self.pool_batches
        batches: list[list[int]] = []
        for start in range(0, len(order), pool):
            chunk = sorted(order[start:start + pool], key=lambda i: self.lengths[i])
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        for i in torch.randperm(len(batches), generator=gen).tolist():
            yield batches[i]
