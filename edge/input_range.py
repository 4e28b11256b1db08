"""The range of values a model's frames must come in: recorded at conversion, checked on every frame.

A spec that maps values by a fixed rule (``scale`` by 1/255, ``normalize``, ``window``) is right only
for frames like the ones the model was calibrated on. Fed a uint16 frame, an 8-bit spec hands the
model values up to 257 where it saw at most 1 (the shipped BUSI detector then found 79 "lesions" at
score 1.00 on one frame); fed a float frame already scaled to [0, 1], it hands it at most 1/255 (a
U-Net's mask came back all background). Neither raises anywhere, so the answer is silently wrong.

``convert`` records the dtypes of the frames it was given with ``--calib`` (all of them, not only
the subset that calibrates INT8) and their lowest and highest value in the manifest
(``input.value_range``); the pipeline refuses, in one line with the fix, a frame whose values reach
far beyond that range, or a float frame in [0, 1] for a model calibrated on 8-bit-like values.
Specs whose first value op rescales each frame by its own range (``minmax``,
``percentile_rescale``) take any range and are not checked; nor are bundles made before the range
was recorded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from .errors import InputError
from .manifest import ValueRange

GEOMETRY_OPS = {"to_gray", "to_rgb", "resize", "center_crop"}  # move or average values, never rescale them
SELF_SCALING_OPS = {"minmax", "percentile_rescale"}  # map each frame's own range onto a fixed one
EIGHT_BIT_LIKE = 32.0  # a calibrated top above this and a float frame topping at 1: a frame scaled to [0, 1]


def observe(frames: Iterable[tuple[str, np.ndarray]]) -> ValueRange | None:
    """The dtypes and the value range of the ``--calib`` frames (``(name, array)`` pairs, as an ImageSet iterates);
    None for signal windows (they are read in mV, whatever the file's type) or no frames."""
    if getattr(frames, "unit", "images") != "images":
        return None
    dtypes: list[str] = []
    low, high, count = np.inf, -np.inf, 0
    for _, frame in frames:
        x = np.asarray(frame)
        if x.dtype.name not in dtypes:
            dtypes.append(x.dtype.name)
        if x.size:
            low, high = min(low, float(np.min(x))), max(high, float(np.max(x)))
        count += 1
    if not count or not np.isfinite(low) or not np.isfinite(high):
        return None
    return ValueRange(dtypes=dtypes[:8], low=low, high=high, frames=count)


def range_matters(spec: Sequence[dict]) -> bool:
    """Whether the spec's answer depends on the frame's absolute values (its first value op is not self-scaling)."""
    for op in spec:
        if op["op"] not in GEOMETRY_OPS:
            return op["op"] not in SELF_SCALING_OPS
    return True  # geometry only: the model reads the raw values


def always_within(dtype: np.dtype, expected: ValueRange) -> bool:
    """Whether every frame of this dtype passes :func:`check` whatever its values: an integer type whose whole
    range lies inside the accepted band (uint8 against a range calibrated on 8-bit frames). Such frames need
    no min/max pass: it could not find anything (the pipeline asks once per dtype)."""
    if dtype.kind not in "ui":
        return False  # float frames: any value, and the [0, 1] rule
    info = np.iinfo(dtype)
    span = expected.high - expected.low
    return expected.low - span <= int(info.min) and int(info.max) <= expected.high + span


def check(image: np.ndarray, expected: ValueRange) -> None:
    """Refuse a frame far outside the calibrated range (one line, with the fix)."""
    if not isinstance(image, np.ndarray) or image.dtype.kind not in "uif" or not image.size:
        return  # the preprocessor's own checks say what is wrong with it
    lo, hi = float(np.min(image)), float(np.max(image))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return
    span = expected.high - expected.low
    if expected.low - span <= lo and hi <= expected.high + span and not (
            image.dtype.kind == "f" and 0 <= lo < hi <= 1 and expected.high >= EIGHT_BIT_LIKE):
        return  # the common case: nothing to say, so no message is built (it cost ~10 us a frame)
    seen = (f"the model was calibrated on {'/'.join(expected.dtypes)} frames with values in "
            f"[{expected.low:g}, {expected.high:g}] ({expected.frames} frames)")
    rebuild = ("or convert the bundle again with a spec for these frames (minmax, window or percentile_rescale) "
               "and calibration frames like them")
    if hi > expected.high + span or lo < expected.low - span:
        bits = "" if image.dtype.kind == "f" else f"{image.dtype.name} "
        fix = (f"scale the frame into that range first (16-bit to 8-bit: frame // 257), {rebuild}"
               if image.dtype.kind == "u" and image.dtype.itemsize > 1 and expected.high <= 255 else
               f"bring the frame into that range first, {rebuild}")
        raise InputError(f"{bits}frame values reach [{lo:g}, {hi:g}], far outside the range its spec expects: {seen}",
                         fix)
    if image.dtype.kind == "f" and 0 <= lo < hi <= 1 and expected.high >= EIGHT_BIT_LIKE:
        raise InputError(f"float frame values lie in [{lo:g}, {hi:g}], as if already scaled to [0, 1]: {seen}, "
                         "and the spec scales them itself",
                         f"pass the frame as it was before scaling (x 255), {rebuild}")
