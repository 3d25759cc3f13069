"""tlapp_medical.pixels against pydicom's own Modality LUT / VOI / colour handling.

Every file shipped by pydicom (pydicom/data/test_files) and pydicom-data (the
``data_store`` package) is checked: files pydicom can decode must give the same
numbers as pydicom's functions applied here; files pydicom cannot read or decode
must raise a DataError naming the file.  File lists come from the disk, never
from ``pydicom.data.get_testdata_files`` (it tries the network).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import data_store
import numpy as np
import pydicom
import pytest
from pydicom.errors import InvalidDicomError
from pydicom.pixels import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi_lut,
    apply_windowing,
    get_decoder,
)
from pydicom.uid import UID

from tlapp_medical import pixels
from tlapp_medical.pixels import (
    WINDOW_PRESETS,
    PixelSettings,
    decode_frame,
    frame_count,
    inspect,
    open_dicom,
    read_dicom,
    to_unit_range,
    voi_pixels,
)
from tlcore import ConfigError, DataError

PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"
# pydicom-data is a test extra: without it these tests fail at import rather than skip half the real files.
DATA_STORE = Path(data_store.__file__).parent / "data"


def _shipped_files() -> list[Path]:
    roots = [PYDICOM_FILES, DATA_STORE]
    return sorted(p for root in roots for p in root.rglob("*") if p.is_file())


ALL_FILES = _shipped_files()
# Decoding *all* frames for the reference is skipped above this many samples
# (only the 120-frame colour JPEG of pydicom-data, ~3 s); the reference then
# decodes just the frame under test through pydicom's path-based reader.
_FULL_DECODE_LIMIT = 20_000_000


def _id(path: Path) -> str:
    root = PYDICOM_FILES if PYDICOM_FILES in path.parents else DATA_STORE
    return f"{root.parent.name}/{path.relative_to(root)}"


def tf(name: str) -> Path:
    return PYDICOM_FILES / name


def ds_file(name: str) -> Path:
    return DATA_STORE / name


# --------------------------------------------------------------------------- references


def _reference_dataset(path: Path):
    """pydicom's own reading; None when it is not a DICOM file with pixel data."""
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        try:
            ds = pydicom.dcmread(path, force=True)
        except Exception:
            return None
        if "PixelData" not in ds:
            return None
        if not ds.file_meta.get("TransferSyntaxUID"):  # legacy file without meta
            implicit, little = ds.original_encoding
            ds.file_meta.TransferSyntaxUID = (
                pydicom.uid.ImplicitVRLittleEndian
                if implicit
                else pydicom.uid.ExplicitVRLittleEndian
                if little
                else pydicom.uid.ExplicitVRBigEndian
            )
    except Exception:
        return None
    return ds if "PixelData" in ds else None


def _reference_frame(ds, path: Path, index: int) -> np.ndarray:
    n = int(ds.get("NumberOfFrames") or 1)
    samples = n * int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1))
    if samples <= _FULL_DECODE_LIMIT:
        arr = ds.pixel_array
        return arr[index] if n > 1 else arr
    return pydicom.pixels.pixel_array(str(path), index=index)


def _flatten_functional_groups(ds, index: int):
    """Enhanced IODs: Rescale/Window live in functional groups (PS3.3 C.7.6.16)."""
    if "SharedFunctionalGroupsSequence" not in ds and "PerFrameFunctionalGroupsSequence" not in ds:
        return ds
    flat = copy.deepcopy(ds)
    groups = []
    if ds.get("SharedFunctionalGroupsSequence"):
        groups.append(ds.SharedFunctionalGroupsSequence[0])
    if ds.get("PerFrameFunctionalGroupsSequence"):
        groups.append(ds.PerFrameFunctionalGroupsSequence[index])
    for group in groups:
        for seq in ("PixelValueTransformationSequence", "FrameVOILUTSequence"):
            if group.get(seq):
                for elem in group[seq].value[0]:
                    flat[elem.tag] = elem
    return flat


