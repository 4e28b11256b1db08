"""Reading real files: DICOM samples from ../shared/data/dicom, PNG/JPEG/TIFF/NPY, and broken ones."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.pixels import apply_modality_lut

from edgemed.errors import InputError
from edgemed.io.images import read_frames, read_image

from .conftest import DICOM


def test_ct_applies_rescale_slope_and_intercept():
    ds = pydicom.dcmread(DICOM / "CT_small.dcm")
    assert float(ds.RescaleIntercept) != 0
    frame = read_image(DICOM / "CT_small.dcm")
    np.testing.assert_array_equal(frame, apply_modality_lut(ds.pixel_array, ds).astype(np.float32))
    assert frame.min() < -500  # Hounsfield units, not raw stored values


def test_monochrome1_is_inverted(tmp_path):
    ds = pydicom.dcmread(DICOM / "MR_small.dcm")
    raw = ds.pixel_array.astype(np.float32)
    ds.PhotometricInterpretation = "MONOCHROME1"
    path = tmp_path / "mono1.dcm"
    ds.save_as(path)
    frame = read_image(path)
    np.testing.assert_array_equal(frame, raw.max() + raw.min() - raw)


def test_multiframe_ybr_ultrasound_gives_every_frame_as_rgb():
    frames = read_frames(DICOM / "examples_ybr_color.dcm")
    assert len(frames) == 30
    assert all(f.shape == (240, 320, 3) and f.dtype == np.uint8 for f in frames)
    with pytest.raises(InputError, match="30 frames"):
        read_image(DICOM / "examples_ybr_color.dcm")


@pytest.mark.parametrize("name,shape", [
    ("examples_palette.dcm", (350, 800, 3)), ("examples_rgb_color.dcm", (240, 320, 3)),
    ("ExplVR_BigEnd.dcm", (60, 80, 3)), ("examples_overlay.dcm", (300, 484)),
])
def test_other_real_dicom_files_decode(name, shape):
    assert read_image(DICOM / name).shape == shape


def test_a_segmentation_object_is_not_an_image():
    """liver_1frame.dcm is a DICOM SEG: its pixels are a segmentation's labels (issue 20.6: never analysed)."""
    with pytest.raises(InputError, match="Segmentation object is a result"):
        read_image(DICOM / "liver_1frame.dcm")


def test_jpeg2000_dicom_decodes_or_says_which_decoder_is_missing():
    try:
        frame = read_image(DICOM / "examples_jpeg2k.dcm")
    except InputError as exc:
        assert "decoder" in str(exc) and "JPEG 2000" in str(exc)
    else:
        assert frame.shape == (480, 640, 3)


def test_truncated_dicom_is_a_clear_error(tmp_path):
    data = (DICOM / "CT_small.dcm").read_bytes()
    bad = tmp_path / "truncated.dcm"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated.dcm"):
        read_image(bad)
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 64)
    with pytest.raises(InputError, match="junk.dcm"):
        read_image(junk)


def test_png_jpeg_tiff_npy_roundtrip(tmp_path, busi):
    frame = busi["images"][5]
    for suffix in (".png", ".tif"):
        Image.fromarray(frame).save(tmp_path / f"f{suffix}")
        np.testing.assert_array_equal(read_image(tmp_path / f"f{suffix}"), frame)
    Image.fromarray(frame).save(tmp_path / "f.jpg", quality=95)
    assert np.abs(read_image(tmp_path / "f.jpg").astype(int) - frame).mean() < 3
    np.save(tmp_path / "f.npy", frame.astype(np.float32) / 255)
    np.testing.assert_array_equal(read_image(tmp_path / "f.npy"), frame.astype(np.float32) / 255)
    Image.fromarray(frame.astype(np.uint16) * 257).save(tmp_path / "f16.png")
    assert read_image(tmp_path / "f16.png").max() > 255  # 16-bit kept, not squashed to 8


def test_rgba_png_drops_alpha(tmp_path, busi):
    frame = busi["images"][5]
    Image.fromarray(np.dstack([frame] * 3 + [np.full_like(frame, 128)]), "RGBA").save(tmp_path / "a.png")
    assert read_image(tmp_path / "a.png").shape == (256, 256, 3)


def test_broken_and_unknown_files(tmp_path, busi):
    Image.fromarray(busi["images"][5]).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match="cut.png"):
        read_image(tmp_path / "cut.png")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="unknown image type"):
        read_image(tmp_path / "notes.txt")
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "missing.png")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="obj.npy"):
        read_image(tmp_path / "obj.npy")
