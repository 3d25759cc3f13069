"""Tokenizing once, no fixed padding to 128, dynamic padding, length-sorted evaluation and grouped batches."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from tlapp_text import models as B
from tlapp_text import task as text_task
from tlapp_text.datasets import LengthGroupedBatchSampler, PadCollate, TokenizedTexts, encode

from text_helpers import small_corpus, task_job, write_csv


def test_shipped_tokenizer_pads_to_128_but_ours_does_not(tokenizer):
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(B.minilm_path() / "tokenizer.json"))
    assert len(raw.encode("hi").ids) == 128  # what tokenizer.json asks for, and what we must undo
    assert tokenizer.backend_tokenizer.padding is None and tokenizer.backend_tokenizer.truncation is None
    assert len(tokenizer.backend_tokenizer.encode("hi").ids) == 3
    ids = encode(tokenizer, ["hi", "where is my parcel today"], max_length=512).ids
    assert [len(x) for x in ids] == [3, 7]


def test_collate_pads_each_batch_to_its_longest_text(tokenizer):
    texts = ["hi", "where is my parcel", "a much longer text about a refund that has not arrived after weeks"]
    ids = encode(tokenizer, texts, max_length=512).ids
    collate = PadCollate(tokenizer.pad_token_id)
    data = TokenizedTexts(ids, [0, 1, 2])
    short, _ = collate([data[0], data[1]])
    assert short["input_ids"].shape == (2, len(ids[1]))
    everything, target = collate([data[i] for i in range(3)])
    assert everything["input_ids"].shape == (3, len(ids[2]))
    assert everything["attention_mask"].sum(1).tolist() == [len(x) for x in ids]
    assert (everything["input_ids"][0, len(ids[0]):] == tokenizer.pad_token_id).all()
    assert target.tolist() == [0, 1, 2]
    alone = collate([data.ids[0]])  # unlabelled (prediction) batches: inputs only
    assert set(alone) == {"input_ids", "attention_mask"} and alone["input_ids"].shape == (1, 3)


def test_padding_does_not_change_a_texts_features():
    torch.manual_seed(0)
    encoder = B.build_encoder(B.MINILM).eval()
    ids = torch.tensor([[101, 7592, 2088, 102]])
    padded = torch.tensor([[101, 7592, 2088, 102, 0, 0, 0]])
    with torch.no_grad():
        a = encoder({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
        b = encoder({"input_ids": padded, "attention_mask": (padded != 0).long()})
    assert torch.allclose(a, b, atol=1e-5)


def test_texts_are_tokenized_once_at_build_time(tmp_path, monkeypatch):
    write_csv(tmp_path / "train.csv", small_corpus(6))
    write_csv(tmp_path / "val.csv", small_corpus(2))
    calls = []
    real = text_task.encode
    monkeypatch.setattr(text_task, "encode", lambda *a, **k: calls.append(1) or real(*a, **k))
    task, job, context = task_job({"path": str(tmp_path)})
    data = task.build_data(job, context)
    assert len(calls) == 3  # train, val, test
    loader = DataLoader(data.train, batch_size=4, shuffle=True, collate_fn=data.collate_fn)
    for _epoch in range(2):
        widths = [batch[0]["input_ids"].shape[1] for batch in loader]
    assert len(calls) == 3 and widths
    assert isinstance(data.train[0][0], torch.Tensor)


def test_evaluation_splits_are_served_shortest_first(tmp_path):
    rows = small_corpus(4)
    rows[1][0] = "a very long question about my invoice and the refund and the charge and the fee"
    write_csv(tmp_path / "train.csv", rows)
    write_csv(tmp_path / "val.csv", rows)
    task, job, context = task_job({"path": str(tmp_path)})
    data = task.build_data(job, context)
    lengths = data.val.lengths
    assert lengths == sorted(lengths) and lengths != data.train.lengths
    assert sorted(data.val.order) == list(range(len(rows)))


def test_length_grouped_batches_cover_every_text_once_and_reduce_padding():
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(5, 200, (1000,), generator=gen).tolist()
    sampler_gen = torch.Generator()
    sampler = LengthGroupedBatchSampler(lengths, batch_size=16, generator=sampler_gen.manual_seed(3),
                                        pool_batches=10)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 63
    assert sorted(i for b in batches for i in b) == list(range(1000))

    def padding(bs):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in bs)

    order = torch.randperm(1000, generator=gen).tolist()
    random_batches = [order[i:i + 16] for i in range(0, 1000, 16)]
    assert padding(batches) < 0.25 * padding(random_batches)
    sampler_gen.manual_seed(3)
    assert list(sampler) == batches  # reproducible for the same seed (as the engine reseeds each epoch)
    sampler_gen.manual_seed(4)
    assert list(sampler) != batches  # different the next epoch
    assert sum(len(b) != 16 for b in batches) == 1  # only the last pool ends in a short batch