def _expected_range(ds, voi_values: np.ndarray) -> tuple[float, float]:
    """The VOI output range, computed from the standard's attributes."""
    seq = ds.get("VOILUTSequence")
    if seq and seq[0].get("LUTDescriptor") is not None and seq[0].get("LUTData") is not None:
        item = seq[0]
        if item["LUTData"].VR == "OW":
            big = ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRBigEndian
            data = np.frombuffer(item.LUTData, dtype=">u2" if big else "<u2")
        else:
            data = np.asarray(item.LUTData)
        return float(data.min()), float(data.max())
    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        if ds.get("ModalityLUTSequence"):
            lo, hi = 0.0, 2.0 ** ds.ModalityLUTSequence[0].LUTDescriptor[2] - 1
        elif ds.PixelRepresentation == 0:
            lo, hi = 0.0, 2.0**ds.BitsStored - 1
        else:
            lo, hi = -(2.0 ** (ds.BitsStored - 1)), 2.0 ** (ds.BitsStored - 1) - 1
        if "RescaleSlope" in ds and "RescaleIntercept" in ds:
            s, i = float(ds.RescaleSlope), float(ds.RescaleIntercept)
            lo, hi = sorted((lo * s + i, hi * s + i))
        return lo, hi
    return float(voi_values.min()), float(voi_values.max())


def _little_endian_palette(ds):
    """pydicom 3.0 reads non-segmented palette data in machine order: give it LE."""
    if ds.file_meta.TransferSyntaxUID != pydicom.uid.ExplicitVRBigEndian:
        return ds
    if "RedPaletteColorLookupTableData" not in ds:
        return ds
    fixed = copy.deepcopy(ds)
    for c in ("Red", "Green", "Blue"):
        kw = f"{c}PaletteColorLookupTableData"
        fixed[kw].value = np.frombuffer(ds[kw].value, ">u2").astype("<u2").tobytes()
    fixed.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    return fixed


# --------------------------------------------------------------------------- every file


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom's notes about odd test files
@pytest.mark.parametrize("path", ALL_FILES, ids=_id)
def test_every_shipped_file_matches_pydicom(path: Path):
    settings = PixelSettings(window="file")
    ref_ds = _reference_dataset(path)
    ref = index = None
    if ref_ds is not None:
        try:
            index = int(ref_ds.get("NumberOfFrames") or 1) // 2  # frames="middle"
            ref = _reference_frame(ref_ds, path, index)
        except Exception:
            ref = None
    if ref is None:
        # pydicom itself gives no image: the plugin says so, naming the file.
        with pytest.raises(DataError) as info:
            read_dicom(path, settings)
        assert str(path) in str(info.value)
        return

    ds = open_dicom(path)
    frame = decode_frame(ds, index)
    np.testing.assert_array_equal(frame, ref)  # same pixels, same YBR->RGB conversion

    values = voi_pixels(ds, frame, settings, frame_index=index)
    unit = to_unit_range(values, ds, settings, frame_index=index)
    photometric = ref_ds.PhotometricInterpretation
    assert values.dtype == np.float64 and unit.dtype == np.float64
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        flat = _flatten_functional_groups(ref_ds, index)
        expected = np.asarray(apply_voi_lut(apply_modality_lut(ref, flat), flat), np.float64)
        np.testing.assert_allclose(values, expected, rtol=1e-12, atol=1e-9)
        lo, hi = _expected_range(flat, expected)
        exp_unit = np.clip((expected - lo) / (hi - lo), 0, 1) if hi > lo else 0 * expected
        if photometric == "MONOCHROME1":
            exp_unit = 1.0 - exp_unit
        np.testing.assert_allclose(unit, exp_unit, rtol=0, atol=1e-12)
    elif photometric == "PALETTE COLOR":
        expected = apply_color_lut(ref, _little_endian_palette(ref_ds))
        np.testing.assert_array_equal(values, expected)
        bits = ref_ds.RedPaletteColorLookupTableDescriptor[2]
        np.testing.assert_allclose(unit, expected / (2.0**bits - 1), rtol=0, atol=1e-12)
    else:  # RGB / YBR_*: pydicom's pixel_array is RGB; scaled by the bit depth
        assert frame.ndim == 3 and frame.shape[-1] == 3
        np.testing.assert_array_equal(values, ref)
        np.testing.assert_allclose(unit, ref / (2.0**ref_ds.BitsStored - 1), rtol=0, atol=1e-12)
    assert unit.min() >= 0.0 and unit.max() <= 1.0

    # The full pipeline at the native long side: only placement and padding.
    h, w = unit.shape[:2]
    if h * w > 1_000_000:  # the large CR/DX images: same code path, 4x slower
        (out,) = read_dicom(path, PixelSettings(window="file", size=64))
        assert out.shape == (3, 64, 64) and 0 <= out.min() and out.max() <= 1
        return
    size = max(h, w)
    (out,) = read_dicom(path, PixelSettings(window="file", size=size, channels=3))
    assert out.shape == (3, size, size) and out.dtype == np.float32
    top, left = (size - h) // 2, (size - w) // 2
    placed = out[:, top : top + h, left : left + w]
    rgb = unit if unit.ndim == 3 else np.repeat(unit[:, :, None], 3, axis=2)
    np.testing.assert_allclose(placed, rgb.transpose(2, 0, 1), rtol=0, atol=1e-6)
    mask = np.ones((size, size), bool)
    mask[top : top + h, left : left + w] = False
    assert not out[:, mask].any()


