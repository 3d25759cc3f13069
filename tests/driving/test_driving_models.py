"""Detectors: parameter groups, frozen stages and batch norm, anchors, weight loaders (offline)."""

from __future__ import annotations

import os
import time

import pytest
import torch
from torch import nn

from tlapp_driving import models
from tlapp_driving.models import DetectionModel, build_lite0_fpn, build_mobilenet_v3_fpn, build_resnet50_fpn_v2
from tlcore import ConfigError, TlappError, downloads
from tlcore.plugins import load_plugins
from tlcore.strategies import check_groups
from tlcore.transfer import initialise

SMALL = dict(fpn_channels=32, box_head_size=32, proposals_train=20, proposals_test=20)


@pytest.fixture(scope="module")
def registry():
    return load_plugins().registry


def groups_of(detector):
    model = DetectionModel(detector)
    groups = model.parameter_groups()
    check_groups(model, groups)  # every parameter in exactly one group
    return model, groups


def test_lite0_groups_from_input_to_output_with_heads_last(registry):
    detector = build_lite0_fpn(lite0=registry.backbones["efficientnet_lite0"], num_classes=4, **SMALL)
    _, groups = groups_of(detector)
    names = [g.name for g in groups]
    assert names == ["stem"] + [f"blocks.{i}" for i in range(7)] + ["fpn", "rpn", "roi_box_head", "box_predictor"]
    assert [g.name for g in groups if g.is_head] == ["rpn", "roi_box_head", "box_predictor"]
    assert [g.name for g in groups if g.fixed] == ["stem", "blocks.0"]  # default: the top 6 of 8 stages train
    assert detector.fixed_stages == ["stem", "blocks.0"]


def test_trainable_backbone_layers_fix_the_lower_stages(registry):
    lite0 = registry.backbones["efficientnet_lite0"]
    detector = build_lite0_fpn(lite0=lite0, num_classes=4, trainable_backbone_layers=2, **SMALL)
    model, groups = groups_of(detector)
    assert [g.name for g in groups if g.fixed] == ["stem"] + [f"blocks.{i}" for i in range(5)]
    assert all(not p.requires_grad for g in groups if g.fixed for p in g.parameters())
    state = detector.state_dict()
    assert "backbone.body.net.blocks.3.0.conv_pw.weight" in state  # saved and loaded by name, as before
    # No strategy trains a fixed stage: it stays frozen, in evaluation mode and out of the optimizer.
    from tlcore.strategies import Finetune, apply_phase, optimizer_groups, plan_phases, set_train_mode

    phase = plan_phases(Finetune.from_spec({}), groups, epochs=2)[0]
    apply_phase(model, groups, phase)
    set_train_mode(model, groups, phase)
    trained = {id(p) for og in optimizer_groups(groups, phase, 0.01) for p in og["params"]}
    fixed_stage, trained_stage = detector.backbone.body.net.blocks[3], detector.backbone.body.net.blocks[5]
    assert not fixed_stage.training and not any(id(p) in trained for p in fixed_stage.parameters())
    assert trained_stage.training and all(id(p) in trained for p in trained_stage.parameters())
    # batch norm of a pretrained backbone is frozen, statistics and affine
    from timm.layers import FrozenBatchNormAct2d

    assert isinstance(detector.backbone.body.net.blocks[6][0].bn1, FrozenBatchNormAct2d)
    everything = build_lite0_fpn(lite0=lite0, num_classes=4, trainable_backbone_layers=8, **SMALL)
    assert not any(g.fixed for g in groups_of(everything)[1])
    with pytest.raises(ConfigError, match="trainable_backbone_layers"):
        build_lite0_fpn(lite0=lite0, num_classes=4, trainable_backbone_layers=9, **SMALL)


def test_scratch_trains_everything_with_ordinary_batch_norm(registry):
    detector = build_lite0_fpn(lite0=registry.backbones["efficientnet_lite0"], num_classes=4, pretrained=False,
                               trainable_backbone_layers=1, **SMALL)
    _, groups = groups_of(detector)
    assert groups[0].name == "stem"
    bns = [m for m in detector.backbone.body.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) > 40 and all(b.weight.requires_grad for b in bns)


