"""Faster R-CNN detectors, registered as ``tlcore.Backbone``s, and the model the engine trains.

Three detectors (torchvision's Faster R-CNN with a box predictor for the data's
classes; background is class 0):

* ``fasterrcnn_lite0_fpn``: EfficientNet-Lite0 (the vision plugin's
  ``efficientnet_lite0``, fetched from the registry) under a feature pyramid on
  its stride 8/16/32 stages. Weights ``imagenet``: the offline ImageNet
  Lite0 weights, so detection fine-tuning starts from real features offline.
* ``fasterrcnn_mobilenet_v3_large_fpn`` and ``fasterrcnn_resnet50_fpn_v2``:
  torchvision's architectures. Weights ``coco``: the whole COCO-trained
  detector (backbone, FPN, RPN, box head; the 91-class predictor is skipped
  when the class count differs); ``imagenet``: the ImageNet classification
  backbone only. Both come from the torch hub cache, else a download; offline
  the loader fails within seconds with a ``TlappError`` saying what to do.

The network a backbone's ``build`` returns, and its weight loaders take, is the
whole detector (``torchvision.models.detection.FasterRCNN``): for a detector the
pretrained part can be everything up to the class predictor. ``DetectionModel``
wraps it; its ``backbone`` property is that detector, which is what the engine's
``tlcore.transfer.initialise`` fills by name and shape.

Pretrained detectors (every ``--init`` but ``none``) follow torchvision's
recipe for fine-tuning: batch norm in the feature extractor is frozen
(statistics and affine, ``frozen_bn``), and only the top
``trainable_backbone_layers`` stages train; the stages below are parameter
groups marked ``fixed``, which no strategy unfreezes: they stay in evaluation
mode and out of the optimizer in every phase. From scratch (``--init none``,
``--strategy scratch``) everything trains with ordinary batch norm.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable

import torch
from torch import nn
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from tlcore import IMAGENET_MEAN, IMAGENET_STD, Backbone, ConfigError, ParameterGroup, TlappError, fetch_state_dict

LITE0_ENTRY = "efficientnet_lite0"
LITE0_ARCH = "tf_efficientnet_lite0"
LITE0_LEVELS = ("blocks.2", "blocks.4", "blocks.6")  # strides 8, 16, 32


@dataclass
class DetectorOptions:
    """Everything that shapes a detector; ``DetectorSpec`` (the job's model section) fills it."""

    num_classes: int = 91  # including background
    pretrained: bool = True
    trainable_backbone_layers: int | None = None
    frozen_bn: bool = True
    anchor_sizes: list[list[int]] | None = None
    aspect_ratios: list[float] | None = None
    min_size: int | None = None  # None: each image at its own size (only shrunk beyond max_size)
    max_size: int = 1333
    fpn_channels: int | None = None
    box_head_size: int | None = None
    rpn_batch_size_per_image: int = 256
    roi_batch_size_per_image: int = 512
    proposals_train: int = 2000
    proposals_test: int = 1000
    score_threshold: float = 0.05
    nms_threshold: float = 0.5
    detections_per_image: int = 100


@dataclass
class Arch:
    name: str
    levels: int  # feature-pyramid levels the RPN sees
    default_anchor_sizes: list[list[int]]
    default_trainable: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    description: str
    weights: dict[str, Callable[[nn.Module], dict[str, torch.Tensor]]] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ parts

class Lite0Features(nn.Module):
    """The Lite0 trunk (timm ``tf_efficientnet_lite0`` without its 1280-wide head) returning 3 stages."""

    def __init__(self, net: nn.Module):
        super().__init__()
        net.conv_head = nn.Identity()
        net.bn2 = nn.Identity()
        net.global_pool = nn.Identity()
        net.classifier = nn.Identity()
        self.net = net
        channels = {info["module"]: info["num_chs"] for info in net.feature_info}
        self.in_channels_list = [channels[name] for name in LITE0_LEVELS]
        self.level_index = {int(name.split(".")[1]) for name in LITE0_LEVELS}

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        x = self.net.bn1(self.net.conv_stem(x))
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        for i, block in enumerate(self.net.blocks):
            x = block(x)
            if i in self.level_index:
                out[str(len(out))] = x
        return out


class Lite0FPN(nn.Module):
    """Lite0 stages 8/16/32 -> torchvision FeaturePyramidNetwork (+ max-pool level): 4 maps."""

    def __init__(self, body: Lite0Features, out_channels: int):
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

        self.body = body
        self.fpn = FeaturePyramidNetwork(body.in_channels_list, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor):
        return self.fpn(self.body(x))


def _frozen_norm(pretrained: bool, frozen_bn: bool):
    from torchvision.ops import FrozenBatchNorm2d

    return FrozenBatchNorm2d if pretrained and frozen_bn else nn.BatchNorm2d


class NativeSizeTransform(GeneralizedRCNNTransform):
    """torchvision's detection transform that normalises and batches (padding to a multiple of 32) without resizing.

    ``model.min_size: null`` selects it: small road images (and KITTI's 375 px
    frames) are used as they are instead of being scaled to 800 px. An image
    whose long side exceeds ``max_size`` is still shrunk to fit.
    """

    def resize(self, image, target=None):
        h, w = image.shape[-2:]
        if max(h, w) <= self.max_size:
            return image, target
        saved = self.min_size
        self.min_size = (min(h, w),)
        try:
            return super().resize(image, target)
        finally:
            self.min_size = saved


# ------------------------------------------------------------------------------------------------ stages

def backbone_stages(detector: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    """The detector's feature-extractor stages from input to output (group name, modules)."""
    body = detector.backbone.body
    if isinstance(body, Lite0Features):
        net = body.net
        return [("stem", [net.conv_stem, net.bn1])] + [(f"blocks.{i}", [b]) for i, b in enumerate(net.blocks)]
    if hasattr(body, "layer1"):  # ResNet
        return [("stem", [body.conv1, body.bn1])] + [(n, [getattr(body, n)]) for n in
                                                     ("layer1", "layer2", "layer3", "layer4")]
    children = list(body.children())  # MobileNetV3 features: stages start where the resolution halves
    starts = [0] + [i for i, b in enumerate(children) if getattr(b, "_is_cn", False)] + [len(children) - 1]
    starts = sorted(set(starts)) + [len(children)]
    return [(f"stage{j}", children[a:b]) for j, (a, b) in enumerate(zip(starts, starts[1:]))]


def detector_groups(detector: nn.Module) -> list[ParameterGroup]:
    """Parameter groups from input to output: backbone stages, fpn, rpn, roi box head, box predictor.

    The RPN, box head and box predictor are the detection heads (``is_head``);
    the feature pyramid too when the weights came from an ImageNet classifier
    (``detector.fpn_is_head``), which has none: then the heads are everything
    the pretrained source did not provide. Stages that ``trainable_backbone_layers``
    keeps as pretrained (``detector.fixed_stages``) are ``fixed`` groups.
    """
    fixed = set(getattr(detector, "fixed_stages", ()))
    groups = [ParameterGroup(name, modules, fixed=name in fixed) for name, modules in backbone_stages(detector)]
    groups += [
        ParameterGroup("fpn", [detector.backbone.fpn], is_head=bool(getattr(detector, "fpn_is_head", False))),
        ParameterGroup("rpn", [detector.rpn.head], is_head=True),
        ParameterGroup("roi_box_head", [detector.roi_heads.box_head], is_head=True),
        ParameterGroup("box_predictor", [detector.roi_heads.box_predictor], is_head=True),
    ]
    return [g for g in groups if g.parameters()]


# ------------------------------------------------------------------------------------------------ building

def _anchor_generator(arch: Arch, options: DetectorOptions):
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    sizes = options.anchor_sizes or arch.default_anchor_sizes
    ratios = options.aspect_ratios or [0.5, 1.0, 2.0]
    if len(sizes) != arch.levels:
        raise ConfigError(f"model.anchor_sizes has {len(sizes)} levels; {arch.name} has {arch.levels} "
                          f"feature levels", where="model.anchor_sizes",
                          fix=f"give one list of sizes per level, e.g. {arch.default_anchor_sizes}")
    if len({len(s) for s in sizes}) != 1 or not all(s and all(v > 0 for v in s) for s in sizes):
        raise ConfigError("model.anchor_sizes must give the same number (at least one) of positive sizes "
                          "for every level", where="model.anchor_sizes",
                          fix=f"e.g. {arch.default_anchor_sizes}")
    if not ratios or any(r <= 0 for r in ratios):
        raise ConfigError("model.aspect_ratios must be positive numbers (height / width)",
                          where="model.aspect_ratios", fix="e.g. [0.5, 1.0, 2.0]")
    return AnchorGenerator(tuple(tuple(int(v) for v in s) for s in sizes),
                           tuple(tuple(float(r) for r in ratios) for _ in sizes))


def _finish(detector: nn.Module, arch: Arch, options: DetectorOptions, mean, std) -> nn.Module:
    if options.min_size is None:
        detector.transform = NativeSizeTransform(min_size=1, max_size=options.max_size, image_mean=list(mean),
                                                 image_std=list(std))
    _limit_trainable(detector, arch, options)
    return detector


def _common_kwargs(options: DetectorOptions, mean, std) -> dict[str, Any]:
    return dict(
        min_size=options.min_size or 800, max_size=options.max_size, image_mean=list(mean), image_std=list(std),
        rpn_pre_nms_top_n_train=options.proposals_train, rpn_post_nms_top_n_train=options.proposals_train,
        rpn_pre_nms_top_n_test=options.proposals_test, rpn_post_nms_top_n_test=options.proposals_test,
        rpn_batch_size_per_image=options.rpn_batch_size_per_image,
        box_batch_size_per_image=options.roi_batch_size_per_image,
        box_score_thresh=options.score_threshold, box_nms_thresh=options.nms_threshold,
        box_detections_per_img=options.detections_per_image,
    )


def _limit_trainable(detector: nn.Module, arch: Arch, options: DetectorOptions) -> None:
    stages = backbone_stages(detector)
    if not options.pretrained:
        return  # random weights: everything trains
    k = arch.default_trainable if options.trainable_backbone_layers is None else options.trainable_backbone_layers
    if not 0 <= k <= len(stages):
        raise ConfigError(f"model.trainable_backbone_layers={k}: {arch.name} has {len(stages)} backbone stages "
                          f"({', '.join(n for n, _ in stages)})", where="model.trainable_backbone_layers",
                          fix=f"choose 0 to {len(stages)}")
    fixed = stages[:len(stages) - k]
    for _, modules in fixed:
        for module in modules:
            module.requires_grad_(False)
    detector.fixed_stages = [n for n, _ in fixed]


def build_lite0_fpn(lite0: Backbone | None = None, **kwargs: Any) -> nn.Module:
    """Faster R-CNN on EfficientNet-Lite0 + FPN. ``lite0``: the registry's ``efficientnet_lite0`` entry."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.rpn import RPNHead
    from torchvision.ops import MultiScaleRoIAlign

    options = _options(kwargs)
    arch = ARCHS["fasterrcnn_lite0_fpn"]
    if lite0 is not None:
        net = lite0.build()
        mean, std = lite0.mean, lite0.std
    else:
        import timm

        net = timm.create_model(LITE0_ARCH, pretrained=False, num_classes=0)
        mean, std = arch.mean, arch.std
    if options.pretrained and options.frozen_bn:
        from timm.layers import freeze_batch_norm_2d

        net = freeze_batch_norm_2d(net)
    channels = options.fpn_channels or 128
    representation = options.box_head_size or 256
    backbone = Lite0FPN(Lite0Features(net), channels)
    anchors = _anchor_generator(arch, options)
    detector = FasterRCNN(
        backbone,
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(channels, anchors.num_anchors_per_location()[0]),
        box_roi_pool=MultiScaleRoIAlign(featmap_names=["0", "1", "2"], output_size=7, sampling_ratio=2),
        box_head=TwoMLPHead(channels * 7 * 7, representation),
        box_predictor=FastRCNNPredictor(representation, options.num_classes),
        **_common_kwargs(options, mean, std),
    )
    detector.feature_source = lite0  # its weight loader gives the backbone's ImageNet weights
    return _finish(detector, arch, options, mean, std)


def build_mobilenet_v3_fpn(**kwargs: Any) -> nn.Module:
    """torchvision's fasterrcnn_mobilenet_v3_large_fpn layout (same tensor names as its COCO weights)."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.backbone_utils import mobilenet_backbone
    from torchvision.models.detection.rpn import RPNHead

    options = _options(kwargs)
    arch = ARCHS["fasterrcnn_mobilenet_v3_large_fpn"]
    backbone = mobilenet_backbone(backbone_name="mobilenet_v3_large", weights=None, fpn=True,
                                  norm_layer=_frozen_norm(options.pretrained, options.frozen_bn), trainable_layers=6)
    anchors = _anchor_generator(arch, options)
    detector = FasterRCNN(backbone, num_classes=options.num_classes, rpn_anchor_generator=anchors,
                          rpn_head=RPNHead(backbone.out_channels, anchors.num_anchors_per_location()[0]),
                          rpn_score_thresh=0.05, **_common_kwargs(options, arch.mean, arch.std))
    return _finish(detector, arch, options, arch.mean, arch.std)


def build_resnet50_fpn_v2(**kwargs: Any) -> nn.Module:
    """torchvision's fasterrcnn_resnet50_fpn_v2 layout (same tensor names as its COCO weights)."""
    from torchvision.models import resnet50
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead
    from torchvision.models.detection.rpn import RPNHead
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    options = _options(kwargs)
    arch = ARCHS["fasterrcnn_resnet50_fpn_v2"]
    body = resnet50(weights=None, norm_layer=_frozen_norm(options.pretrained, options.frozen_bn))
    backbone = BackboneWithFPN(body, {f"layer{i}": str(i - 1) for i in range(1, 5)}, [256, 512, 1024, 2048], 256,
                               extra_blocks=LastLevelMaxPool(), norm_layer=nn.BatchNorm2d)
    anchors = _anchor_generator(arch, options)
    detector = FasterRCNN(
        backbone, num_classes=options.num_classes, rpn_anchor_generator=anchors,
        rpn_head=RPNHead(256, anchors.num_anchors_per_location()[0], conv_depth=2),
        box_head=FastRCNNConvFCHead((256, 7, 7), [256, 256, 256, 256], [1024], norm_layer=nn.BatchNorm2d),
        **_common_kwargs(options, arch.mean, arch.std),
    )
    return _finish(detector, arch, options, arch.mean, arch.std)


def _options(kwargs: dict[str, Any]) -> DetectorOptions:
    try:
        return DetectorOptions(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad detector option: {exc}", where="model.backbone_options",
                          fix=f"options: {', '.join(DetectorOptions.__dataclass_fields__)}") from None


# ------------------------------------------------------------------------------------------------ weights

# What a user without network access can do instead of downloading torchvision's weights.
OFFLINE_ALTERNATIVES = ("copy the file into the torch hub cache, or start from --init file:PATH, --init none, or the "
                        "offline backbone fasterrcnn_lite0_fpn (--set model.backbone=fasterrcnn_lite0_fpn "
                        "--init imagenet)")


def torchvision_state(name: str, source: str, model_name: str, tag: str) -> dict[str, torch.Tensor]:
    """A torchvision weights file: the torch hub cache first, else a download (failing fast offline)."""
    from torchvision.models import get_model_weights

    url = get_model_weights(model_name)[tag].url
    return fetch_state_dict(url, f"the {source} weights of {name!r}", otherwise=OFFLINE_ALTERNATIVES)


def _fit(module: nn.Module, state: dict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """Drop batch-norm counters the module does not keep (frozen batch norm has none)."""
    own = module.state_dict()
    return OrderedDict((k, v) for k, v in state.items()
                       if not (k.endswith("num_batches_tracked") and k not in own))


def coco_loader(name: str, model_name: str) -> Callable[[nn.Module], dict[str, torch.Tensor]]:
    def load(detector: nn.Module) -> dict[str, torch.Tensor]:
        return _fit(detector, torchvision_state(name, "COCO", model_name, "COCO_V1"))
    return load


def imagenet_loader(name: str, model_name: str, rename: Callable[[str], str | None]):
    def load(detector: nn.Module) -> dict[str, torch.Tensor]:
        state = torchvision_state(name, "ImageNet", model_name, "IMAGENET1K_V1")
        mapped = OrderedDict()
        for key, value in state.items():
            new = rename(key)
            if new is not None:
                mapped["backbone.body." + new] = value
        return _fit(detector, mapped)
    return load


def load_lite0_fpn_imagenet(detector: nn.Module) -> dict[str, torch.Tensor]:
    """The vision plugin's offline ImageNet Lite0 weights, keyed as in the detector."""
    source = getattr(detector, "feature_source", None)
    if source is None or "imagenet" not in getattr(source, "weights", {}):
        raise TlappError("fasterrcnn_lite0_fpn gets its ImageNet weights from the backbone "
                         f"{LITE0_ENTRY!r}, which this detector was built without",
                         where="model.init",
                         fix="build it through the driving task with the vision plugin loaded "
                             "(check `tlapp plugins`, TLAPP_PLUGINS), or use --init none / file:PATH")
    net = detector.backbone.body.net
    state = source.weights["imagenet"](net)
    return OrderedDict(("backbone.body.net." + k, v) for k, v in state.items())


ARCHS: dict[str, Arch] = {
    "fasterrcnn_lite0_fpn": Arch(
        "fasterrcnn_lite0_fpn", levels=4, default_anchor_sizes=[[16, 24], [32, 48], [64, 96], [128, 192]],
        default_trainable=6, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
        description="Faster R-CNN on EfficientNet-Lite0 + FPN (strides 8-64); weights imagenet: the offline "
                    "ImageNet Lite0 backbone (needs the vision plugin)",
        weights={"imagenet": load_lite0_fpn_imagenet}),
    "fasterrcnn_mobilenet_v3_large_fpn": Arch(
        "fasterrcnn_mobilenet_v3_large_fpn", levels=3, default_anchor_sizes=[[32, 64, 128, 256, 512]] * 3,
        default_trainable=3, mean=IMAGENET_MEAN, std=IMAGENET_STD,
        description="torchvision Faster R-CNN MobileNetV3-Large FPN; weights coco (whole detector) or imagenet "
                    "(backbone), downloaded by torchvision on first use",
        weights={"coco": coco_loader("fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_mobilenet_v3_large_fpn"),
                 "imagenet": imagenet_loader("fasterrcnn_mobilenet_v3_large_fpn", "mobilenet_v3_large",
                                             lambda k: k[len("features."):] if k.startswith("features.") else None)}),
    "fasterrcnn_resnet50_fpn_v2": Arch(
        "fasterrcnn_resnet50_fpn_v2", levels=5, default_anchor_sizes=[[32], [64], [128], [256], [512]],
        default_trainable=3, mean=IMAGENET_MEAN, std=IMAGENET_STD,
        description="torchvision Faster R-CNN ResNet-50 FPN v2; weights coco (whole detector) or imagenet "
                    "(backbone), downloaded by torchvision on first use",
        weights={"coco": coco_loader("fasterrcnn_resnet50_fpn_v2", "fasterrcnn_resnet50_fpn_v2"),
                 "imagenet": imagenet_loader("fasterrcnn_resnet50_fpn_v2", "resnet50",
                                             lambda k: None if k.startswith("fc.") else k)}),
}
BUILDERS = {
    "fasterrcnn_lite0_fpn": build_lite0_fpn,
    "fasterrcnn_mobilenet_v3_large_fpn": build_mobilenet_v3_fpn,
    "fasterrcnn_resnet50_fpn_v2": build_resnet50_fpn_v2,
}


def detector_backbones() -> list[Backbone]:
    return [Backbone(name=name, build=BUILDERS[name], weights=dict(arch.weights), parameter_groups=detector_groups,
                     mean=arch.mean, std=arch.std, description=arch.description)
            for name, arch in ARCHS.items()]


# ------------------------------------------------------------------------------------------------ the model

@contextlib.contextmanager
def _loss_mode(*modules: nn.Module):
    """Let the RPN and RoI heads compute their training losses (their own flag only: batch norm stays eval)."""
    before = [m.training for m in modules]
    for m in modules:
        m.training = True
    try:
        yield
    finally:
        for m, flag in zip(modules, before):
            m.training = flag


class DetectionModel(nn.Module):
    """A torchvision detector plus what the engine needs: ``backbone`` and ``parameter_groups()``.

    ``forward(images, targets)`` in training mode returns the loss dict, in
    evaluation mode the detections (boxes in input pixels, labels 1..K, scores).
    """

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    @property
    def backbone(self) -> nn.Module:
        """The pretrained network the registered backbone's weights apply to: the whole detector."""
        return self.detector

    def parameter_groups(self) -> list[ParameterGroup]:
        return detector_groups(self.detector)

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None):
        return self.detector(images, _training_targets(targets) if targets is not None else None)

    @torch.no_grad()
    def losses_and_detections(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]],
                              per_image: bool = False):
        """Detections as in evaluation, plus the training losses of the same batch (for a validation loss).

        The backbone runs once in evaluation mode; the RPN and RoI heads run a
        second time with their loss branches on, under a fixed seed in a forked
        RNG so that validating does not move the training randomness. With
        ``per_image`` each loss is a tensor of one value per image: the heads run
        image by image, each under the same seed, so an image's loss does not
        depend on the images batched with it (and a bootstrap can resample it).
        """
        d = self.detector
        sizes = [tuple(img.shape[-2:]) for img in images]
        batch, scaled = d.transform(images, _training_targets(targets))
        features = d.backbone(batch.tensors)
        proposals, _ = d.rpn(batch, features)
        detections, _ = d.roi_heads(features, proposals, batch.image_sizes)
        detections = d.transform.postprocess(detections, batch.image_sizes, sizes)
        with torch.random.fork_rng(devices=[]), _loss_mode(d.rpn, d.roi_heads):
            if not per_image:
                torch.manual_seed(0)
                train_proposals, rpn_losses = d.rpn(batch, features, scaled)
                _, roi_losses = d.roi_heads(features, train_proposals, batch.image_sizes, scaled)
                return {**rpn_losses, **roi_losses}, detections
            rows = []
            for i in range(len(images)):
                torch.manual_seed(0)
                one = ImageList(batch.tensors[i:i + 1], [batch.image_sizes[i]])
                its_features = OrderedDict((name, f[i:i + 1]) for name, f in features.items())
                train_proposals, rpn_losses = d.rpn(one, its_features, [scaled[i]])
                _, roi_losses = d.roi_heads(its_features, train_proposals, one.image_sizes, [scaled[i]])
                rows.append({**rpn_losses, **roi_losses})
        return {name: torch.stack([row[name] for row in rows]) for name in (rows[0] if rows else {})}, detections


def _training_targets(targets):
    return [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