def test_the_shipped_files_were_found():
    names = {p.name for p in ALL_FILES}
    assert {"CT_small.dcm", "MR_small.dcm", "rtdose.dcm", "rtplan.dcm"} <= names
    assert {"emri_small.dcm", "RG1_UNCI.dcm", "vlut_04.dcm", "mlut_18.dcm"} <= names


# --------------------------------------------------------------------------- windows


def _ct_with_hu(hu_rows: list[float]):
    """CT_small (RescaleIntercept -1024) whose rows hold the given HU values."""
    ds = pydicom.dcmread(tf("CT_small.dcm"))
    assert float(ds.RescaleSlope) == 1 and float(ds.RescaleIntercept) == -1024
    arr = ds.pixel_array.copy()
    block = arr.shape[0] // len(hu_rows)
    for i, hu in enumerate(hu_rows):
        arr[i * block : (i + 1) * block] = int(hu + 1024)
    ds.PixelData = arr.tobytes()
    return ds, arr, block


def _unit(ds, frame, settings, index=0):
    return to_unit_range(voi_pixels(ds, frame, settings, frame_index=index), ds, settings, frame_index=index)


def test_lung_preset_maps_hounsfield_units_as_the_standard_says():
    hu = [-2000, -1350, -975, -600, -225, 150, 3000]
    ds, arr, block = _ct_with_hu(hu)
    unit = _unit(ds, arr, PixelSettings(window="lung"))
    got = [unit[i * block, 0] for i in range(len(hu))]
    # center -600, width 1500: [-1350, 150] -> [0, 1], linear in between
    np.testing.assert_allclose(got, [0, 0, 0.25, 0.5, 0.75, 1, 1], atol=2e-3)


@pytest.mark.parametrize("preset", sorted(WINDOW_PRESETS))
def test_presets_use_pydicom_windowing(preset):
    ds = pydicom.dcmread(tf("CT_small.dcm"))
    arr = ds.pixel_array
    values = voi_pixels(ds, arr, PixelSettings(window=preset))
    ref = copy.deepcopy(ds)
    ref.WindowCenter, ref.WindowWidth = WINDOW_PRESETS[preset]
    expected = apply_windowing(apply_modality_lut(arr, ref), ref)
    np.testing.assert_allclose(values, expected, rtol=1e-12)
    unit = _unit(ds, arr, PixelSettings(window=preset))
    assert 0 <= unit.min() and unit.max() <= 1


