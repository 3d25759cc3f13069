"""efficientnet_lite0 cut short by ``stages``: small students for distillation that start from the pretrained stages."""

from __future__ import annotations

import pytest
import torch

from tlcore import Backbone, ConfigError
from tlcore.strategies import check_groups
from tlcore.transfer import initialise
from tlapp_vision import models as B
from tlapp_vision import plugin
from tlapp_vision.lite0_weights import LITE0, LITE0_ARCH, lite0_state_dict

# Output channels of the last kept stage.
WIDTH = {1: 16, 2: 24, 3: 40, 4: 80, 5: 112, 6: 192, 7: 1280}


def lite0() -> Backbone:
    got: list[Backbone] = []
    plugin.register_backbones(register=got.append)
    return next(b for b in got if b.name == LITE0)


@pytest.fixture(scope="module")
def shipped() -> dict[str, torch.Tensor]:
    return lite0_state_dict()


@pytest.fixture(scope="module")
def teacher(shipped) -> torch.nn.Module:
    """The whole pretrained network, as ``--init imagenet`` makes it."""
    module = lite0().build().eval()
    module.load_state_dict(B.load_lite0_imagenet(module))
    return module


def test_default_is_the_whole_network_as_before():
    import timm

    old = timm.create_model(LITE0_ARCH, pretrained=False, num_classes=0)
    for module in (lite0().build(), lite0().build(stages=7), lite0().build(stages=None)):
        assert {k: v.shape for k, v in module.state_dict().items()} == {k: v.shape for k, v in old.state_dict().items()}
        assert module.num_features == 1280
        assert isinstance(module.conv_head, torch.nn.Conv2d) and len(module.blocks) == 7
    assert "stages=1..7" in lite0().description


@pytest.mark.parametrize("stages", [6, 5, 1])
def test_a_cut_network_loads_the_full_networks_pretrained_tensors(stages, shipped, teacher):
    backbone = lite0()
    student = backbone.build(stages=stages).eval()
    keys = list(student.state_dict())
    assert set(keys) < set(teacher.state_dict())
    assert not any(k.startswith(("conv_head", "bn2")) for k in keys)
    assert {k.split(".")[1] for k in keys if k.startswith("blocks.")} == {str(i) for i in range(stages)}

    report = initialise(student, student, backbone, "imagenet")
    assert report.loaded == len(keys) and not report.skipped and not report.not_initialised
    for key, tensor in student.state_dict().items():
        assert torch.equal(tensor, shipped[key]), key

    # The student computes what the teacher's first stages compute, pooled.
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        inner = teacher.blocks[:stages](teacher.bn1(teacher.conv_stem(x)))
        assert torch.allclose(student.forward_features(x), inner, atol=1e-5)
        assert torch.allclose(student(x), inner.mean(dim=(2, 3)), atol=1e-5)


@pytest.mark.parametrize("stages", [6, 5, 4, 1])
def test_a_cut_network_is_smaller_with_the_last_stages_width(stages):
    full = sum(p.numel() for p in lite0().build().parameters())
    student = lite0().build(stages=stages).eval()
    assert sum(p.numel() for p in student.parameters()) < full
    assert student.num_features == WIDTH[stages]
    with torch.no_grad():
        assert student(torch.randn(2, 3, 64, 64)).shape == (2, WIDTH[stages])


@pytest.mark.parametrize("stages", [7, 5, 1])
def test_parameter_groups_of_a_cut_network(stages):
    backbone = lite0()
    student = backbone.build(stages=stages)
    groups = backbone.parameter_groups(student)
    expected = ["stem"] + [f"blocks.{i}" for i in range(stages)] + (["conv_head"] if stages == 7 else [])
    assert [g.name for g in groups] == expected
    check_groups(student, groups)  # every parameter in exactly one group


@pytest.mark.parametrize("bad", [0, 8, -1, "x", True, 5.0])
def test_bad_stages_are_refused_naming_the_option_and_its_range(bad):
    with pytest.raises(ConfigError) as info:
        lite0().build(stages=bad)
    text = str(info.value)
    assert "model.backbone_options.stages" in text and "1..7" in text and repr(bad) in text
