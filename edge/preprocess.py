"""The preprocessing spec: declarative JSON ops, applied by this one implementation everywhere.

Calibration, conversion probes, the runtime and the benchmarks all call :class:`Preprocessor`,
because a mismatch between calibration-time and inference-time preprocessing is the
commonest cause of an INT8 model collapsing silently. Resizing delegates to Pillow so that a
model trained with torchvision's PIL-based transforms sees the same pixels after deployment.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InputError
from .preprocess_plan import SAFE_BOUND, check, make_plan, output_bound, write

if TYPE_CHECKING:
    from PIL import Image

# Pillow's resampling filters by name. Pillow itself is imported where a frame is converted or resized, not with this
# module: a signal bundle's cold start never needs it (importing PIL.Image took 10 ms of it, python -X importtime).
_INTERPOLATION = {"nearest": "NEAREST", "bilinear": "BILINEAR", "bicubic": "BICUBIC", "area": "BOX",
                  "lanczos": "LANCZOS"}

# Largest side a spec may ask to resize or crop to: a hostile spec must not allocate gigabytes.
MAX_SIDE = 8192
# Largest frame accepted (pixels): beyond this an input is refused before any work (64 MP covers
# whole-slide tiles and large-panel detectors; pathology slides must be tiled first).
MAX_IMAGE_PIXELS = 64_000_000


@dataclass(frozen=True)
class ResizeStep:
    """Where a resize put the source pixels, so a mask can be mapped back."""

    src: tuple[int, int]
    dst: tuple[int, int]
    box: tuple[int, int, int, int]  # top, left, height, width of the image inside dst (padding outside)


@dataclass(frozen=True)
class CropStep:
    src: tuple[int, int]
    dst: tuple[int, int]
    top: int  # offset of the crop in the (possibly padded) source; negative means padding
    left: int


@dataclass
class Prepared:
    """A model-ready batch plus what is needed to map outputs back onto the original image."""

    tensor: np.ndarray
    original_size: tuple[int, int]
    geometry: list[ResizeStep | CropStep] = field(default_factory=list)
    # the model's other inputs by name ((1, K) feature tensors, edgemed.feature_inputs); None for one-input models
    extra: dict[str, np.ndarray] | None = None

    def feed(self, input_name: str) -> dict[str, np.ndarray]:
        """What the engine is given: the main tensor under its name, and any other input beside it."""
        return {input_name: self.tensor} if self.extra is None else {input_name: self.tensor, **self.extra}


def _size(value: Any, op: str) -> tuple[int, int]:
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise InputError(f"preprocess op {op!r}: 'size' must be [H, W] integers, got {value!r}",
                         "write e.g. \"size\": [256, 256]")
    h, w = value
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise InputError(f"preprocess op {op!r}: size {value} is outside 1..{MAX_SIDE}",
                         "choose the model's input size")
    return int(h), int(w)


def _number(params: dict, key: str, op: str, default: float | None = None, positive: bool = False) -> float:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"preprocess op {op!r}: {key!r} must be a finite number, got {value!r}",
                         "fix the preprocessing spec")
    if positive and value <= 0:
        raise InputError(f"preprocess op {op!r}: {key!r} must be > 0, got {value!r}", "fix the preprocessing spec")
    return float(value)


def _channels_of(image: np.ndarray) -> int:
    return 1 if image.ndim == 2 else image.shape[2]


# --- the ops ------------------------------------------------------------------------------------


def _to_gray(image: np.ndarray, p: dict, geo: list) -> np.ndarray:
    if image.ndim == 2:
        return image
    if image.dtype == np.uint8:
        # Pillow's own ITU-R 601-2 luma conversion with its rounding, as torchvision's Grayscale does.
        from PIL import Image

        return np.asarray(Image.fromarray(np.ascontiguousarray(image), "RGB").convert("L"))
    rgb = image.astype(np.float32, copy=False)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _to_rgb(image: np.ndarray, p: dict, geo: list) -> np.ndarray:
    if image.ndim == 3:
        return image
    return np.repeat(image[:, :, None], 3, axis=2)


def _resize_plane(plane: np.ndarray, size_hw: tuple[int, int], method: Image.Resampling) -> np.ndarray:
    from PIL import Image

    h, w = size_hw
    if plane.dtype == np.uint8:
        mode = "L" if plane.ndim == 2 else "RGB"
        return np.asarray(Image.fromarray(np.ascontiguousarray(plane), mode).resize((w, h), method))
    plane = plane.astype(np.float32, copy=False)
    if plane.ndim == 2:
        return np.asarray(Image.fromarray(np.ascontiguousarray(plane), "F").resize((w, h), method))
    return np.stack([_resize_plane(plane[:, :, c], size_hw, method) for c in range(plane.shape[2])], axis=2)


def resize_array(image: np.ndarray, size_hw: tuple[int, int], interpolation: str = "bilinear") -> np.ndarray:
    """Pillow-exact resize of a (H,W) or (H,W,C) array; uint8 stays uint8 (as PIL images do)."""
    if image.shape[:2] == tuple(size_hw):
        return image
    from PIL import Image

    return _resize_plane(image, size_hw, Image.Resampling[_INTERPOLATION[interpolation]])


def _resize(image: np.ndarray, p: dict, geo: list) -> np.ndarray:
    th, tw = p["size"]
    h, w = image.shape[:2]
    if not p.get("keep_aspect", False):
        geo.append(_plain_resize(h, w, th, tw))
        return resize_array(image, (th, tw), p.get("interpolation", "bilinear"))
    # Letterbox exactly as PIL.ImageOps.pad(centering=(0.5, 0.5)) does, rounding included.
    nh, nw = th, tw
    if w / h > tw / th:
        nh = max(1, round(h / w * tw))
    elif w / h < tw / th:
        nw = max(1, round(w / h * th))
    inner = resize_array(image, (nh, nw), p.get("interpolation", "bilinear"))
    top, left = round((th - nh) * 0.5), round((tw - nw) * 0.5)
    out = np.zeros((th, tw) + image.shape[2:], dtype=inner.dtype)
    out[top:top + nh, left:left + nw] = inner
    geo.append(ResizeStep((h, w), (th, tw), (top, left, nh, nw)))
    return out


@lru_cache(maxsize=64)
def _plain_resize(h: int, w: int, th: int, tw: int) -> ResizeStep:
    """A resize without letterbox, made once per pair of sizes (a step is immutable): a frozen dataclass costs
    ~0.7 us to build, a tenth of what the 28x28 classifier's preprocessing took per frame."""
    return ResizeStep((h, w), (th, tw), (0, 0, th, tw))


