"""torchvision's detection transform without the resize: images keep their own size."""

from __future__ import annotations

from torchvision.models.detection.transform import GeneralizedRCNNTransform


class NativeSizeTransform(GeneralizedRCNNTransform):
    """Normalise and batch (padding to a multiple of 32) without resizing.

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
