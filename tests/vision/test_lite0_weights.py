"""The offline EfficientNet-Lite0 weights: the legacy file, its mapping onto timm, a working classifier."""

from __future__ import annotations

import zipfile

import pytest
import torch

from tlcore import TlappError
from tlapp_vision import lite0_weights as W

ESPRESSO = 967
CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def test_lite0_file_is_the_legacy_pickle_and_maps_onto_timm():
    path = W.lite0_weights_path()
    assert path.name == "efficientnet-lite0-57934424.pth"
    assert not zipfile.is_zipfile(path)  # pre-1.6 format, still loadable with weights_only=True
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert len(raw) == W.LITE0_TENSORS
    assert list(raw)[0] == "_conv_stem.weight" and list(raw)[-1] == "_fc.bias"

    mapped = W.lite0_state_dict()
    assert len(mapped) == W.LITE0_TENSORS
    assert list(mapped)[:2] == ["conv_stem.weight", "bn1.weight"]
    assert mapped["classifier.weight"].shape == (1000, 1280)
    assert mapped["classifier.bias"].shape == (1000,)
    for (_, a), (_, b) in zip(raw.items(), mapped.items()):
        assert a is b or torch.equal(a, b)


def test_lite0_imagenet_classifier_recognises_espresso_and_a_cat(coffee, chelsea):
    model = W.imagenet_classifier()
    with torch.no_grad():
        logits = model(torch.cat([coffee, chelsea]))
    top = logits.argmax(dim=1).tolist()
    assert top[0] == ESPRESSO, top
    assert top[1] in CATS, top
    assert logits.softmax(1)[0, ESPRESSO] > 0.5


def test_lite0_mapping_is_checked_by_order_and_shape(monkeypatch):
    good = torch.load(W.lite0_weights_path(), map_location="cpu", weights_only=True)
    keys = list(good)

    swapped = dict(good)
    items = list(swapped.items())
    items[6], items[12] = items[12], items[6]  # two weights of different shapes in block 0
    monkeypatch.setattr(W, "_read_lite0_file", lambda path: dict(items))
    with pytest.raises(TlappError, match=r"tensor #6 is '_blocks.0._project_conv.weight'"):
        W.lite0_state_dict()

    kinds = list(good.items())
    kinds[1], kinds[2] = kinds[2], kinds[1]  # _bn0.weight <-> _bn0.bias: same shape, other kind
    monkeypatch.setattr(W, "_read_lite0_file", lambda path: dict(kinds))
    with pytest.raises(TlappError, match=r"tensor #1 is '_bn0.bias' \(32,\) in the file but 'bn1.weight'"):
        W.lite0_state_dict()

    monkeypatch.setattr(W, "_read_lite0_file", lambda path: {k: good[k] for k in keys[:-2]})
    with pytest.raises(TlappError, match="holds 294 tensors"):
        W.lite0_state_dict()
