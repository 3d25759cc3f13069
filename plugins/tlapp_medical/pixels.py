"""DICOM pixels as the standard says: decode, Modality LUT, VOI, [0, 1], resize.

The grayscale pipeline for one frame is the one of DICOM PS3.3 C.11 (Figure C.11-1):

    stored values --Modality LUT--> modality values --VOI--> VOI values
                  --scale to [0, 1] by the VOI output range--> unit values
                  --MONOCHROME1: x -> 1 - x--> display values (0 = black)

Every LUT/window step is done by pydicom's own functions (``pydicom.pixels``:
``apply_modality_lut``, ``apply_voi_lut``, ``apply_windowing``, ``apply_voi``,
``apply_color_lut``); this module only decides *which* VOI to apply and what its
output range is.  Colour images (RGB, YBR_*, PALETTE COLOR) skip Modality/VOI:
pydicom decodes them to RGB (YBR is converted by ``pixel_array``'s default
``as_rgb=True``; PALETTE COLOR goes through ``apply_color_lut``) and they are
scaled by their bit depth.

Enhanced multi-frame files keep Rescale and Window attributes in functional
groups (Shared / Per-frame Functional Groups: Pixel Value Transformation and
Frame VOI LUT); they are flattened into a small per-frame dataset before the
pydicom functions are called, per-frame values overriding shared ones.

Resizing keeps the aspect ratio: the long side becomes ``size`` and the short
side is padded with 0 (black) on both sides, centred.  Down-scaling uses area
interpolation, up-scaling bilinear (OpenCV, which albumentations brings).

Nothing here logs or returns patient-identifying attributes: errors name the
file path and technical attributes only, ``inspect`` returns a fixed whitelist.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi,
    apply_voi_lut,
    apply_windowing,
    get_decoder,
    iter_pixels,
    pixel_array,
)
from pydicom.uid import UID

from tlcore import ConfigError, DataError

__all__ = [
    "COLOR_PHOTOMETRICS",
    "PIPELINE_VERSION",
    "WINDOW_PRESETS",
    "PixelSettings",
    "decode_frame",
    "decode_frames",
    "frame_count",
    "inspect",
    "open_dicom",
    "read_dicom",
    "select_frames",
    "to_unit_range",
    "voi_pixels",
]

#: Bumped whenever the pipeline's output changes, so cached decodes are rebuilt.
PIPELINE_VERSION = 1

#: Standard radiology windows (center, width) in Hounsfield units.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "soft_tissue": (40.0, 400.0),
    "abdomen": (60.0, 400.0),
    "liver": (60.0, 160.0),
    "stroke": (40.0, 40.0),
    "subdural": (75.0, 215.0),
}

_SPECIAL_WINDOWS = ("file", "minmax")
_FRAME_POLICIES = ("middle", "each")

#: Photometric interpretations handled as colour (decoded to RGB by pydicom).
COLOR_PHOTOMETRICS = frozenset(
    {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT", "PALETTE COLOR"}
)
_GRAY_PHOTOMETRICS = frozenset({"MONOCHROME1", "MONOCHROME2"})

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

# Attributes the pydicom LUT functions read, copied into the per-frame view.
_VIEW_KEYWORDS = (
    "PhotometricInterpretation",
    "SamplesPerPixel",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "ModalityLUTSequence",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "VOILUTSequence",
)
_WINDOW_KEYWORDS = ("WindowCenter", "WindowWidth", "VOILUTFunction")
_RESCALE_KEYWORDS = ("RescaleSlope", "RescaleIntercept", "RescaleType")

_INSTALL_ALL = 'pip install "tlapp[dicom-codecs]"'
# What to pip install for each compressed transfer syntax, alternatives in order. The pylibjpeg-* decoders are
# plugins of pylibjpeg itself: installed without it, pydicom still finds no decoder.
_LIBJPEG = "pylibjpeg pylibjpeg-libjpeg"
_OPENJPEG = "pylibjpeg pylibjpeg-openjpeg"
_CODEC_PACKAGES: dict[str, tuple[str, ...]] = {
    "1.2.840.10008.1.2.4.50": (_LIBJPEG, "pillow"),
    "1.2.840.10008.1.2.4.51": (_LIBJPEG,),
    "1.2.840.10008.1.2.4.57": (_LIBJPEG,),
    "1.2.840.10008.1.2.4.70": (_LIBJPEG,),
    "1.2.840.10008.1.2.4.80": ("pyjpegls", _LIBJPEG),
    "1.2.840.10008.1.2.4.81": ("pyjpegls", _LIBJPEG),
    "1.2.840.10008.1.2.4.90": (_OPENJPEG,),
    "1.2.840.10008.1.2.4.91": (_OPENJPEG,),
    "1.2.840.10008.1.2.4.201": (_OPENJPEG,),
    "1.2.840.10008.1.2.4.202": (_OPENJPEG,),
    "1.2.840.10008.1.2.4.203": (_OPENJPEG,),
    "1.2.840.10008.1.2.5": ("pylibjpeg pylibjpeg-rle",),
}


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class PixelSettings:
    """How DICOM pixels become a model input.

    window:   "file" (the file's VOI LUT Sequence, else its Window Center/Width,
              else per-image min-max), a preset name from ``WINDOW_PRESETS``,
              "C,W" (a config window such as "40,400"), or "minmax".
    frames:   "middle" (frame n // 2), "each" (every frame is a sample) or a
              0-based frame index.
    size:     output is ``size`` x ``size`` (aspect kept, zero padded).
    channels: 1 or 3; grayscale is replicated, colour stays RGB (or becomes
              luminance when channels == 1).
    """

    window: str = "file"
    frames: str | int = "middle"
    size: int = 128
    channels: int = 3

    def __post_init__(self) -> None:
        window = self.window
        if not isinstance(window, str):
            raise ConfigError(
                f"window must be a string, got {window!r}",
                fix=_window_fix(),
            )
        window = window.strip().lower()
        if window not in _SPECIAL_WINDOWS and window not in WINDOW_PRESETS:
            center, width = _parse_window(window)  # raises ConfigError
            window = f"{_fmt(center)},{_fmt(width)}"
        object.__setattr__(self, "window", window)

        frames = self.frames
        if isinstance(frames, str) and frames.strip().lstrip("-").isdigit():
            frames = int(frames.strip())
        if isinstance(frames, bool) or not isinstance(frames, (str, int)):
            raise ConfigError(
                f"frames must be 'middle', 'each' or a frame index, got {frames!r}"
            )
        if isinstance(frames, str):
            frames = frames.strip().lower()
            if frames not in _FRAME_POLICIES:
                raise ConfigError(
                    f"frames must be 'middle', 'each' or a frame index, got {self.frames!r}"
                )
        elif frames < 0:
            raise ConfigError(f"frames index must be >= 0, got {frames}")
        object.__setattr__(self, "frames", frames)

        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ConfigError(f"size must be a positive integer, got {self.size!r}")
        if self.channels not in (1, 3) or isinstance(self.channels, bool):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels!r}")

    def key(self) -> str:
        """A stable string of every setting that changes the output (cache key)."""
        return (
            f"pixels-v{PIPELINE_VERSION}|window={self.window}|frames={self.frames}"
            f"|size={self.size}|channels={self.channels}"
        )

    def window_center_width(self) -> tuple[float, float] | None:
        """(center, width) for a preset or config window, None for file/minmax."""
        if self.window in _SPECIAL_WINDOWS:
            return None
        if self.window in WINDOW_PRESETS:
            return WINDOW_PRESETS[self.window]
        return _parse_window(self.window)


def _fmt(x: float) -> str:
    return repr(float(x)).removesuffix(".0")


def _window_fix() -> str:
    return (
        "use 'file', 'minmax', a preset ("
        + ", ".join(sorted(WINDOW_PRESETS))
        + ") or 'center,width' such as '40,400'"
    )


def _parse_window(text: str) -> tuple[float, float]:
    parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        center, width = float(parts[0]), float(parts[1])
    except ValueError:
        raise ConfigError(f"unknown window {text!r}", fix=_window_fix()) from None
    if not (math.isfinite(center) and math.isfinite(width)) or width < 1:
        raise ConfigError(
            f"window {text!r}: width must be >= 1 and both values finite",
            fix=_window_fix(),
        )
    return center, width


# --------------------------------------------------------------------------- reading


def _where(ds_or_path: Any) -> str | None:
    if isinstance(ds_or_path, Dataset):
        name = getattr(ds_or_path, "filename", None)
        return str(name) if isinstance(name, (str, PathLike)) else None
    return None if ds_or_path is None else str(ds_or_path)


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())  # plugin errors span several lines
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _has_pixels(ds: Dataset) -> bool:
    return any(k in ds for k in _PIXEL_KEYWORDS)


def _sop_class_name(ds: Dataset) -> str | None:
    uid = ds.get("SOPClassUID") or getattr(ds.get("file_meta", None), "MediaStorageSOPClassUID", None)
    if not uid:
        return None
    name = UID(str(uid)).name
    return name if name != str(uid) else f"SOP class {uid}"


def _ensure_transfer_syntax(ds: Dataset) -> None:
    """Legacy files without File Meta: derive the (native) transfer syntax."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID"):
        return
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None or little is None:
        return
    if implicit:
        tsyntax = pydicom.uid.ImplicitVRLittleEndian
    elif little:
        tsyntax = pydicom.uid.ExplicitVRLittleEndian
    else:
        tsyntax = pydicom.uid.ExplicitVRBigEndian
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    meta.TransferSyntaxUID = tsyntax