def test_config_window_equals_preset_and_file_window():
    ds, arr, _ = _ct_with_hu([-2000, -600, 3000])
    lung = _unit(ds, arr, PixelSettings(window="lung"))
    np.testing.assert_array_equal(lung, _unit(ds, arr, PixelSettings(window="-600,1500")))
    mr = pydicom.dcmread(tf("MR_small.dcm"))  # its own window is 600/1600
    assert (float(mr.WindowCenter), float(mr.WindowWidth)) == (600, 1600)
    np.testing.assert_array_equal(
        _unit(mr, mr.pixel_array, PixelSettings(window="file")),
        _unit(mr, mr.pixel_array, PixelSettings(window="600,1600")),
    )


def test_config_window_overrides_the_file_window():
    mr = pydicom.dcmread(tf("MR_small.dcm"))
    a = _unit(mr, mr.pixel_array, PixelSettings(window="file"))
    b = _unit(mr, mr.pixel_array, PixelSettings(window="300,400"))
    assert not np.allclose(a, b)


def test_window_output_is_not_stretched_to_the_image_min_max():
    # A very wide window: the image does not saturate it and must stay grey.
    mr = pydicom.dcmread(tf("MR_small.dcm"))
    unit = _unit(mr, mr.pixel_array, PixelSettings(window="0,40000"))
    assert 0.45 < unit.min() and unit.max() < 0.6


def test_minmax_and_file_without_voi_use_the_image_range():
    ds = pydicom.dcmread(tf("CT_small.dcm"))  # has no window: "file" falls back to min-max
    assert "WindowCenter" not in ds and "VOILUTSequence" not in ds
    arr = ds.pixel_array
    for window in ("file", "minmax"):
        unit = _unit(ds, arr, PixelSettings(window=window))
        assert unit.min() == 0.0 and unit.max() == 1.0
        hu = apply_modality_lut(arr, ds)
        np.testing.assert_allclose(unit, (hu - hu.min()) / (hu.max() - hu.min()))


def test_constant_image_is_zero_not_nan():
    ds = pydicom.dcmread(tf("CT_small.dcm"))
    arr = np.full_like(ds.pixel_array, 1000)
    unit = _unit(ds, arr, PixelSettings(window="minmax"))
    assert np.isfinite(unit).all() and not unit.any()


def test_voi_lut_sequence_file_uses_the_lut_range():
    ds = pydicom.dcmread(ds_file("vlut_04.dcm"))
    assert "VOILUTSequence" in ds
    unit = _unit(ds, ds.pixel_array, PixelSettings(window="file"))
    expected = apply_voi_lut(ds.pixel_array, ds) / 65535.0  # LUT data spans 0..65535
    np.testing.assert_allclose(unit, expected, atol=1e-12)


def test_enhanced_ct_takes_rescale_and_window_from_functional_groups():
    ds = pydicom.dcmread(ds_file("eCT_Supplemental.dcm"))
    assert "RescaleIntercept" not in ds and "WindowCenter" not in ds
    frame = ds.pixel_array[0]
    values = voi_pixels(ds, frame, PixelSettings(window="file"), frame_index=0)
    # Shared group: intercept -1024, slope 1, window 49/102
    flat = copy.deepcopy(ds)
    flat.RescaleIntercept, flat.RescaleSlope = -1024, 1
    flat.WindowCenter, flat.WindowWidth = 49, 102
    np.testing.assert_allclose(values, apply_windowing(apply_modality_lut(frame, flat), flat))


def test_per_frame_functional_groups_override_shared_ones():
    ds = pydicom.dcmread(ds_file("eCT_Supplemental.dcm"))
    shared = ds.SharedFunctionalGroupsSequence[0]
    transform = shared.PixelValueTransformationSequence
    del shared.PixelValueTransformationSequence
    for i, intercept in enumerate((-1024, -1000)):
        item = copy.deepcopy(transform)
        item[0].RescaleIntercept = intercept
        ds.PerFrameFunctionalGroupsSequence[i].PixelValueTransformationSequence = item
    frame = ds.pixel_array[0]
    s = PixelSettings(window="file")
    for i, intercept in enumerate((-1024, -1000)):
        flat = copy.deepcopy(ds)
        flat.RescaleIntercept, flat.RescaleSlope = intercept, 1
        flat.WindowCenter, flat.WindowWidth = 49, 102  # still the shared window
        expected = apply_windowing(apply_modality_lut(frame, flat), flat)
        np.testing.assert_allclose(voi_pixels(ds, frame, s, frame_index=i), expected)
    assert not np.allclose(voi_pixels(ds, frame, s, frame_index=0), voi_pixels(ds, frame, s, frame_index=1))


