"""The hot-path plan gives the same model input as the spec's ops run one by one, for any spec."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgemed.errors import InputError
from edgemed.preprocess import Preprocessor
from edgemed.preprocess_plan import make_plan, output_bound

SIZE = 48


def _reference(pre: Preprocessor, image: np.ndarray) -> np.ndarray:
    x, _ = pre.image(image)
    x = x[:, :, None] if x.ndim == 2 else x
    return (x.transpose(2, 0, 1) if pre.layout == "NCHW" else x)[None]


def _ops(channels: int):
    geometry = st.sampled_from([
        {"op": "resize", "size": [SIZE, SIZE], "interpolation": "bilinear"},
        {"op": "resize", "size": [SIZE, SIZE], "interpolation": "nearest"},
        {"op": "resize", "size": [SIZE, SIZE], "interpolation": "area"},
        {"op": "resize", "size": [SIZE, SIZE], "interpolation": "bicubic", "keep_aspect": True},
    ])
    middle = st.lists(st.sampled_from([
        {"op": "window", "center": 80, "width": 120}, {"op": "gamma", "gamma": 0.8},
        {"op": "percentile_rescale", "low": 1, "high": 99}, {"op": "scale", "factor": 0.5},
    ]), max_size=2)
    mean = [0.485, 0.456, 0.406][:channels] if channels == 3 else [0.5]
    std = [0.229, 0.224, 0.225][:channels] if channels == 3 else [0.25]
    tail = st.lists(st.sampled_from([
        {"op": "scale", "factor": 1 / 255}, {"op": "normalize", "mean": mean, "std": std}, {"op": "minmax"},
        {"op": "normalize", "mean": [10.0], "std": [3.0]}, {"op": "scale", "factor": -2.5},
    ]), max_size=3)
    colour = {"op": "to_rgb"} if channels == 3 else {"op": "to_gray"}
    return st.tuples(st.booleans(), geometry, middle, tail, st.booleans()).map(
        lambda t: ([colour] if t[0] else []) + [t[1]] + t[2] + t[3] + ([] if t[0] else [colour]) * t[4])


@pytest.fixture(scope="module")
def images(busi):
    grey = busi["images"][300][:200, :240]
    rgb = np.stack([grey, (grey * 0.8).astype(np.uint8), np.flipud(grey)], axis=2)
    return {"grey uint8": grey, "rgb uint8": rgb, "grey uint16": grey.astype(np.uint16) * 250,
            "ct float32": grey.astype(np.float32) * 7.5 - 1000.0, "flat": np.full((30, 40), 7, np.uint8)}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_plan_equals_the_ops_one_by_one(images, data):
    channels = data.draw(st.sampled_from([1, 3]))
    spec = data.draw(_ops(channels))
    layout = data.draw(st.sampled_from(["NCHW", "NHWC"]))
    name = data.draw(st.sampled_from(sorted(images)))
    shape = [1, channels, SIZE, SIZE] if layout == "NCHW" else [1, SIZE, SIZE, channels]
    pre = Preprocessor(spec, shape, layout)
    try:
        want = _reference(pre, images[name])
    except InputError:  # the ops refuse it (e.g. 3 means for 1 channel): the plan must refuse it too
        with pytest.raises(InputError, match="channel|means"):
            pre(images[name])
        return
    channels_out = want.shape[1] if layout == "NCHW" else want.shape[3]
    if channels_out != channels:
        with pytest.raises(InputError, match="channel"):
            pre(images[name])
        return
    got = pre(images[name]).tensor
    assert got.shape == want.shape and got.dtype == np.float32 and got.flags.c_contiguous
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6 * scale, err_msg=f"{spec} on {name}")
    # written into a reused buffer (predict's engine-bound input), whatever it held: the same bits
    out = np.full(want.shape, np.nan, np.float32)
    bound = pre(images[name], out=out).tensor
    assert bound is out and np.array_equal(bound, got), f"{spec} on {name}"
    # another frame of that dtype and shape takes the trusted path (checks done once per dtype and shape): the
    # tensor and geometry a fresh preprocessor's checked path gives it, to the bit
    other = np.ascontiguousarray(images[name][::-1, ::-1])
    assert pre._trusted, f"{spec} on {name}: the checked frame left nothing to trust"
    fresh = Preprocessor(spec, shape, layout)(other)
    trusted = pre(other)
    assert np.array_equal(trusted.tensor, fresh.tensor) and trusted.geometry == fresh.geometry, f"{spec} on {name}"
    assert trusted.original_size == fresh.original_size


def test_the_plan_defers_rgb_and_folds_the_affine_tail():
    plan = make_plan([{"op": "to_rgb"}, {"op": "resize", "size": [224, 224]}, {"op": "scale", "factor": 1 / 255},
                      {"op": "normalize", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}], 3)
    assert plan.defer_rgb and [o["op"] for o in plan.prefix] == ["resize"] and not plan.minmax
    np.testing.assert_allclose(plan.a, [1 / 255 / s for s in (0.229, 0.224, 0.225)])
    np.testing.assert_allclose(plan.b, [-m / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    kept = make_plan([{"op": "to_rgb"}, {"op": "gamma", "gamma": 2.0}, {"op": "resize", "size": [8, 8]}], 3)
    assert not kept.defer_rgb and kept.prefix[0]["op"] == "to_rgb"
    late = make_plan([{"op": "scale", "factor": 2.0}, {"op": "minmax"}, {"op": "scale", "factor": 3.0}], 1)
    assert [o["op"] for o in late.prefix] == ["scale"] and late.minmax and late.a == (3.0,)


def test_the_nan_scan_is_skipped_only_where_the_dtype_bounds_every_value():
    spec = [{"op": "resize", "size": [8, 8]}, {"op": "scale", "factor": 1 / 255},
            {"op": "normalize", "mean": [0.5], "std": [0.5]}]
    assert output_bound(spec, np.dtype(np.uint8)) < 10
    assert output_bound(spec, np.dtype(np.float32)) == float("inf")  # a float frame may hold anything finite
    assert output_bound([{"op": "scale", "factor": 1e35}], np.dtype(np.uint16)) == float("inf")
    pre = Preprocessor([{"op": "scale", "factor": 1e35}], [1, 1, 4, 4])
    with pytest.raises(InputError, match="NaN or Inf"):
        pre(np.full((4, 4), 60000, np.uint16))


def test_a_trusted_dtype_and_shape_still_has_every_pixel_checked(images):
    """Once a float frame's dtype and shape are trusted, a NaN in the next frame is still refused, and a frame of
    another shape or dtype goes through every check again."""
    ct = images["ct float32"]
    pre = Preprocessor([{"op": "resize", "size": [SIZE, SIZE]}, {"op": "scale", "factor": 1 / 255}], [1, 1, SIZE, SIZE])
    pre(ct)
    assert (ct.dtype, ct.shape) in pre._trusted
    bad = ct.copy()
    bad[5, 7] = np.nan
    with pytest.raises(InputError, match="NaN or Inf"):
        pre(bad)
    with pytest.raises(InputError, match="not \\(H,W\\)"):
        pre(np.zeros((4,) + ct.shape, np.float32))
    rgb = Preprocessor([{"op": "resize", "size": [SIZE, SIZE]}], [1, 1, SIZE, SIZE])
    rgb(images["grey uint8"])
    with pytest.raises(InputError, match="channel"):  # an RGB frame for a grey model: its own signature, checked
        rgb(images["rgb uint8"])


def test_a_buffer_of_another_shape_or_type_is_never_written(images):
    pre = Preprocessor([{"op": "resize", "size": [SIZE, SIZE]}, {"op": "scale", "factor": 1 / 255}],
                       [1, 1, SIZE, SIZE])
    want = pre(images["grey uint8"]).tensor
    for wrong in (np.zeros((1, 1, SIZE, SIZE + 1), np.float32), np.zeros((1, 1, SIZE, SIZE), np.float64)):
        before = wrong.copy()
        got = pre(images["grey uint8"], out=wrong).tensor
        assert got is not wrong and np.array_equal(got, want) and np.array_equal(wrong, before)