@pytest.mark.parametrize("build,first,frozen", [
    (build_mobilenet_v3_fpn, "stage3", ["stage0", "stage1", "stage2"]),
    (build_resnet50_fpn_v2, "layer2", ["stem", "layer1"]),
])
def test_torchvision_detectors(build, first, frozen):
    from torchvision.ops import FrozenBatchNorm2d

    detector = build(num_classes=3, proposals_train=20, proposals_test=20)
    _, groups = groups_of(detector)
    assert [g.name for g in groups if g.fixed] == frozen and detector.fixed_stages == frozen
    assert [g.name for g in groups if not g.fixed][0] == first
    assert [g.name for g in groups][-4:] == ["fpn", "rpn", "roi_box_head", "box_predictor"]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in detector.backbone.body.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in detector.backbone.body.modules())
    assert detector.roi_heads.box_predictor.cls_score.out_features == 3


def test_anchor_options(registry):
    lite0 = registry.backbones["efficientnet_lite0"]
    detector = build_lite0_fpn(lite0=lite0, num_classes=4, anchor_sizes=[[8], [16], [32], [64]],
                               aspect_ratios=[0.5, 1.0, 2.0, 3.0], **SMALL)
    assert detector.rpn.anchor_generator.sizes == ((8,), (16,), (32,), (64,))
    assert detector.rpn.head.cls_logits.out_channels == 4  # one size x four ratios per location
    with pytest.raises(ConfigError, match="4 feature levels"):
        build_lite0_fpn(lite0=lite0, num_classes=4, anchor_sizes=[[8], [16]], **SMALL)
    with pytest.raises(ConfigError, match="same number"):
        build_lite0_fpn(lite0=lite0, num_classes=4, anchor_sizes=[[8], [16, 24], [32], [64]], **SMALL)


def test_lite0_detector_gets_the_offline_imagenet_weights(registry):
    lite0 = registry.backbones["efficientnet_lite0"]
    entry = registry.backbones["fasterrcnn_lite0_fpn"]
    model = DetectionModel(build_lite0_fpn(lite0=lite0, num_classes=4, trainable_backbone_layers=8, **SMALL))
    report = initialise(model, model.backbone, entry, "imagenet")
    net = model.detector.backbone.body.net
    assert report.loaded == len(net.state_dict()) > 200 and report.skipped == []
    reference = lite0.weights["imagenet"](lite0.build())
    assert torch.equal(net.blocks[3][0].conv_pw.weight, reference["blocks.3.0.conv_pw.weight"])
    assert torch.equal(net.conv_stem.weight, reference["conv_stem.weight"])
    # everything else keeps its fresh initialisation and is reported as such
    assert all(not k.startswith("detector.backbone.body.") for k in report.not_initialised)


def test_lite0_detector_without_the_vision_backbone_says_so():
    detector = build_lite0_fpn(num_classes=4, **SMALL)  # timm's architecture, no registry entry
    with pytest.raises(TlappError, match="efficientnet_lite0"):
        models.load_lite0_fpn_imagenet(detector)