# --------------------------------------------------------------------------- MONOCHROME1


def test_monochrome1_is_inverted_after_voi():
    path = tf("dicomdirtests/77654033/CR1/6154")
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1" and "WindowCenter" in ds
    arr = ds.pixel_array
    as_mono2 = copy.deepcopy(ds)
    as_mono2.PhotometricInterpretation = "MONOCHROME2"
    for window in ("file", "minmax", "1600,2800"):
        s = PixelSettings(window=window)
        mono1, mono2 = _unit(ds, arr, s), _unit(as_mono2, arr, s)
        np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-12)
        # the largest stored value is the darkest pixel in MONOCHROME1
        brightest_stored = np.unravel_index(np.argmax(arr), arr.shape)
        assert mono1[brightest_stored] == mono1.min()
    assert _unit(ds, arr, PixelSettings(window="minmax"))[brightest_stored] == 0.0


# --------------------------------------------------------------------------- colour


def test_ybr_full_422_is_converted_to_rgb():
    # The same picture stored as RGB and as uncompressed YBR_FULL_422.
    rgb = read_dicom(tf("SC_rgb_rle.dcm"), PixelSettings(size=100))[0]
    ybr = read_dicom(tf("SC_ybr_full_422_uncompressed.dcm"), PixelSettings(size=100))[0]
    assert np.abs(rgb - ybr).max() <= 8 / 255 and np.abs(rgb - ybr).mean() < 1 / 255
    assert not np.allclose(rgb[0], rgb[1])  # really colour


@pytest.mark.parametrize(
    ("a", "b", "tol"),
    [
        ("US1_UNCR.dcm", "US1_J2KR.dcm", 0.0),  # RGB vs lossless YBR_RCT
        ("SC_rgb.dcm", "SC_ybr_full_uncompressed.dcm", 8 / 255),
        ("OBXXXX1A.dcm", "OBXXXX1A_expb.dcm", 0.0),  # palette, little vs big endian
        ("gdcm-US-ALOKA-16.dcm", "gdcm-US-ALOKA-16_big.dcm", 0.0),  # segmented palette
    ],
)
def test_colour_twins_agree(a, b, tol):
    s = PixelSettings(size=64)
    x, y = read_dicom(ds_file(a), s)[0], read_dicom(ds_file(b), s)[0]
    assert np.abs(x - y).max() <= tol + 1e-7
    assert x.max() > 0.5  # not a black image


def test_palette_view_does_not_touch_the_dataset():
    ds = pydicom.dcmread(ds_file("OBXXXX1A_expb.dcm"))
    before = bytes(ds.RedPaletteColorLookupTableData)
    voi_pixels(ds, ds.pixel_array, PixelSettings())
    assert bytes(ds.RedPaletteColorLookupTableData) == before
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRBigEndian


def test_colour_to_one_channel_is_luminance():
    (rgb,) = read_dicom(tf("SC_rgb_rle.dcm"), PixelSettings(size=50, channels=3))
    (gray,) = read_dicom(tf("SC_rgb_rle.dcm"), PixelSettings(size=50, channels=1))
    assert gray.shape == (1, 50, 50)
    lum = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    np.testing.assert_allclose(gray[0], lum, atol=2e-3)


# --------------------------------------------------------------------------- frames


