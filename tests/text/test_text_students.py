"""Text encoders cut short by ``layers``: smaller students for distillation that start from the pretrained layers."""

from __future__ import annotations

import pytest
import torch

from tlcore import ConfigError
from tlcore.strategies import check_groups
from tlcore.transfer import initialise
from tlapp_text import models as B
from tlapp_text import plugin
from tlapp_text.datasets import PadCollate, encode

from text_helpers import task_job

TEXTS = ["my parcel never arrived", "how do I reset my password?", "billed twice"]


def registered() -> dict[str, B.TextBackbone]:
    got = []
    plugin.register_backbones(register=got.append)
    return {b.name: b for b in got}


def size(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def shipped() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(B.minilm_path() / "model.safetensors"))


@pytest.fixture(scope="module")
def batch(tokenizer) -> dict[str, torch.Tensor]:
    return PadCollate(tokenizer.pad_token_id)([torch.tensor(x) for x in encode(tokenizer, TEXTS, 64).ids])


def test_default_is_the_whole_model_as_before():
    backbone = registered()[B.MINILM]
    keys = list(backbone.build().state_dict())
    assert len(keys) == 101
    assert list(backbone.build(layers=None).state_dict()) == list(backbone.build(layers=6).state_dict()) == keys
    assert "layers=1..6" in backbone.description and "layers" in registered()[B.HF_AUTO].description


@pytest.mark.parametrize("layers", [3, 1])
def test_a_cut_model_loads_the_full_models_pretrained_tensors(layers, shipped, batch):
    backbone = registered()[B.MINILM]
    student = backbone.build(layers=layers).eval()
    assert student.transformer.config.num_hidden_layers == layers
    keys = list(student.state_dict())
    blocks = {k.split(".")[3] for k in keys if k.startswith("transformer.encoder.layer.")}
    assert blocks == {str(i) for i in range(layers)}

    report = initialise(student, student, backbone, "pretrained")
    assert report.loaded == len(keys) and not report.skipped and not report.not_initialised
    for key, tensor in student.state_dict().items():
        assert torch.equal(tensor, shipped[key.removeprefix("transformer.")]), key

    # The student computes what the teacher's first layers compute.
    teacher = backbone.build().eval()
    initialise(teacher, teacher, backbone, "pretrained")
    with torch.no_grad():
        inner = teacher.transformer(**batch, output_hidden_states=True).hidden_states[layers]
        assert torch.allclose(student.transformer(**batch).last_hidden_state, inner, atol=1e-5)


@pytest.mark.parametrize("layers", [3, 2, 1])
def test_a_cut_model_is_smaller_with_the_same_width_and_inputs(layers, tokenizer, batch):
    backbone = registered()[B.MINILM]
    student = backbone.build(layers=layers).eval()
    assert size(student) < size(backbone.build())
    assert student.num_features == 384
    with torch.no_grad():
        assert student(batch).shape == (len(TEXTS), 384)
    # A student shares its teacher's tokenizer, hence its inputs.
    assert backbone.tokenizer(layers=layers)(TEXTS)["input_ids"] == tokenizer(TEXTS)["input_ids"]


def test_hf_auto_takes_layers_too():
    backbone = registered()[B.HF_AUTO]
    folder = str(B.minilm_path())
    student = backbone.build(path=folder, layers=2)
    assert student.transformer.config.num_hidden_layers == 2
    assert len(backbone.weights["pretrained"](student)) == len(student.state_dict()) == 37
    with pytest.raises(ConfigError, match="layers = 1..6"):
        backbone.build(path=folder, layers=12)


@pytest.mark.parametrize("pooling,expected", [
    ("mean", ["embeddings", "encoder.layer.0", "encoder.layer.1", "head"]),
    ("pooler", ["embeddings", "encoder.layer.0", "encoder.layer.1", "pooler", "head"]),
])
def test_parameter_groups_of_a_cut_model(pooling, expected, tmp_path):
    task, job, context = task_job({"path": str(tmp_path)},
                                  model={"backbone_options": {"pooling": pooling, "layers": 2}})
    model = task.build_model(job, 4, context)
    groups = model.parameter_groups()
    assert [g.name for g in groups] == expected
    check_groups(model, groups)  # every parameter in exactly one group


@pytest.mark.parametrize("bad,range_", [(0, "1..num_hidden_layers"), (-2, "1..num_hidden_layers"),
                                        ("x", "1..num_hidden_layers"), (True, "1..num_hidden_layers"),
                                        (2.0, "1..num_hidden_layers"), (7, "1..6")])
def test_bad_layers_are_refused_naming_the_option_and_its_range(bad, range_):
    with pytest.raises(ConfigError) as info:
        registered()[B.MINILM].build(layers=bad)
    text = str(info.value)
    assert "model.backbone_options.layers" in text and range_ in text and repr(bad) in text