def _center_crop(image: np.ndarray, p: dict, geo: list) -> np.ndarray:
    # torchvision.transforms.functional.center_crop: pad with zeros when smaller, then crop.
    th, tw = p["size"]
    h, w = image.shape[:2]
    if th > h or tw > w:
        pt, pl = (th - h) // 2 if th > h else 0, (tw - w) // 2 if tw > w else 0
        pb, pr = (th - h + 1) // 2 if th > h else 0, (tw - w + 1) // 2 if tw > w else 0
        pad = [(pt, pb), (pl, pr)] + [(0, 0)] * (image.ndim - 2)
        padded = np.pad(image, pad)
        top0, left0 = -pt, -pl
    else:
        padded, top0, left0 = image, 0, 0
    ph, pw = padded.shape[:2]
    top, left = int(round((ph - th) / 2.0)), int(round((pw - tw) / 2.0))
    geo.append(CropStep((h, w), (th, tw), top + top0, left + left0))
    return padded[top:top + th, left:left + tw]


def _as_float(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32, copy=False)


def _scale(image: np.ndarray, p: dict, geo: list) -> np.ndarray:
    return _as_float(image) * np.float32(p["factor"])


def _minmax(image: np.ndarray, p: dict, geo: list) -> np.ndarray:
    x = _as_float(image)
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return np.zeros_like(x)
    return (x - lo) / np.float32(hi - lo)


def _window(image: np.ndarray, p: dict, geo: list) -> np.ndarray:
    # DICOM PS3.3 C.11.2.1.2.1 linear VOI window, output in [0, 1].
    c, w = p["center"], p["width"]
    x = _as_float(image).astype(np.float64)
    y = ((x - (c - 0.5)) / (w - 1.0) + 0.5) if w > 1 else (x > c - 0.5).astype(np.float64)
    return np.clip(y, 0.0, 1.0).astype(np.float32)


def _percentile_rescale(image: np.ndarray, p: dict, geo: list) -> np.ndarray:
    x = _as_float(image)
    lo, hi = np.percentile(x, [p.get("low", 0.5), p.get("high", 99.5)])
    if hi <= lo:
        return np.zeros_like(x)
    return np.clip((x - np.float32(lo)) / np.float32(hi - lo), 0.0, 1.0)


def _gamma(image: np.ndarray, p: dict, geo: list) -> np.ndarray:
    return np.power(np.clip(_as_float(image), 0.0, None), np.float32(p["gamma"]))