def test_multiframe_policies_rtdose():
    path = tf("rtdose.dcm")
    ds = pydicom.dcmread(path)
    n = frame_count(ds)
    assert n == 15
    each = read_dicom(path, PixelSettings(frames="each", size=10, window="minmax"))
    assert len(each) == n
    ref = ds.pixel_array
    for i in (0, 7, 14):
        (single,) = read_dicom(path, PixelSettings(frames=i, size=10, window="minmax"))
        np.testing.assert_array_equal(each[i], single)
        expected = (ref[i] - ref[i].min()) / (ref[i].max() - ref[i].min())
        np.testing.assert_allclose(single[0], expected, atol=1e-6)
    (middle,) = read_dicom(path, PixelSettings(frames="middle", size=10, window="minmax"))
    np.testing.assert_array_equal(middle, each[n // 2])
    assert len({e.tobytes() for e in each}) > 1  # the frames differ


def test_multiframe_policies_enhanced_mr():
    path = ds_file("emri_small.dcm")
    each = read_dicom(path, PixelSettings(frames="each", size=64))
    assert len(each) == 10
    (middle,) = read_dicom(path, PixelSettings(frames="middle", size=64))
    np.testing.assert_array_equal(middle, each[5])
    (third,) = read_dicom(path, PixelSettings(frames=3, size=64))
    np.testing.assert_array_equal(third, each[3])
    assert not np.array_equal(each[0], each[9])


def test_multiframe_colour_each():
    frames = read_dicom(tf("SC_rgb_rle_2frame.dcm"), PixelSettings(frames="each", size=100))
    assert len(frames) == 2 and all(f.shape == (3, 100, 100) for f in frames)
    ds = pydicom.dcmread(tf("SC_rgb_rle_2frame.dcm"))
    for f, ref in zip(frames, ds.pixel_array, strict=True):
        np.testing.assert_allclose(f, ref.transpose(2, 0, 1) / 255.0, atol=1e-6)


def test_frame_out_of_range_names_file_and_count():
    path = tf("rtdose.dcm")
    with pytest.raises(DataError) as info:
        read_dicom(path, PixelSettings(frames=15))
    msg = str(info.value)
    assert str(path) in msg and "15 frames" in msg and "frame 15" in msg
    with pytest.raises(DataError, match="1 frame"):
        read_dicom(tf("CT_small.dcm"), PixelSettings(frames=1))
    assert len(read_dicom(tf("CT_small.dcm"), PixelSettings(frames="each"))) == 1


@pytest.mark.filterwarnings("ignore:Invalid value for VR IS")
def test_bad_number_of_frames_is_a_data_error():
    path = tf("badVR.dcm")  # NumberOfFrames '1A'
    with pytest.raises(DataError, match="Number of Frames") as info:
        read_dicom(path, PixelSettings())
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------- shapes


def test_aspect_ratio_is_kept_and_padded_with_zero():
    path = tf("JPEG2000.dcm")  # 1024 rows x 256 columns
    (out,) = read_dicom(path, PixelSettings(size=64, channels=3))
    assert out.shape == (3, 64, 64) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    # 64 x 16 image centred in 64 x 64: columns 24..39 hold it
    assert not out[:, :, :24].any() and not out[:, :, 40:].any()
    assert out[:, :, 24:40].max() > 0.3
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_array_equal(out[0], out[2])
    (one,) = read_dicom(path, PixelSettings(size=64, channels=1))
    assert one.shape == (1, 64, 64)
    np.testing.assert_array_equal(one[0], out[0])


def test_upscaling_small_images():
    (out,) = read_dicom(tf("MR_small.dcm"), PixelSettings(size=200))
    assert out.shape == (3, 200, 200) and 0 <= out.min() and out.max() <= 1


# --------------------------------------------------------------------------- settings


def test_settings_validation():
    for bad in (
        dict(window="foo"),
        dict(window="40"),
        dict(window="40,0"),
        dict(window="a,b"),
        dict(frames="all"),
        dict(frames=-1),
        dict(frames=True),
        dict(size=0),
        dict(channels=2),
    ):
        with pytest.raises(ConfigError):
            PixelSettings(**bad)


def test_settings_key_is_stable_and_complete():
    assert PixelSettings().key() == PixelSettings().key()
    assert PixelSettings(window="LUNG").key() == PixelSettings(window="lung").key()
    assert PixelSettings(window="40,400").key() == PixelSettings(window=" 40.0, 400 ").key()
    assert PixelSettings(frames="3").frames == 3
    keys = {
        PixelSettings().key(),
        PixelSettings(window="lung").key(),
        PixelSettings(window="40,401").key(),
        PixelSettings(frames="each").key(),
        PixelSettings(frames=0).key(),
        PixelSettings(size=64).key(),
        PixelSettings(channels=1).key(),
    }
    assert len(keys) == 7


def test_presets_cover_the_standard_windows():
    assert WINDOW_PRESETS["lung"] == (-600, 1500)
    assert WINDOW_PRESETS["mediastinum"] == (50, 350)
    assert WINDOW_PRESETS["brain"] == (40, 80)
    assert WINDOW_PRESETS["soft_tissue"] == (40, 400)
    assert "bone" in WINDOW_PRESETS


# --------------------------------------------------------------------------- errors


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.dcm"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="empty") as info:
        read_dicom(path, PixelSettings())
    assert str(path) in str(info.value)


@pytest.mark.parametrize("keep", [1000, 5830], ids=["in-header", "in-pixel-data"])
def test_truncated_file(tmp_path, keep):
    path = tmp_path / "cut.dcm"
    path.write_bytes(tf("MR_small.dcm").read_bytes()[:keep])
    with pytest.raises(DataError, match="truncated") as info:
        read_dicom(path, PixelSettings())
    assert str(path) in str(info.value)


def test_text_file(tmp_path):
    path = tmp_path / "notes.dcm"
    path.write_text("patient notes, not an image\n" * 20)
    with pytest.raises(DataError, match="not a DICOM file") as info:
        read_dicom(path, PixelSettings())
    assert str(path) in str(info.value)


def test_corrupt_compressed_data(tmp_path):
    raw = bytearray(tf("MR_small_jp2klossless.dcm").read_bytes())
    start = raw.find(b"\xff\x4f\xff\x51")  # JPEG 2000 codestream: SOC, SIZ markers
    assert start > 0
    raw[start : start + 40] = b"\xff" * 40  # a garbled codestream header
    path = tmp_path / "corrupt.dcm"
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="could not be decoded|truncated or corrupt") as info:
        read_dicom(path, PixelSettings())
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_dicom(tmp_path / "nope.dcm", PixelSettings())


def test_no_pixel_data():
    path = tf("rtplan.dcm")
    with pytest.raises(DataError, match="no Pixel Data") as info:
        read_dicom(path, PixelSettings())
    assert str(path) in str(info.value) and "RT Plan Storage" in str(info.value)


@pytest.fixture
def no_jpeg2000_decoder(monkeypatch):
    """Simulate an install without pylibjpeg-openjpeg (and without Pillow/GDCM)."""
    decoder = get_decoder(pydicom.uid.JPEG2000Lossless)
    assert decoder.is_available  # the real environment can decode it
    unavailable = {label: ("pylibjpeg-openjpeg>=2.0",) for label in decoder._available}
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {**decoder._unavailable, **unavailable})
    assert not decoder.is_available
    return decoder


