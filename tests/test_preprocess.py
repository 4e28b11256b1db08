"""Each preprocessing op against a trusted implementation (Pillow, pydicom, scikit-image, numpy)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageOps
from pydicom.pixels import apply_modality_lut, apply_windowing

from edgemed.errors import InputError
from edgemed.postprocess import mask_from_probabilities, to_original_geometry
from edgemed.preprocess import Preprocessor, validate_spec

from .conftest import DICOM


def run(spec, image):
    x, _ = Preprocessor(spec, [1, 1, 1, 1]).image(image)
    return x


@pytest.fixture(scope="module")
def frame(busi):
    return busi["images"][300]  # a real 256x256 uint8 ultrasound frame


@pytest.fixture(scope="module")
def rgb_frame(frame):
    # A real colour frame: the ultrasound frame tinted per channel.
    return np.stack([frame, (frame * 0.8).astype(np.uint8), np.flipud(frame)], axis=2)


@pytest.mark.parametrize("interpolation,pil", [("bilinear", Image.Resampling.BILINEAR),
                                                ("nearest", Image.Resampling.NEAREST),
                                                ("area", Image.Resampling.BOX)])
@pytest.mark.parametrize("size", [(128, 128), (300, 200), (97, 131)])
def test_resize_matches_pillow_uint8(frame, rgb_frame, interpolation, pil, size):
    spec = [{"op": "resize", "size": list(size), "interpolation": interpolation}]
    for img, mode in ((frame, "L"), (rgb_frame, "RGB")):
        ours = run(spec, img)
        want = np.asarray(Image.fromarray(img, mode).resize(size[::-1], pil), dtype=np.float32)
        np.testing.assert_array_equal(ours, want)


def test_resize_then_scale_equals_torchvision_style_pipeline(frame):
    # torchvision: Resize on a PIL image, then ToTensor (/255). Same pixels, same floats.
    ours = run([{"op": "resize", "size": [128, 128]}, {"op": "scale", "factor": 1 / 255}], frame)
    want = np.asarray(Image.fromarray(frame).resize((128, 128), Image.Resampling.BILINEAR),
                      dtype=np.float32) * np.float32(1 / 255)
    np.testing.assert_allclose(ours, want, rtol=0, atol=1e-7)


def test_resize_float_matches_pillow_F_mode(frame):
    hu = frame.astype(np.float32) * 7.5 - 1000.0
    ours = run([{"op": "resize", "size": [64, 80]}], hu)
    want = np.asarray(Image.fromarray(hu, "F").resize((80, 64), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(ours, want)


@pytest.mark.parametrize("shape", [(256, 180), (180, 256), (256, 256)])
def test_keep_aspect_matches_imageops_pad(busi, shape):
    img = np.asarray(Image.fromarray(busi["images"][10]).resize(shape[::-1]))
    ours = run([{"op": "resize", "size": [128, 128], "keep_aspect": True}], img)
    want = np.asarray(ImageOps.pad(Image.fromarray(img), (128, 128), Image.Resampling.BILINEAR, color=0),
                      dtype=np.float32)
    np.testing.assert_array_equal(ours, want)


def test_to_gray_matches_pillow(rgb_frame):
    ours = run([{"op": "to_gray"}], rgb_frame)
    np.testing.assert_array_equal(ours, np.asarray(Image.fromarray(rgb_frame, "RGB").convert("L"), np.float32))


def test_to_rgb_replicates_channels(frame):
    ours = run([{"op": "to_rgb"}], frame)
    np.testing.assert_array_equal(ours, np.asarray(Image.fromarray(frame).convert("RGB"), np.float32))


@pytest.mark.parametrize("size", [(200, 200), (256, 100), (300, 320)])
def test_center_crop_matches_torchvision_rule_via_pillow(frame, size):
    th, tw = size
    h, w = frame.shape
    top, left = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
    if th > h or tw > w:  # torchvision pads symmetrically first (floor on the top/left)
        top, left = -((th - h) // 2) if th > h else top, -((tw - w) // 2) if tw > w else left
    want = np.asarray(Image.fromarray(frame).crop((left, top, left + tw, top + th)), np.float32)
    np.testing.assert_array_equal(run([{"op": "center_crop", "size": list(size)}], frame), want)


def test_window_matches_pydicom_linear_voi():
    ds = pydicom.dcmread(DICOM / "CT_small.dcm")
    hu = apply_modality_lut(ds.pixel_array, ds)
    ds.WindowCenter, ds.WindowWidth = 40, 400
    windowed = apply_windowing(hu.copy(), ds)
    signed = ds.PixelRepresentation == 1
    y_min = -(2 ** (ds.BitsStored - 1)) if signed else 0
    y_max = 2 ** (ds.BitsStored - 1) - 1 if signed else 2**ds.BitsStored - 1
    y_min, y_max = (y * ds.RescaleSlope + ds.RescaleIntercept for y in (y_min, y_max))
    want = (windowed - y_min) / (y_max - y_min)
    ours = run([{"op": "window", "center": 40, "width": 400}], hu.astype(np.float32))
    np.testing.assert_allclose(ours, want, atol=1e-6)


def test_minmax_percentile_gamma_clahe_match_skimage(frame):
    exposure = pytest.importorskip("skimage.exposure")
    x = frame.astype(np.float32)
    np.testing.assert_allclose(run([{"op": "minmax"}], frame),
                               exposure.rescale_intensity(x, out_range=(0.0, 1.0)), atol=1e-6)
    lo, hi = np.percentile(x, [2, 98])
    np.testing.assert_allclose(run([{"op": "percentile_rescale", "low": 2, "high": 98}], frame),
                               exposure.rescale_intensity(x, in_range=(lo, hi), out_range=(0.0, 1.0)), atol=1e-6)
    unit = run([{"op": "minmax"}], frame)
    np.testing.assert_allclose(run([{"op": "minmax"}, {"op": "gamma", "gamma": 1.7}], frame),
                               exposure.adjust_gamma(unit, 1.7), atol=1e-6)
    np.testing.assert_allclose(
        run([{"op": "clahe", "clip_limit": 0.02, "tile_grid": [8, 8]}], frame),
        exposure.equalize_adapthist(unit, kernel_size=(32, 32), clip_limit=0.02), atol=1e-5)


def test_normalize_per_channel(rgb_frame):
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    ours = run([{"op": "scale", "factor": 1 / 255}, {"op": "normalize", "mean": mean, "std": std}], rgb_frame)
    want = (rgb_frame.astype(np.float32) * np.float32(1 / 255) - np.float32(mean)) / np.float32(std)
    np.testing.assert_allclose(ours, want, atol=1e-6)


def test_layout_and_batch(frame, rgb_frame):
    pre = Preprocessor([{"op": "to_rgb"}, {"op": "resize", "size": [64, 64]}], ["batch", 3, 64, 64])
    t = pre(frame).tensor
    assert t.shape == (1, 3, 64, 64) and t.dtype == np.float32
    np.testing.assert_array_equal(t[0, 0], t[0, 2])


def test_mask_maps_back_through_letterbox_and_crop(frame):
    # A synthetic score map with a square lesion, passed back through keep-aspect resize + crop,
    # lands where the same square lies in the original frame.
    img = frame[:, :200]
    pre = Preprocessor([{"op": "resize", "size": [140, 140], "keep_aspect": True},
                        {"op": "center_crop", "size": [128, 128]}], [1, 1, 128, 128])
    prepared = pre(img)
    probs = np.zeros((2, 128, 128), np.float32)
    probs[0] = 1.0
    probs[:, 40:80, 50:90] = [[[0.0]], [[1.0]]]
    mask = mask_from_probabilities(to_original_geometry(probs, prepared.geometry))
    assert mask.shape == img.shape
    ys, xs = np.nonzero(mask)
    # forward map of the box: crop offset 6, letterbox scale 140/256, x offset round((140-109)/2)=16 (rounded)
    scale = 140 / 256
    assert abs(ys.min() - (40 + 6) / scale) <= 2 and abs(ys.max() + 1 - (80 + 6) / scale) <= 2
    assert abs(xs.min() - (50 + 6 - 16) / scale) <= 2 and abs(xs.max() + 1 - (90 + 6 - 16) / scale) <= 2


@pytest.mark.parametrize("spec,needle", [
    ({"op": "resize"}, "must be a JSON list"),
    ([{"op": "sharpen"}], "unknown op 'sharpen'"),
    ([{"op": "resize", "size": [0, 10]}], "outside"),
    ([{"op": "resize", "size": [10, 10], "interpolation": "cubic-ish"}], "interpolation"),
    ([{"op": "scale", "factor": float("nan")}], "finite"),
    ([{"op": "minmax", "extra": 1}], "unknown parameter"),
    ([{"op": "normalize", "mean": [0.5], "std": [0]}], "non-zero std"),
    ([{"op": "window", "center": 40, "width": -5}], "> 0"),
    ([{"op": "percentile_rescale", "low": 90, "high": 10}], "low < high"),
])
def test_bad_specs_are_refused_with_clear_errors(spec, needle):
    with pytest.raises(InputError, match=needle):
        validate_spec(spec)


def test_bad_images_are_refused(frame):
    pre = Preprocessor([{"op": "resize", "size": [32, 32]}], [1, 1, 32, 32])
    bad = frame.astype(np.float32)
    bad[3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        pre(bad)
    with pytest.raises(InputError, match="channel"):
        pre(np.stack([frame] * 3, axis=2))
    with pytest.raises(InputError, match="shape"):
        pre(np.zeros((4, 32, 32)))
    with pytest.raises(InputError, match="empty"):
        pre(np.zeros((0, 32)))
    with pytest.raises(InputError, match="dtype"):
        pre(np.zeros((32, 32), dtype=complex))
    with pytest.raises(InputError, match="to_gray"):
        Preprocessor([{"op": "resize", "size": [32, 32]}], [1, 1, 32, 32])(np.dstack([frame] * 3))
