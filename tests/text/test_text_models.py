"""Text backbones: built from config without weights, really pretrained weights, groups, hf-auto, offline errors."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from tlcore import ConfigError, TlappError, downloads
from tlcore.strategies import check_groups
from tlcore.transfer import initialise
from tlapp_text import models as B
from tlapp_text import plugin
from tlapp_text.datasets import PadCollate, encode

from text_helpers import task_job

PARCEL = "My parcel has not been delivered yet"
PARAPHRASE = "The package I ordered still hasn't arrived"
UNRELATED = ["How do I change my password?", "I was billed twice for one purchase"]


def registered() -> dict[str, B.TextBackbone]:
    got = []
    plugin.register_backbones(register=got.append)
    return {b.name: b for b in got}


def features(encoder, tokenizer, texts) -> torch.Tensor:
    ids = encode(tokenizer, texts, 512).ids
    with torch.no_grad():
        return F.normalize(encoder.eval()(PadCollate(tokenizer.pad_token_id)([torch.tensor(x) for x in ids])), dim=1)


def similarity_gap(encoder, tokenizer) -> float:
    """cos(text, its paraphrase) minus the highest cos(text, an unrelated text)."""
    f = features(encoder, tokenizer, [PARCEL, PARAPHRASE, *UNRELATED])
    sims = f[0] @ f.T
    return float(sims[1] - sims[2:].max())


def test_build_makes_random_weights_and_the_pretrained_loader_brings_the_real_ones(tokenizer):
    from safetensors.torch import load_file

    backbone = registered()[B.MINILM]
    encoder = backbone.build()
    assert encoder.num_features == 384
    shipped = load_file(str(B.minilm_path() / "model.safetensors"))
    word = "transformer.embeddings.word_embeddings.weight"
    assert not torch.equal(encoder.state_dict()[word], shipped["embeddings.word_embeddings.weight"])
    random_gap = similarity_gap(encoder, tokenizer)

    state = backbone.weights["pretrained"](encoder)
    assert list(state) == list(encoder.state_dict())  # every tensor, under the module's own names
    report = initialise(encoder, encoder, backbone, "pretrained")
    assert report.loaded == len(encoder.state_dict()) == 101 and not report.skipped and not report.not_initialised
    for key, tensor in encoder.state_dict().items():
        assert torch.equal(tensor, shipped[key.removeprefix("transformer.")]), key

    # Really pretrained: a paraphrase lies much closer than unrelated tickets; random weights see no difference.
    pretrained_gap = similarity_gap(encoder, tokenizer)
    assert pretrained_gap > 0.25, pretrained_gap
    assert abs(random_gap) < 0.1, random_gap


def test_pooling_options(tokenizer):
    torch.manual_seed(0)
    mean = B.build_encoder(B.MINILM)
    cls = B.build_encoder(B.MINILM, pooling="cls")
    cls.load_state_dict(mean.state_dict())
    batch = PadCollate(0)([torch.tensor(x) for x in encode(tokenizer, ["hi there", "a longer one here"], 512).ids])
    with torch.no_grad():
        hidden = mean.eval().transformer(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        assert torch.allclose(mean(batch), (hidden * mask).sum(1) / mask.sum(1), atol=1e-5)
        assert torch.allclose(cls.eval()(batch), hidden[:, 0], atol=1e-5)
    pooler = B.build_encoder(B.MINILM, pooling="pooler")
    assert pooler.transformer.pooler is not None and mean.transformer.pooler is None
    with pytest.raises(ConfigError, match="unknown pooling 'max'"):
        B.build_encoder(B.MINILM, pooling="max")
    with pytest.raises(ConfigError, match="takes no path"):
        B.build_encoder(B.MINILM, path="somewhere")


@pytest.mark.parametrize("pooling,expected", [
    ("mean", ["embeddings", *[f"encoder.layer.{i}" for i in range(6)], "head"]),
    ("pooler", ["embeddings", *[f"encoder.layer.{i}" for i in range(6)], "pooler", "head"]),
])
def test_parameter_groups_partition_the_model_from_input_to_output(pooling, expected, tmp_path):
    task, job, context = task_job({"path": str(tmp_path)}, model={"backbone_options": {"pooling": pooling}})
    model = task.build_model(job, 4, context)
    groups = model.parameter_groups()
    assert [g.name for g in groups] == expected
    assert [g.is_head for g in groups] == [False] * (len(expected) - 1) + [True]
    check_groups(model, groups)  # every parameter in exactly one group
    assert sum(p.numel() for g in groups for p in g.parameters()) == sum(p.numel() for p in model.parameters())


def test_parameter_groups_of_other_encoders():
    from transformers import AutoModel, DistilBertConfig

    model = AutoModel.from_config(DistilBertConfig(n_layers=2, dim=32, hidden_dim=64, n_heads=2, vocab_size=100))
    groups = B.parameter_groups(model)
    assert [g.name for g in groups] == ["embeddings", "transformer.layer.0", "transformer.layer.1"]
    ids = [id(p) for g in groups for p in g.parameters()]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}


def test_hf_auto_loads_a_local_folder_like_the_shipped_backbone(tokenizer):
    folder = str(B.minilm_path())
    backbone = registered()[B.HF_AUTO]
    encoder = backbone.build(path=folder)
    state = backbone.weights["pretrained"](encoder)
    assert len(state) == 101
    assert backbone.tokenizer(path=folder)("hello world")["input_ids"] == tokenizer("hello world")["input_ids"]
    with pytest.raises(ConfigError, match="needs model.backbone_options.path"):
        backbone.build()


def test_hf_auto_fails_clearly_offline_and_on_missing_folders(monkeypatch, tmp_path):
    backbone = registered()[B.HF_AUTO]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(TlappError) as err:
        backbone.build(path="tlapp-tests/no-such-model")
    assert time.perf_counter() - started < 10
    assert "downloads are switched off (HF_HUB_OFFLINE=1)" in str(err.value)
    assert "local folder" in err.value.fix and B.MINILM in err.value.fix
    with pytest.raises(TlappError, match="model folder not found"):
        backbone.build(path=str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TlappError, match="cannot load the config"):
        backbone.build(path=str(tmp_path / "empty"))

    # Without the offline switch, an unreachable hub fails within the probe's timeout.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(downloads, "unreachable", lambda url: "offline? cannot reach huggingface.co:443")
    with pytest.raises(TlappError, match="cannot reach huggingface.co"):
        backbone.tokenizer(path="tlapp-tests/no-such-model")


def test_hf_auto_offline_through_the_cli(tlapp, tmp_path, monkeypatch):
    monkeypatch.setenv("TLAPP_OFFLINE", "1")
    code, _, err = tlapp("run", "--plugin", "text", "--epochs", "1", "--set", "model.backbone=hf-auto",
                         "--set", "model.backbone_options.path=tlapp-tests/no-such-model")
    assert code == 2 and "downloads are switched off (TLAPP_OFFLINE=1)" in err and "Traceback" not in err