def open_dicom(path: str | PathLike[str], *, defer_size: str | int | None = None) -> Dataset:
    """Read a DICOM file, turning every way it can be unreadable into a DataError.

    Files without the 128-byte preamble and 'DICM' prefix (legacy ACR-NEMA style
    datasets) are accepted only if they parse as a dataset carrying pixel data.
    """
    where = str(path)
    p = Path(path)
    if not p.is_file():
        raise DataError("DICOM file not found", where=where, fix="check the path in the dataset")
    if p.stat().st_size == 0:
        raise DataError(
            "DICOM file is empty (0 bytes)",
            where=where,
            fix="re-export or re-copy the file, or remove it from the dataset",
        )
    try:
        return pydicom.dcmread(p, defer_size=defer_size)
    except InvalidDicomError:
        pass  # no preamble/'DICM': maybe a legacy dataset, tried below
    except Exception as exc:  # pydicom raises many types on corrupt input
        raise DataError(
            f"corrupt DICOM file, cannot parse it ({_short(exc)})",
            where=where,
            fix="re-export the file from the source system, or remove it from the dataset",
        ) from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(p, force=True, defer_size=defer_size)
    except Exception as exc:
        ds = None
        reason = _short(exc)
    else:
        reason = "no 'DICM' header and no image data"
    if ds is None or not _has_pixels(ds):
        raise DataError(
            f"not a DICOM file ({reason})",
            where=where,
            fix="only DICOM files (Part 10, with the 'DICM' header) can be read; remove this file",
        )
    _ensure_transfer_syntax(ds)
    return ds


