"""How the preprocessing spec runs on the hot path: same result as the ops one by one, fewer passes.

The ops in :mod:`edgemed.preprocess` define what a spec means, one array at a time. Run
literally, a typical spec makes several full-size float copies: ``to_rgb`` triples a grey
frame before it is resized, ``scale`` and ``normalize`` each allocate a new image, and the
HWC→CHW transpose copies again. A plan keeps the meaning and drops the copies:

- the trailing ``scale``/``normalize``/``minmax`` ops are per-pixel affine maps, folded into one
  ``(x + shift)·a + b`` per channel, computed once when the plan is made (minmax contributes
  ``shift = -min`` and ``1/range`` per frame), and written straight into the model's input
  tensor. ``shift`` is kept apart so the darkest pixel is exactly 0, as the op gives;
- a ``to_rgb`` followed only by geometry (resize, crop) replicates the grey plane at that final
  write instead of before the geometry: resizing three identical planes gives three identical
  planes (Pillow resamples each band alike), so the result is the same at a third of the work;
- the final NaN/Inf scan is skipped when the input's dtype bounds every value the spec can produce
  (e.g. uint8 through resize and normalize): it cannot find anything there.

Measured side by side (the first benchmarks/studies/overhead.py, 2 cores): on a 28×28 grey frame → RGB →
224×224 → ImageNet normalisation, edgemed's predict took 0.45-0.51× the time of the same steps
written op by op in PIL/numpy. The plan writes into the engine's bound input when predict gives it one (``out``).
Equality with the op-by-op result is tested on real images for
every op combination (tests/test_preprocess_plan.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError

AFFINE_OPS = ("scale", "normalize", "minmax")
GEOMETRY_OPS = ("resize", "center_crop")
SAFE_BOUND = 1e30  # far below float32's 3.4e38: fused rounding can never reach infinity from here


@dataclass(frozen=True)
class Plan:
    prefix: tuple[dict, ...]  # ops run one by one with their reference implementations
    defer_rgb: bool  # a grey frame's to_rgb replication is left to the final write
    minmax: bool  # the tail opens with minmax: its range is measured per frame
    a: tuple[float, ...]  # per channel, the rest of the tail: value = (x + shift) * a * scale + b
    b: tuple[float, ...]
    # (a, b) per channel as the float32 scalars the write multiplies and adds by, made once per plan (two numpy
    # scalars per channel cost 0.3 us a frame); what ``write`` uses where no minmax scales ``a``
    factors: tuple[tuple[np.float32, np.float32], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "factors", tuple((np.float32(a), np.float32(b)) for a, b in zip(self.a, self.b)))


def make_plan(spec: Sequence[dict], channels: int) -> Plan:
    """Split the spec into ops run one by one and a folded affine tail, for a model of ``channels``."""
    ops = list(spec)
    cut = len(ops)
    while cut > 0 and ops[cut - 1]["op"] in AFFINE_OPS:
        cut -= 1
    minmax = [i for i in range(cut, len(ops)) if ops[i]["op"] == "minmax"]
    if minmax:  # the folded tail starts at its last minmax; affine ops before it run one by one
        cut = minmax[-1]
    prefix, tail = ops[:cut], ops[cut:]
    defer = False
    for i, op in enumerate(prefix):
        if op["op"] == "to_rgb" and all(o["op"] in GEOMETRY_OPS for o in prefix[i + 1:]):
            prefix, defer = prefix[:i] + prefix[i + 1:], True
            break
    opens_with_minmax = bool(tail) and tail[0]["op"] == "minmax"
    a, b = _fold(tail[1:] if opens_with_minmax else tail, channels)
    return Plan(tuple(prefix), defer, opens_with_minmax, a, b)


def _fold(ops: Sequence[dict], channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (a, b) of a chain of scale/normalize ops; None-safe for a mean count that cannot fit."""
    a, b = np.ones(channels), np.zeros(channels)
    for op in ops:
        if op["op"] == "scale":
            a, b = a * op["factor"], b * op["factor"]
        else:
            mean, std = np.asarray(op["mean"], np.float64), np.asarray(op["std"], np.float64)
            if mean.size not in (1, channels):
                return (), ()  # refused per frame, with the op's own message (see Plan.check)
            a, b = a / std, (b - mean) / std
    return tuple(a.tolist()), tuple(b.tolist())