def _assert_missing_decoder_message(msg: str, path: Path):
    assert str(path) in msg
    assert "JPEG 2000 Image Compression (Lossless Only)" in msg
    assert "1.2.840.10008.1.2.4.90" in msg
    assert 'pip install "tlapp[dicom-codecs]"' in msg
    # pylibjpeg-openjpeg is a plugin of pylibjpeg: naming only the plugin leaves the decoder unavailable
    assert "pip install pylibjpeg pylibjpeg-openjpeg" in msg


@pytest.fixture
def only_the_openjpeg_plugin(monkeypatch):
    """Simulate pylibjpeg-openjpeg installed without pylibjpeg itself (and without Pillow/GDCM)."""
    decoder = get_decoder(pydicom.uid.JPEG2000Lossless)
    unavailable = {label: ("pylibjpeg>=2.0",) for label in decoder._available}
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {**decoder._unavailable, **unavailable})
    return decoder


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.80",
                                    "1.2.840.10008.1.2.5"])
def test_every_pylibjpeg_hint_names_pylibjpeg_itself(syntax):
    fix = pixels._codec_fix(pydicom.uid.UID(syntax))
    assert re.search(r"pip install pylibjpeg pylibjpeg-\w+", fix), fix


def test_missing_pylibjpeg_itself_is_named(only_the_openjpeg_plugin):
    path = tf("MR_small_jp2klossless.dcm")
    with pytest.raises(DataError) as info:
        read_dicom(path, PixelSettings())
    assert "pylibjpeg>=2.0" in info.value.what and "pip install pylibjpeg pylibjpeg-openjpeg" in info.value.fix