def _require_pixels(ds: Dataset, where: str | None) -> None:
    if _has_pixels(ds):
        return
    sop = _sop_class_name(ds)
    if "Rows" in ds or "Columns" in ds or (sop and "Image" in sop):
        what = (
            "DICOM file has image attributes but no Pixel Data: it is probably truncated "
            "(or a header-only file)"
        )
        fix = "re-copy or re-export the file, or remove it from the dataset"
    else:
        what = "DICOM file has no Pixel Data"
        if sop:
            what += f" (it is a {sop} object, not an image)"
        fix = "remove non-image objects (reports, plans, DICOMDIR...) from the image dataset"
    raise DataError(what, where=where, fix=fix)


def frame_count(ds: Dataset) -> int:
    """Number of frames (NumberOfFrames, 1 when absent or empty)."""
    value = ds.get("NumberOfFrames", None)
    if value is None or value == "":
        return 1
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise DataError(
            f"invalid Number of Frames {str(value)[:20]!r}",
            where=_where(ds),
            fix="fix the (0028,0008) Number of Frames attribute or remove the file",
        ) from None
    return max(n, 1)


def select_frames(ds: Dataset, settings: PixelSettings) -> list[int]:
    """0-based frame indices the settings pick from this file."""
    n = frame_count(ds)
    if settings.frames == "middle":
        return [n // 2]
    if settings.frames == "each":
        return list(range(n))
    index = int(settings.frames)
    if not 0 <= index < n:
        raise DataError(
            f"frame {index} requested but the file has {n} frame{'s' if n != 1 else ''} "
            f"(valid indices 0..{n - 1})",
            where=_where(ds),
            fix="use frames: middle, frames: each, or an index that exists in every file",
        )
    return [index]


def _transfer_syntax(ds: Dataset) -> UID | None:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    return UID(str(uid)) if uid else None


def _codec_fix(tsyntax: UID) -> str:
    packages = _CODEC_PACKAGES.get(str(tsyntax), ())
    text = _INSTALL_ALL
    if packages:
        text += " (or just: " + ", or ".join(f"pip install {p}" for p in packages) + ")"
    return text


def _missing_decoder(ds: Dataset, tsyntax: UID, detail: str | None = None) -> DataError:
    what = f"no decoder installed for transfer syntax {tsyntax.name} ({tsyntax})"
    if detail:
        what += f"; pydicom reports: {detail}"
    return DataError(what, where=_where(ds), fix=_codec_fix(tsyntax))


def _check_decoder(ds: Dataset) -> None:
    tsyntax = _transfer_syntax(ds)
    if tsyntax is None:
        raise DataError(
            "DICOM file has no Transfer Syntax UID, its pixel data cannot be decoded",
            where=_where(ds),
            fix="re-export the file with a File Meta header",
        )
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError:
        raise DataError(
            f"pydicom has no decoder at all for transfer syntax {tsyntax.name} ({tsyntax})",
            where=_where(ds),
            fix="convert the file to an image transfer syntax first "
            "(e.g. 'gdcmconv --raw' or dcmtk's dcmdjpeg), or remove it",
        ) from None
    if not decoder.is_available:
        raise _missing_decoder(ds, tsyntax, "; ".join(decoder.missing_dependencies) or None)


def _decode_error(ds: Dataset, exc: Exception) -> DataError:
    tsyntax = _transfer_syntax(ds)
    text = str(exc)
    if tsyntax is not None and "missing dependencies" in text:
        return _missing_decoder(ds, tsyntax, " ".join(text.split())[:300])
    ts = f" ({tsyntax.name}, {tsyntax})" if tsyntax else ""
    if "less than expected" in text:
        what = f"pixel data is truncated or corrupt{ts} ({_short(exc)})"
    else:
        what = f"pixel data could not be decoded{ts} ({_short(exc)})"
    return DataError(what, where=_where(ds), fix="re-export the file, or remove it from the dataset")


def decode_frame(ds: Dataset, index: int = 0) -> np.ndarray:
    """Decode one frame with pydicom (colour YBR comes back as RGB)."""
    return decode_frames(ds, [index])[0]


def decode_frames(ds: Dataset, indices: list[int]) -> list[np.ndarray]:
    """Decode the given 0-based frames; every failure is a DataError."""
    _require_pixels(ds, _where(ds))
    n = frame_count(ds)
    for i in indices:
        if not 0 <= i < n:
            raise DataError(
                f"frame {i} requested but the file has {n} frame{'s' if n != 1 else ''}",
                where=_where(ds),
            )
    if "PixelData" in ds:
        _check_decoder(ds)
    try:
        if len(indices) == 1:
            # index=None for single-frame files: the (rows, cols[, 3]) array.
            return [pixel_array(ds, index=indices[0] if n > 1 else None)]
        return list(iter_pixels(ds, indices=indices))
    except DataError:
        raise
    except Exception as exc:  # pydicom/decoder plugins raise many types
        raise _decode_error(ds, exc) from exc


# --------------------------------------------------------------------------- VOI


def _photometric(ds: Dataset) -> str:
    return str(ds.get("PhotometricInterpretation", "") or "").strip().upper()


def _is_color(ds: Dataset) -> bool:
    return _photometric(ds) in COLOR_PHOTOMETRICS or int(ds.get("SamplesPerPixel", 1) or 1) > 1


def _frame_view(ds: Dataset, frame_index: int = 0) -> Dataset:
    """A small dataset with the attributes the LUT functions read, for one frame.

    Enhanced IODs: Shared then Per-frame Functional Groups (Pixel Value
    Transformation, Frame VOI LUT) override the top-level attributes.
    """
    view = Dataset()
    for keyword in _VIEW_KEYWORDS:
        if keyword in ds:
            view.add(copy.copy(ds[keyword]))  # pydicom's functions re-type values
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        view.file_meta = meta  # endianness of OW LUT data
    for groups_keyword, index in (
        ("SharedFunctionalGroupsSequence", 0),
        ("PerFrameFunctionalGroupsSequence", frame_index),
    ):
        groups = ds.get(groups_keyword)
        if not groups or index >= len(groups):
            continue
        group = groups[index]
        for seq_keyword, keywords in (
            ("PixelValueTransformationSequence", _RESCALE_KEYWORDS),
            ("FrameVOILUTSequence", _WINDOW_KEYWORDS),
        ):
            seq = group.get(seq_keyword)
            if not seq:
                continue
            item = seq[0]
            if any(k in item for k in keywords):
                for k in keywords:
                    if k in view:
                        del view[k]
                for k in keywords:
                    if k in item:
                        view.add(copy.copy(item[k]))
    return view


def _palette_view(ds: Dataset) -> Dataset:
    """The palette attributes, with (non-segmented) LUT Data in little-endian order.

    pydicom 3.0's ``apply_color_lut`` reads non-segmented Palette LUT Data with
    the machine's byte order whatever the transfer syntax, so Explicit VR Big
    Endian palettes come out byte-swapped (nearly black).  The view carries the
    same LUT values little-endian, under a little-endian transfer syntax, so the
    result is right whether or not pydicom fixes this.
    """
    meta = getattr(ds, "file_meta", None)
    tsyntax = meta.get("TransferSyntaxUID") if meta is not None else None
    little = UID(str(tsyntax)).is_little_endian if tsyntax else ds.original_encoding[1]
    if little is not False or "RedPaletteColorLookupTableData" not in ds:
        return ds
    view = Dataset()
    for elem in ds.group_dataset(0x0028):
        view.add(copy.copy(elem))
    if "PixelPresentation" in ds:
        view.add(copy.copy(ds["PixelPresentation"]))
    for color in ("Red", "Green", "Blue", "Alpha"):
        keyword = f"{color}PaletteColorLookupTableData"
        data = ds.get(keyword)
        if data is not None and len(data) % 2 == 0:
            view[keyword].value = np.frombuffer(data, dtype=">u2").astype("<u2").tobytes()
    view.file_meta = FileMetaDataset()
    view.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    return view


def _valid_voi_lut(view: Dataset) -> bool:
    seq = view.get("VOILUTSequence")
    return bool(seq) and None not in (seq[0].get("LUTDescriptor"), seq[0].get("LUTData"))


def _valid_window(view: Dataset) -> bool:
    return None not in (view.get("WindowCenter"), view.get("WindowWidth"))


def _voi_plan(ds: Dataset, settings: PixelSettings, frame_index: int) -> tuple[str, Dataset]:
    """('lut' | 'window' | 'minmax', dataset to pass to pydicom's functions)."""
    view = _frame_view(ds, frame_index)
    cw = settings.window_center_width()
    if cw is not None:
        for k in (*_WINDOW_KEYWORDS, "VOILUTSequence"):
            if k in view:
                del view[k]
        view.WindowCenter, view.WindowWidth = cw[0], cw[1]
        return "window", view
    if settings.window == "file":
        if _valid_voi_lut(view):  # apply_voi_lut(prefer_lut=True) picks the LUT
            return "lut", view
        if _valid_window(view):
            return "window", view
    return "minmax", view


def _gray_monochrome(ds: Dataset) -> None:
    if _photometric(ds) not in _GRAY_PHOTOMETRICS:
        raise DataError(
            f"unsupported Photometric Interpretation {_photometric(ds) or '(missing)'!r}",
            where=_where(ds),
            fix="supported: MONOCHROME1, MONOCHROME2, RGB, YBR_*, PALETTE COLOR",
        )


def voi_pixels(
    ds: Dataset, frame_array: np.ndarray, settings: PixelSettings, *, frame_index: int = 0
) -> np.ndarray:
    """Modality LUT then VOI (file VOI, preset/config window or none) for ONE frame.

    Returns float64.  Colour frames skip Modality/VOI: PALETTE COLOR indices go
    through the palette (``apply_color_lut``), RGB is returned as is.
    """
    if _is_color(ds):
        if _photometric(ds) == "PALETTE COLOR":
            try:
                rgb = apply_color_lut(frame_array, _palette_view(ds))
            except (ValueError, AttributeError, IndexError, KeyError) as exc:
                raise DataError(
                    f"invalid Palette Color Lookup Table ({_short(exc)})",
                    where=_where(ds),
                    fix="re-export the image as RGB, or remove it from the dataset",
                ) from exc
            return rgb.astype(np.float64)
        return np.asarray(frame_array, dtype=np.float64)
    _gray_monochrome(ds)
    kind, view = _voi_plan(ds, settings, frame_index)
    values = apply_modality_lut(frame_array, view)
    try:
        if kind == "lut":
            if not np.issubdtype(values.dtype, np.integer) and np.array_equal(
                values, np.round(values)
            ):
                values = values.astype(np.int64)  # a LUT indexes integers
            values = apply_voi_lut(values, view, index=0, prefer_lut=True)
        elif kind == "window":
            values = (
                apply_voi_lut(values, view, index=0, prefer_lut=True)
                if settings.window == "file"
                else apply_windowing(values, view, index=0)
            )
    except (ValueError, NotImplementedError, AttributeError, IndexError) as exc:
        raise DataError(
            f"invalid VOI attributes ({_short(exc)})",
            where=_where(ds),
            fix="use a config window (window: '40,400', a preset, or 'minmax') for this data",
        ) from exc
    return np.asarray(values, dtype=np.float64)


def _output_range(kind: str, view: Dataset, values: np.ndarray) -> tuple[float, float]:
    if kind == "window":
        # Windowing clamps to its output range: push the extremes through it.
        extremes = np.array([-1e300, 1e300], dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            out = apply_windowing(extremes, copy.copy(view), index=0)
        return float(np.min(out)), float(np.max(out))
    if kind == "lut":
        # Every value the LUT can output: the LUT applied to its whole domain.
        descriptor = view.VOILUTSequence[0].LUTDescriptor
        entries = int(descriptor[0]) or 2**16
        first = int(descriptor[1])
        domain = np.arange(first, first + entries, dtype=np.int64)
        out = apply_voi(domain, view, index=0)
        return float(np.min(out)), float(np.max(out))
    if values.size == 0:
        return 0.0, 0.0
    return float(np.nanmin(values)), float(np.nanmax(values))


def _color_max(ds: Dataset) -> float:
    if _photometric(ds) == "PALETTE COLOR":
        descriptor = ds.get("RedPaletteColorLookupTableDescriptor")
        bits = int(descriptor[2]) if descriptor else 16
    else:
        bits = int(ds.get("BitsStored", 0) or ds.get("BitsAllocated", 8) or 8)
    return float(2**bits - 1)


def to_unit_range(
    values: np.ndarray, ds: Dataset, settings: PixelSettings, *, frame_index: int = 0
) -> np.ndarray:
    """Map ``voi_pixels`` output to [0, 1] (float64), 0 = black.

    Window / VOI LUT: scaled by the VOI's output range (not the image's min/max,
    which need not saturate).  No VOI / "minmax": the image's own min/max.
    MONOCHROME1 is inverted afterwards (x -> 1 - x).  Colour: value / (2**bits - 1).
    """
    values = np.asarray(values, dtype=np.float64)
    if _is_color(ds):
        lo, hi = 0.0, _color_max(ds)
    else:
        kind, view = _voi_plan(ds, settings, frame_index)
        lo, hi = _output_range(kind, view, values)
    if not hi > lo:
        unit = np.zeros_like(values)
    else:
        unit = np.clip((values - lo) / (hi - lo), 0.0, 1.0)
    if not _is_color(ds) and _photometric(ds) == "MONOCHROME1":
        unit = 1.0 - unit
    return unit


# --------------------------------------------------------------------------- layout


def _layout(unit: np.ndarray, settings: PixelSettings) -> np.ndarray:
    """(H, W) or (H, W, 3) in [0, 1] -> float32 (channels, size, size)."""
    img = np.ascontiguousarray(unit, dtype=np.float32)
    if img.ndim == 3 and settings.channels == 1:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    h, w = img.shape[:2]
    size = settings.size
    scale = size / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    if (new_h, new_w) != (h, w):
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        img = cv2.resize(img, (new_w, new_h), interpolation=interp)
    if img.ndim == 2:
        img = img[:, :, None]
    out = np.zeros((size, size, img.shape[2]), dtype=np.float32)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top : top + new_h, left : left + new_w] = np.clip(img, 0.0, 1.0)
    if out.shape[2] == 1 and settings.channels == 3:
        out = np.repeat(out, 3, axis=2)
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def read_dicom(path: str | PathLike[str], settings: PixelSettings) -> list[np.ndarray]:
    """Decode a DICOM file: one float32 (channels, size, size) array in [0, 1] per frame.

    One element unless ``settings.frames == "each"``.  Every bad-file case is a
    DataError naming the file.
    """
    ds = open_dicom(path)
    _require_pixels(ds, str(path))
    indices = select_frames(ds, settings)
    frames = decode_frames(ds, indices)
    out = []
    for index, frame in zip(indices, frames, strict=True):
        values = voi_pixels(ds, frame, settings, frame_index=index)
        unit = to_unit_range(values, ds, settings, frame_index=index)
        out.append(_layout(unit, settings))
    return out


# --------------------------------------------------------------------------- preflight


def inspect(path: str | PathLike[str]) -> dict[str, Any]:
    """Technical header facts for a preflight report; never identifying attributes.

    Raises DataError when the file cannot be read as DICOM at all.
    """
    ds = open_dicom(path, defer_size="1 KB")  # pixel data is not loaded
    tsyntax = _transfer_syntax(ds)
    has_pixels = _has_pixels(ds)
    decoder_available: bool | None = None
    if has_pixels and tsyntax is not None and "PixelData" in ds:
        try:
            decoder_available = get_decoder(tsyntax).is_available
        except NotImplementedError:
            decoder_available = False
    try:
        frames: int | None = frame_count(ds)
    except DataError:
        frames = None

    def _int(keyword: str) -> int | None:
        try:
            value = ds.get(keyword)
            return None if value in (None, "") else int(value)
        except (TypeError, ValueError):
            return None

    return {
        "modality": str(ds.get("Modality", "") or "") or None,
        "sop_class": _sop_class_name(ds),
        "rows": _int("Rows"),
        "columns": _int("Columns"),
        "frames": frames,
        "samples_per_pixel": _int("SamplesPerPixel"),
        "bits_allocated": _int("BitsAllocated"),
        "bits_stored": _int("BitsStored"),
        "photometric_interpretation": _photometric(ds) or None,
        "transfer_syntax_uid": str(tsyntax) if tsyntax else None,
        "transfer_syntax_name": tsyntax.name if tsyntax else None,
        "has_pixel_data": has_pixels,
        "decoder_available": decoder_available,
        "decoder_fix": _codec_fix(tsyntax) if decoder_available is False and tsyntax else None,
    }