def check(plan: Plan, spec: Sequence[dict], channels: int) -> None:
    """The one error folding can meet: a normalize with a mean count that fits no channel count."""
    if not plan.a and channels:
        op = next(o for o in spec if o["op"] == "normalize" and len(o["mean"]) not in (1, channels))
        raise InputError(f"preprocess op 'normalize' has {len(op['mean'])} means for an image with {channels} "
                         "channel(s)", "give one mean/std per channel or a single value")


def _planes(x: np.ndarray, channels: int) -> list[np.ndarray]:
    return [x] * channels if x.ndim == 2 else [x[:, :, c] for c in range(x.shape[2])]


def write(plan: Plan, x: np.ndarray, channels: int, layout: str, out: np.ndarray | None = None) -> np.ndarray:
    """The model's (1, C, H, W) or (1, H, W, C) float32 input from the prefix's result ``x``, written into ``out``
    when it is given (a buffer bound to the engine: every element is written, so what it held does not matter)."""
    shift, scale = 0.0, 1.0
    if plan.minmax:  # as the op: values are float32 before the division, so the range is float32's too
        lo, hi = float(np.float32(x.min())), float(np.float32(x.max()))
        shift, scale = (-lo, 1.0 / float(np.float32(hi - lo))) if hi > lo else (0.0, 0.0)
    h, w = x.shape[:2]
    shape = (1, channels, h, w) if layout == "NCHW" else (1, h, w, channels)
    if out is None or out.shape != shape or out.dtype != np.float32:
        # a fresh 600 kB (224x224x3) array costs ~25 us more than a reused one here: new pages fault in every call
        out = np.empty(shape, np.float32)
    factors = None if plan.minmax else plan.factors
    for c, src in enumerate(_planes(x, channels)):
        dst = out[0, c] if layout == "NCHW" else out[0, :, :, c]
        a, b = plan.a[c] * scale, plan.b[c]
        a32, b32 = (np.float32(a), np.float32(b)) if factors is None else factors[c]  # the same float32 values
        if shift != 0.0:
            np.add(src, np.float32(shift), out=dst, casting="unsafe")
            if a != 1.0:
                np.multiply(dst, a32, out=dst)
        elif a == 1.0:
            np.copyto(dst, src, casting="unsafe")
        else:
            np.multiply(src, a32, out=dst, casting="unsafe")
        if b != 0.0:
            np.add(dst, b32, out=dst)
    return out


def output_bound(spec: Sequence[dict], dtype: np.dtype) -> float:
    """An upper bound on |value| the spec can produce from a finite input of ``dtype`` (inf: none known)."""
    if dtype.kind == "b":
        bound = 1.0
    elif dtype.kind in "ui":
        info = np.iinfo(dtype)
        bound = float(max(abs(int(info.min)), int(info.max)))
    else:
        return math.inf  # a float input may already hold values near float32's limit
    for op in spec:
        name = op["op"]
        if name in ("minmax", "window", "percentile_rescale", "clahe"):
            bound = 1.0
        elif name == "scale":
            bound *= abs(op["factor"])
        elif name == "normalize":
            bound = (bound + max(abs(m) for m in op["mean"])) / min(abs(s) for s in op["std"])
        elif name == "gamma":
            bound = max(bound, 1.0) ** op["gamma"]
        elif name == "resize" and op.get("interpolation", "bilinear") in ("bicubic", "lanczos"):
            bound *= 2.0  # their kernels overshoot, by well under a factor of two
        if not math.isfinite(bound) or bound > SAFE_BOUND:
            return math.inf
    return bound