def test_coco_weights_from_the_torch_hub_cache_transfer_all_but_the_predictor(tmp_path, monkeypatch, registry):
    """A COCO checkpoint in the hub cache (here: one we write) fills the whole detector but the 91-class predictor."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("TLAPP_OFFLINE", "1")
    coco = build_mobilenet_v3_fpn(num_classes=91)
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(coco.state_dict(), cache / "fasterrcnn_mobilenet_v3_large_fpn-fb6a3cc7.pth")
    model = DetectionModel(build_mobilenet_v3_fpn(num_classes=3))
    report = initialise(model, model.backbone, registry.backbones["fasterrcnn_mobilenet_v3_large_fpn"], "coco")
    skipped = sorted(s["name"] for s in report.skipped)
    assert skipped == ["roi_heads.box_predictor.bbox_pred.bias", "roi_heads.box_predictor.bbox_pred.weight",
                       "roi_heads.box_predictor.cls_score.bias", "roi_heads.box_predictor.cls_score.weight"]
    assert report.loaded == len(coco.state_dict()) - 4
    assert torch.equal(model.detector.rpn.head.cls_logits.weight, coco.rpn.head.cls_logits.weight)
    assert torch.equal(model.detector.backbone.body["5"].block[0][0].weight, coco.backbone.body["5"].block[0][0].weight)


def test_downloadable_weights_fail_fast_offline(tmp_path, monkeypatch, registry):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("TLAPP_OFFLINE", "1")
    model = DetectionModel(build_mobilenet_v3_fpn(num_classes=3))
    entry = registry.backbones["fasterrcnn_mobilenet_v3_large_fpn"]
    import torchvision.models  # noqa: F401 - imported before timing: only the loader's own work is timed

    for source in ("coco", "imagenet"):
        started = time.perf_counter()
        with pytest.raises(TlappError) as err:
            initialise(model, model.backbone, entry, source)
        assert time.perf_counter() - started < 5  # no download attempt, no long network timeout
        assert "downloads are switched off" in err.value.what and "--init none" in err.value.fix
    # without the flag, an unreachable server is detected by a short connection probe, not a long download
    monkeypatch.delenv("TLAPP_OFFLINE")
    monkeypatch.setattr(downloads, "unreachable", lambda url: f"offline? cannot reach {url}")
    with pytest.raises(TlappError, match="offline\\?"):
        initialise(model, model.backbone, entry, "coco")
    assert os.environ.get("TLAPP_OFFLINE") is None


def one_object_and_an_empty_image(registry, second_width):
    """A small detector in eval mode, two images (the second of width ``second_width``), one box in the first."""
    detector = build_lite0_fpn(lite0=registry.backbones["efficientnet_lite0"], num_classes=3, **SMALL)
    images = [torch.rand(3, 48, 96), torch.rand(3, 48, second_width)]
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 40.0, 30.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    return detector, DetectionModel(detector).eval(), images, targets


def test_validation_pass_gives_losses_and_detections_without_moving_the_rng(registry):
    detector, model, images, targets = one_object_and_an_empty_image(registry, 64)
    state = torch.get_rng_state()
    losses, detections = model.losses_and_detections(images, targets)
    assert torch.equal(state, torch.get_rng_state())
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
    assert not detector.rpn.training and not detector.roi_heads.training
    with torch.no_grad():
        plain = model(images)
    assert len(detections) == 2
    for a, b in zip(detections, plain):
        assert torch.allclose(a["boxes"], b["boxes"]) and torch.equal(a["labels"], b["labels"])


def test_per_image_losses_do_not_depend_on_the_batch(registry):
    torch.manual_seed(0)
    _, model, images, targets = one_object_and_an_empty_image(registry, 96)
    state = torch.get_rng_state()
    losses, _ = model.losses_and_detections(images, targets, per_image=True)
    assert torch.equal(state, torch.get_rng_state())
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
    assert all(v.shape == (2,) for v in losses.values())
    assert float(losses["loss_box_reg"][1]) == 0  # no objects: nothing to regress
    for i in range(2):
        alone, _ = model.losses_and_detections(images[i:i + 1], targets[i:i + 1], per_image=True)
        for name, value in alone.items():
            assert float(value[0]) == pytest.approx(float(losses[name][i]), rel=1e-4, abs=1e-6), name


@pytest.mark.parametrize("backbone,init,fpn_head", [("fasterrcnn_lite0_fpn", "imagenet", True),
                                                    ("fasterrcnn_mobilenet_v3_large_fpn", "coco", False)])
def test_heads_are_what_the_pretrained_source_does_not_provide(backbone, init, fpn_head):
    from tlcore.run import make_context, resolve_job

    plugins = load_plugins()
    task, job = resolve_job(plugins, plugin="driving", config_file=None,
                            overrides={"model": {"backbone": backbone, "init": init}})
    model = task.build_model(job, 3, make_context(plugins, job))
    heads = [g.name for g in model.parameter_groups() if g.is_head]
    assert heads == (["fpn"] if fpn_head else []) + ["rpn", "roi_box_head", "box_predictor"]
