"""Shared fixtures for the medical plugin tests: small valid DICOM files written on demand."""

from __future__ import annotations

from pathlib import Path
from collections.abc import Callable

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless, UID, generate_uid

SOP_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "MR": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "CR": "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
}
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
MF_GRAYSCALE_BYTE_SC = "1.2.840.10008.5.1.4.1.1.7.2"
MF_GRAYSCALE_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"
MF_TRUE_COLOR_SC = "1.2.840.10008.5.1.4.1.1.7.4"


def write_dicom(
    path: str | Path,
    *,
    patient_id: str | None = "P001",
    patient_name: str | None = "Test^Patient",
    pixels: np.ndarray | None = None,
    photometric: str = "MONOCHROME2",
    slope: float | None = 1,
    intercept: float | None = -1024,
    window: tuple[float, float] | list[tuple[float, float]] | None = None,
    frames: int = 1,
    modality: str = "CT",
    bits_stored: int | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    preamble: bool = True,
    **extra,
) -> Path:
    """Write a minimal valid DICOM file and return its path.

    * ``pixels``: stored values, ``(rows, cols)``, ``(frames, rows, cols)``, or
      with a trailing 3 for ``photometric="RGB"``; dtype uint8, uint16 or
      int16 (signed -> PixelRepresentation 1). Default: an 8x8 uint16 ramp.
      A 2-D array with ``frames > 1`` is repeated (each frame offset by its index).
    * ``patient_id`` / ``patient_name`` / ``slope`` / ``intercept``: ``None``
      leaves the attribute out. ``window``: ``(center, width)``, a list of
      them (multi-valued), or ``None``.
    * ``transfer_syntax``: Explicit (default) or Implicit VR Little Endian, or
      RLE Lossless (pydicom's own encoder, no extra packages).
    * ``preamble=False`` writes a bare data set (no preamble, no file meta),
      implicit VR little endian, as old systems did.
    * ``extra``: more attributes by keyword (``StudyDescription="x"``).
    """
    path = Path(path)
    if pixels is None:
        pixels = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 16 + 1000).astype(np.uint16)
    pixels = np.asarray(pixels)
    color = photometric.upper() == "RGB"
    spatial_ndim = 3 if color else 2
    if pixels.ndim == spatial_ndim and frames > 1:
        pixels = np.stack([pixels + i if not color else pixels for i in range(frames)]).astype(pixels.dtype)
    if pixels.ndim == spatial_ndim + 1:
        frames = pixels.shape[0]
    elif pixels.ndim != spatial_ndim:
        raise ValueError(f"pixels of shape {pixels.shape} do not fit photometric {photometric}")
    if pixels.dtype == np.uint8:
        bits, pixrep = 8, 0
    elif pixels.dtype == np.uint16:
        bits, pixrep = 16, 0
    elif pixels.dtype == np.int16:
        bits, pixrep = 16, 1
    else:
        raise ValueError(f"pixels dtype must be uint8, uint16 or int16, not {pixels.dtype}")
    if color and bits != 8:
        raise ValueError("RGB pixels must be uint8")

    if frames > 1:
        sop_class = MF_TRUE_COLOR_SC if color else (MF_GRAYSCALE_BYTE_SC if bits == 8 else MF_GRAYSCALE_WORD_SC)
    else:
        sop_class = SECONDARY_CAPTURE if color else SOP_CLASSES.get(modality, SECONDARY_CAPTURE)
    entropy = [str(path), str(patient_id), modality, str(frames)]
    sop_uid = generate_uid(entropy_srcs=entropy + ["sop"])

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = "20200101"
    ds.StudyTime = "120000"
    ds.Modality = modality
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[str(patient_id), "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[str(patient_id), modality, "series"])
    ds.InstanceNumber = 1
    if patient_id is not None:
        ds.PatientID = patient_id
    if patient_name is not None:
        ds.PatientName = patient_name
    ds.SamplesPerPixel = 3 if color else 1
    ds.PhotometricInterpretation = photometric
    if color:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = int(pixels.shape[-3 if color else -2]), int(pixels.shape[-2 if color else -1])
    ds.BitsAllocated = bits
    ds.BitsStored = bits_stored or bits
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = pixrep
    if slope is not None:
        ds.RescaleSlope = f"{slope:g}"
    if intercept is not None:
        ds.RescaleIntercept = f"{intercept:g}"
    if window is not None:
        pairs = [window] if isinstance(window, tuple) else list(window)
        if len(pairs) == 1:
            ds.WindowCenter, ds.WindowWidth = f"{pairs[0][0]:g}", f"{pairs[0][1]:g}"
        else:
            ds.WindowCenter = [f"{c:g}" for c, _ in pairs]
            ds.WindowWidth = [f"{w:g}" for _, w in pairs]
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    if len(ds.PixelData) % 2:
        ds.PixelData += b"\x00"

    path.parent.mkdir(parents=True, exist_ok=True)
    if not preamble:
        ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=False)
        return path
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    syntax = UID(transfer_syntax)
    if syntax == RLELossless:
        ds.compress(RLELossless, pixels, encoding_plugin="pydicom", generate_instance_uid=False)
    elif syntax == ImplicitVRLittleEndian:
        meta.TransferSyntaxUID = ImplicitVRLittleEndian
    elif syntax != ExplicitVRLittleEndian:
        raise ValueError(f"unsupported transfer syntax for the test writer: {syntax}")
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def make_dicom() -> Callable[..., Path]:
    """``make_dicom(path, patient_id=..., pixels=..., ...)`` writes a small valid DICOM (see :func:`write_dicom`)."""
    return write_dicom