def test_missing_decoder_message(no_jpeg2000_decoder):
    path = tf("MR_small_jp2klossless.dcm")
    with pytest.raises(DataError) as info:
        read_dicom(path, PixelSettings())
    _assert_missing_decoder_message(str(info.value), path)


def test_missing_decoder_reported_by_pydicom_itself(no_jpeg2000_decoder, monkeypatch):
    # Even without the up-front check, pydicom's own error becomes the same DataError.
    monkeypatch.setattr(pixels, "_check_decoder", lambda ds: None)
    path = tf("MR_small_jp2klossless.dcm")
    with pytest.raises(DataError) as info:
        read_dicom(path, PixelSettings())
    _assert_missing_decoder_message(str(info.value), path)


def test_transfer_syntax_without_any_decoder():
    ds = open_dicom(tf("MR_small.dcm"))
    ds.file_meta.TransferSyntaxUID = pydicom.uid.MPEG2MPML
    with pytest.raises(DataError, match="MPEG2") as info:
        decode_frame(ds, 0)
    assert str(tf("MR_small.dcm")) in str(info.value)


def test_legacy_file_without_dicm_header_is_read():
    path = ds_file("OT-PAL-8-face.dcm")
    with pytest.raises(InvalidDicomError):
        pydicom.dcmread(path)
    (out,) = read_dicom(path, PixelSettings(size=32))
    assert out.shape == (3, 32, 32) and out.max() > 0.5


# --------------------------------------------------------------------------- inspect

_IDENTIFYING = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "OtherPatientIDs",
    "InstitutionName",
    "ReferringPhysicianName",
    "AccessionNumber",
    "StudyID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "StudyDate",
)


@pytest.mark.parametrize("name", ["MR_small.dcm", "CT_small.dcm", "rtdose.dcm", "JPEG2000.dcm"])
def test_inspect_reports_facts_without_identity(name):
    path = tf(name)
    ds = pydicom.dcmread(path)
    info = inspect(path)
    assert info["modality"] == ds.Modality
    assert info["rows"] == ds.Rows and info["columns"] == ds.Columns
    assert info["frames"] == int(ds.get("NumberOfFrames") or 1)
    assert info["photometric_interpretation"] == ds.PhotometricInterpretation
    ts = ds.file_meta.TransferSyntaxUID
    assert info["transfer_syntax_uid"] == ts and info["transfer_syntax_name"] == UID(ts).name
    assert info["has_pixel_data"] is True and info["decoder_available"] is True
    text = repr(info)
    for keyword in _IDENTIFYING:
        value = str(ds.get(keyword, "") or "")
        if len(value) >= 3:
            assert value not in text, keyword
    assert not any("patient" in k.lower() for k in info)


def test_inspect_non_image_and_missing_decoder(no_jpeg2000_decoder):
    info = inspect(tf("rtplan.dcm"))
    assert info["has_pixel_data"] is False and info["rows"] is None
    info = inspect(tf("MR_small_jp2klossless.dcm"))
    assert info["decoder_available"] is False
    assert "tlapp[dicom-codecs]" in info["decoder_fix"]


def test_inspect_bad_file(tmp_path):
    path = tmp_path / "x.dcm"
    path.write_bytes(b"")
    with pytest.raises(DataError):
        inspect(path)

