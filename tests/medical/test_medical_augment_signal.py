"""Medical augmentations keep the image learnable: every registered pipeline on windowed DICOM images.

Images are files of the bundled synthetic sample (``tlapp_medical/sample_data``: CT slices with lung
windows, DX radiographs stored MONOCHROME1 with their window, a CR without one (min-max), a multi-frame
CT), decoded by the plugin's own path (``read_dicom`` with the task's default pixel settings: the file's
window, middle frame, 128 x 128, 3 channels: float32 in [0, 1]; and once more with the mediastinum preset,
CT only, a narrower window) and augmented by its ``DicomFrames`` as in training (seeded by (seed, epoch,
index), clipped to [0, 1]; mean 0 and std 1, so the output is the augmented image itself). Each epoch is
one more draw. A classifier's target is the whole image, so the measure is the image's standard deviation
(all channels) as a fraction of the un-augmented image's.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from tlapp_medical.datasets import DicomFrames, FrameItem
from tlapp_medical.pixels import read_dicom
from tlapp_medical.task import SAMPLE_DATA, DicomData
from helpers import registered_pipelines

FILES = ["normal/IMG0005.dcm", "normal/IMG0040.dcm", "normal/IMG0071.dcm", "normal/DX0002.dcm",
         "nodule/IMG0003.dcm", "nodule/IMG0030.dcm", "nodule/IMG0056.dcm", "nodule/CR0013.dcm",
         "nodule/DX0008.dcm", "nodule/MF0004.dcm"]
EPOCHS = 5  # 10 images x 5 = 50 draws per pipeline


@cache
def windowed(window: str) -> dict:
    """{path: [frame]} of the files, decoded as the task does with ``data.window`` = window."""
    settings = DicomData(window=window).pixel_settings()
    names = FILES if window == "file" else [n for n in FILES if "/IMG" in n or "/MF" in n]  # presets: CT only
    decoded = {SAMPLE_DATA / name: read_dicom(SAMPLE_DATA / name, settings) for name in names}
    for path, images in decoded.items():
        assert images[0].dtype == np.float32 and images[0].shape == (3, 128, 128), path
        assert 0.0 <= images[0].min() and images[0].max() <= 1.0 and images[0].std() > 0.05, path
    return decoded


@pytest.fixture(scope="module")
def pipelines():
    return registered_pipelines("medical")


def measure(decoded: dict, transform, epochs: int = EPOCHS, seed: int = 0) -> dict:
    """Mean over draws of the image std, as a fraction of the originals', and the lowest single draw's."""
    items = [FrameItem(path, 0, 0) for path in decoded]
    load = decoded.__getitem__
    plain = DicomFrames(items, load, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    augmented = DicomFrames(items, load, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), transform, seed=seed)
    originals = [float(plain.image(i).std()) for i in range(len(items))]
    draws = []
    for epoch in range(epochs):
        augmented.set_epoch(epoch)
        for i in range(len(items)):
            image = augmented.image(i).numpy()
            assert image.shape == (3, 128, 128) and np.isfinite(image).all()
            draws.append((float(image.std()), originals[i]))
    d = np.array(draws)
    return {"std": d[:, 0].mean() / d[:, 1].mean(), "min_std": (d[:, 0] / d[:, 1]).min(), "draws": len(d)}


# Measured (seed 0, window "file" / mediastinum: 50 / 35 draws; fractions of the original's; 8 seeds: lowest):
#   pipeline         mean std                    lowest single draw
#   medical-light    1.02 / 0.96 (1.01 / 0.95)   0.96 / 0.81 (0.94 / 0.80)
#   medical-strong   1.03 / 0.92 (1.02 / 0.91)   0.90 / 0.68 (0.86 / 0.67)
# Noise adds a little std; the black border of a zoom-out, dropout holes and, in the narrow mediastinum
# window, brightness/gamma pushing the already saturated pixels to 0 or 1 take some.
STD_FRACTION = 0.75
DRAW_STD_FRACTION = 0.5


@pytest.mark.parametrize("window", ["file", "mediastinum"])
def test_every_registered_medical_pipeline_keeps_the_image(window, pipelines):
    """Each pipeline the medical plugin registers, 10 windowed sample images (7 CT for mediastinum) x 5
    seeded draws: mean image std >= 0.75 of the originals', no single draw under 0.5. Thresholds: the
    measured values above less 0.15-0.25 for the mean and about 0.17 for the lowest draw of 8 seeds; a
    pipeline that washed out or blacked out whole images (as road night did: 0.2) falls far below."""
    assert {"medical-light", "medical-strong"} <= set(pipelines)
    for name, factory in pipelines.items():
        r = measure(windowed(window), factory(128))  # 128: the task's default image_size, as it passes it
        summary = f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in r.items())
        assert r["std"] >= STD_FRACTION, summary
        assert r["min_std"] >= DRAW_STD_FRACTION, summary