def _clahe(image: np.ndarray, p: dict, geo: list) -> np.ndarray:
    try:
        from skimage.exposure import equalize_adapthist
    except ImportError as exc:
        raise InputError("preprocess op 'clahe' needs scikit-image", "pip install scikit-image") from exc
    x = _as_float(image)
    lo, hi = float(x.min()), float(x.max())
    x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    gh, gw = p.get("tile_grid", [8, 8])
    kernel = (max(1, x.shape[0] // gh), max(1, x.shape[1] // gw))
    # skimage's clip_limit is normalised to [0, 1]; OpenCV-style limits (2.0) are divided by 100.
    limit = p.get("clip_limit", 2.0)
    return equalize_adapthist(x, kernel_size=kernel, clip_limit=limit / 100.0 if limit > 1 else limit).astype(
        np.float32
    )


def _normalize(image: np.ndarray, p: dict, geo: list) -> np.ndarray:
    x = _as_float(image)
    mean = np.asarray(p["mean"], dtype=np.float32)
    std = np.asarray(p["std"], dtype=np.float32)
    if mean.size not in (1, _channels_of(x)):
        raise InputError(
            f"preprocess op 'normalize' has {mean.size} means for an image with {_channels_of(x)} channel(s)",
            "give one mean/std per channel or a single value",
        )
    if x.ndim == 2:
        return (x - mean.reshape(())) / std.reshape(()) if mean.size == 1 else (x - mean[0]) / std[0]
    return (x - mean) / std


# --- validation -------------------------------------------------------------------------------


def _check_resize(p: dict) -> None:
    _size(p.get("size"), "resize")
    interpolation = p.get("interpolation", "bilinear")
    if not isinstance(interpolation, str) or interpolation not in _INTERPOLATION:
        raise InputError(f"preprocess op 'resize': unknown interpolation {p.get('interpolation')!r}",
                         f"use one of {', '.join(_INTERPOLATION)}")
    if not isinstance(p.get("keep_aspect", False), bool):
        raise InputError("preprocess op 'resize': 'keep_aspect' must be true or false", "fix the spec")


def _check_normalize(p: dict) -> None:
    for key in ("mean", "std"):
        v = p.get(key)
        v = [v] if isinstance(v, (int, float)) and not isinstance(v, bool) else v
        if not isinstance(v, list) or not v or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v
        ):
            raise InputError(f"preprocess op 'normalize': {key!r} must be a list of numbers", "fix the spec")
        p[key] = [float(x) for x in v]
    if len(p["mean"]) != len(p["std"]) or any(s == 0 for s in p["std"]):
        raise InputError("preprocess op 'normalize': mean and std need equal lengths and non-zero std",
                         "fix the spec")


def _check_percentiles(p: dict) -> None:
    lo = _number(p, "low", "percentile_rescale", 0.5)
    hi = _number(p, "high", "percentile_rescale", 99.5)
    if not 0 <= lo < hi <= 100:
        raise InputError(f"preprocess op 'percentile_rescale': need 0 <= low < high <= 100, got {lo}, {hi}",
                         "fix the spec")


def _check_clahe(p: dict) -> None:
    _number(p, "clip_limit", "clahe", 2.0, positive=True)
    grid = p.get("tile_grid", [8, 8])
    if not isinstance(grid, list) or len(grid) != 2 or not all(isinstance(g, int) and g > 0 for g in grid):
        raise InputError("preprocess op 'clahe': 'tile_grid' must be [rows, cols] positive integers", "fix the spec")


_OPS: dict[str, tuple[Callable, set[str], Callable[[dict], None] | None]] = {
    "to_gray": (_to_gray, set(), None),
    "to_rgb": (_to_rgb, set(), None),
    "resize": (_resize, {"size", "interpolation", "keep_aspect"}, _check_resize),
    "center_crop": (_center_crop, {"size"}, lambda p: _size(p.get("size"), "center_crop")),
    "scale": (_scale, {"factor"}, lambda p: _number(p, "factor", "scale")),
    "minmax": (_minmax, set(), None),
    "window": (_window, {"center", "width"},
               lambda p: (_number(p, "center", "window"), _number(p, "width", "window", positive=True))),
    "percentile_rescale": (_percentile_rescale, {"low", "high"}, _check_percentiles),
    "gamma": (_gamma, {"gamma"}, lambda p: _number(p, "gamma", "gamma", positive=True)),
    "clahe": (_clahe, {"clip_limit", "tile_grid"}, _check_clahe),
    "normalize": (_normalize, {"mean", "std"}, _check_normalize),
}

KNOWN_OPS = tuple(_OPS)


def validate_spec(spec: Any) -> list[dict]:
    """Check a spec is a list of known ops with well-typed parameters; returns a normalised copy."""
    if not isinstance(spec, list):
        raise InputError(f"preprocessing spec must be a JSON list of ops, got {type(spec).__name__}",
                         'write e.g. [{"op": "resize", "size": [256, 256]}]')
    out = []
    for i, step in enumerate(spec):
        if not isinstance(step, dict) or not isinstance(step.get("op"), str):
            raise InputError(f"preprocessing spec item {i} is not an object with an 'op'",
                             'write e.g. {"op": "minmax"}')
        name = step["op"]
        if name not in _OPS:
            raise InputError(f"preprocessing spec item {i}: unknown op {name!r}",
                             f"use one of {', '.join(KNOWN_OPS)}")
        _, allowed, check = _OPS[name]
        extra = set(step) - allowed - {"op"}
        if extra:
            raise InputError(f"preprocessing spec item {i} ({name}): unknown parameter(s) {sorted(extra)}",
                             f"allowed: {sorted(allowed) or 'none'}")
        params = dict(step)
        if check is not None:
            check(params)
        out.append(params)
    return out


def check_image(image: Any) -> np.ndarray:
    """Refuse arrays that would give a silently wrong answer; returns (H,W) or (H,W,C) with C in 1,3."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"expected a numpy array or an image path, got {type(image).__name__}",
                         "pass numpy (H,W) or (H,W,C), or a file path")
    if image.dtype.kind not in "uifb":
        raise InputError(f"image dtype {image.dtype} is not numeric", "pass an integer or float array")
    if image.dtype.kind == "b":
        image = image.astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    elif image.ndim == 3 and image.shape[2] in (2, 4):
        # Grey+alpha and RGBA arrays lose their alpha, exactly as edgemed reads such PNG files (Pillow's
        # convert to L/RGB drops it): the same picture gives the same answer from a file or an array.
        image = image[:, :, 0] if image.shape[2] == 2 else image[:, :, :3]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise InputError(f"image shape {image.shape} is not (H,W) or (H,W,C) with C 1-4",
                         "pass one 2-D frame (grey) or an RGB frame; split multi-frame data first")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"image shape {image.shape} is empty", "pass a non-empty image")
    if image.shape[0] * image.shape[1] > MAX_IMAGE_PIXELS:
        raise InputError(f"image is {image.shape[0]}x{image.shape[1]}, beyond edgemed's {MAX_IMAGE_PIXELS} pixel limit",
                         "downsample or tile the image before analysis")
    _refuse_nonfinite(image)
    return image


def _refuse_nonfinite(image: np.ndarray) -> None:
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise InputError("image contains NaN or Inf values", "replace or mask non-finite pixels before predict")


def _refuse_nonfinite_tensor(tensor: np.ndarray, bound: float) -> None:
    """The model input's NaN/Inf scan, skipped where the frame's dtype bounds every value the spec can produce."""
    if bound > SAFE_BOUND and not np.isfinite(tensor).all():
        raise InputError("preprocessing produced NaN or Inf", "check the spec's scale/normalize parameters")


# ops whose result, and whether they leave the array as it is, follow from its dtype and shape alone
_SHAPE_OPS = ("to_gray", "to_rgb", "resize", "center_crop")


@dataclass(frozen=True)
class _Trusted:
    """What the first checked frame of one dtype and shape showed (see :meth:`Preprocessor._trusted_call`)."""

    steps: tuple[dict, ...]  # the prefix ops that compute something for such frames
    geometry: tuple  # ResizeStep/CropStep, immutable
    channels: int
    bound: float  # output_bound for the dtype


class Preprocessor:
    """Applies a validated spec, then lays the result out as the model's NCHW (or NHWC) batch.

    ``image()`` runs the ops one by one (the definition); calling the preprocessor runs the same
    spec as a plan (:mod:`edgemed.preprocess_plan`) that gives the same tensor with fewer copies.
    Calibration, conversion probes, the runtime and the benchmarks all call it.
    """

    def __init__(self, spec: Sequence[dict], input_shape: Sequence[int], layout: str = "NCHW") -> None:
        self.spec = validate_spec(list(spec))
        self.input_shape = tuple(int(d) if isinstance(d, int) else -1 for d in input_shape)
        self.layout = layout
        c_axis = 1 if layout == "NCHW" else 3
        self.channels = self.input_shape[c_axis]
        self.hw = self.input_shape[2:4] if layout == "NCHW" else self.input_shape[1:3]
        self.plan = make_plan(self.spec, self.channels)
        self._bounds: dict[np.dtype, float] = {}
        self._trusted: dict[tuple, _Trusted] = {}  # per frame dtype and shape: what the checked first frame showed

    def image(self, image: np.ndarray) -> tuple[np.ndarray, list]:
        """Run the ops on one image, one by one; returns the float32 (H,W[,C]) result and its geometry."""
        geo: list = []
        image = check_image(image)
        for params in self.spec:
            image = _OPS[params["op"]][0](image, params, geo)
        return np.asarray(image, dtype=np.float32), geo

    def __call__(self, image: np.ndarray, out: np.ndarray | None = None) -> Prepared:
        """The model's input batch for one frame; written into ``out`` (the engine's bound input, whose previous
        contents are overwritten) when it has the batch's shape and float32 type, else into a new array."""
        signature = (image.dtype, image.shape) if type(image) is np.ndarray else None
        trusted = self._trusted.get(signature) if signature is not None else None
        if trusted is not None:
            return self._trusted_call(image, out, trusted)
        original = check_image(image)
        geo: list = []
        x = original
        skip = []  # the prefix ops that gave back their input: they will for every frame of this dtype and shape
        for params in self.plan.prefix:
            y = _OPS[params["op"]][0](x, params, geo)
            skip.append(y is x and params["op"] in _SHAPE_OPS)
            x = y
        c = 3 if self.plan.defer_rgb and x.ndim == 2 else _channels_of(x)
        if c != self.channels:
            hint = "add {\"op\": \"to_gray\"}" if self.channels == 1 else "add {\"op\": \"to_rgb\"}"
            raise InputError(
                f"image has {c} channel(s) after preprocessing but the model takes {self.channels}",
                f"{hint} to the preprocessing spec, or pass a {self.channels}-channel image",
            )
        if tuple(x.shape[:2]) != tuple(self.hw):
            raise InputError(
                f"image is {x.shape[0]}x{x.shape[1]} after preprocessing but the model takes "
                f"{self.hw[0]}x{self.hw[1]}",
                f"add {{\"op\": \"resize\", \"size\": [{self.hw[0]}, {self.hw[1]}]}} to the preprocessing spec",
            )
        check(self.plan, self.spec, c)
        tensor = write(self.plan, x, c, self.layout, out)
        bound = self._bounds.get(original.dtype)
        if bound is None:
            bound = self._bounds[original.dtype] = output_bound(self.spec, original.dtype)
        _refuse_nonfinite_tensor(tensor, bound)
        if original is image and signature is not None and len(self._trusted) < 16:
            steps = tuple(p for p, s in zip(self.plan.prefix, skip) if not s)
            self._trusted[signature] = _Trusted(steps, tuple(geo), c, bound)
        return Prepared(tensor, original.shape[:2], geo)

    def _trusted_call(self, image: np.ndarray, out: np.ndarray | None, t: _Trusted) -> Prepared:
        """A frame of a dtype and shape the checked path has prepared before: every check that depends on them alone
        passed then (shape, size, channels, the spec's fit), the ops that gave the frame back as it was are left out
        and the geometry is the one recorded (it follows from the shapes); what depends on the pixels is still done
        (a float frame's NaN/Inf, every op that computes, the output scan where the dtype does not bound it). 6.5 ->
        3.6 us per 28x28 frame of the shipped classifier (with the plan's other savings); tests/test_preprocess_plan
        holds it to the bits of a fresh preprocessor."""
        _refuse_nonfinite(image)
        x, scratch = image, []
        for params in t.steps:
            x = _OPS[params["op"]][0](x, params, scratch)
        tensor = write(self.plan, x, t.channels, self.layout, out)
        _refuse_nonfinite_tensor(tensor, t.bound)
        return Prepared(tensor, image.shape[:2], list(t.geometry))


def default_spec(input_shape: Sequence[int]) -> list[dict]:
    """What a model trained on 8-bit images scaled to [0, 1] expects (torchvision's ToTensor): channel match,
    bilinear resize, /255. Never a per-image rescaling (minmax): that would stretch a dark frame to full
    range, and the model would see an input it was not trained on."""
    c, h, w = input_shape[1], input_shape[2], input_shape[3]
    return [
        {"op": "to_gray" if c == 1 else "to_rgb"},
        {"op": "resize", "size": [int(h), int(w)], "interpolation": "bilinear"},
        {"op": "scale", "factor": 1 / 255},
    ]
