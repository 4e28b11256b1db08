"""Turning raw model outputs into clinical results, and masks back onto the original image.

Segmentation probabilities are mapped back through the preprocessing geometry in reverse
(crop → pad back, letterbox → unpad, resize → bilinear resize to the source size) before
the argmax, so the mask a clinician sees is aligned with the frame they captured.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .preprocess import CropStep, ResizeStep


def check_finite(outputs: dict[str, np.ndarray], tensor: np.ndarray, error: type[InputError] = InputError) -> None:
    """Refuse raw model outputs that hold NaN or Inf: read on, they become a silently wrong answer (NaN
    probabilities with a label, a mask with no lesion). A finite input can still overflow inside the model:
    a float frame of values near 1e38 passes every input check, and float32 arithmetic in the first layers
    turns it into Inf and then NaN. Checked once per call, on what the engine returned (microseconds: the
    outputs are small next to the frame), so every task and every caller (predict, stream, Triton, beats)
    is covered by the same rule."""
    for name, value in outputs.items():
        value = np.asarray(value)
        # np.isfinite(...).all() (measured against one summing pass: 1.2 against 0.9 us for a classifier's row, 4.3
        # against 6.5 us for a U-Net's 2x128x128 logits; not worth a second rule)
        if value.dtype.kind in "fc" and not np.isfinite(value).all():
            with np.errstate(all="ignore"):
                peak = float(np.nanmax(np.abs(tensor))) if tensor.size and not np.isnan(tensor).all() else float("nan")
            raise error(f"the model's output {name!r} holds NaN or Inf for this input (its largest value after "
                        f"preprocessing is {peak:.3g}, which overflows the model)",
                        "pass data in the range the model was trained on (e.g. 8-bit or calibrated pixel values, "
                        "signals in mV)")


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def class_probabilities(output: np.ndarray, kind: str) -> np.ndarray:
    """(num_classes,) probabilities from one classifier output row."""
    row = np.asarray(output, dtype=np.float32).reshape(-1)
    if kind == "probabilities":
        return row if row.size > 1 else np.array([1.0 - row[0], row[0]], dtype=np.float32)
    if row.size == 1:
        p = float(sigmoid(row)[0])
        return np.array([1.0 - p, p], dtype=np.float32)
    # softmax's ufuncs on the one row, called without the keepdims wrappers (4.4 -> 3.4 us for two classes): the
    # same reductions and element-wise ops, so the same bits as softmax() and class_probabilities_rows
    e = np.exp(row - np.maximum.reduce(row))
    e /= np.add.reduce(e)
    return e


def class_probabilities_rows(outputs: np.ndarray, kind: str) -> np.ndarray:
    """(K, num_classes) probabilities of K classifier outputs at once (a record's beats): row k is exactly
    ``class_probabilities(outputs[k], kind)`` (the same ops along the last axis; tests/test_ecg.py holds it),
    without a Python call per row."""
    rows = np.asarray(outputs, dtype=np.float32).reshape(len(outputs), -1)
    if rows.shape[1] == 1:
        if kind == "probabilities":  # 1 - p in float32, as class_probabilities' float32 scalar does
            return np.concatenate([1.0 - rows, rows], axis=1)
        p = sigmoid(rows).astype(np.float64)  # class_probabilities takes float(p): 1 - p in float64, then float32
        return np.concatenate([1.0 - p, p], axis=1).astype(np.float32)
    return rows if kind == "probabilities" else softmax(rows).astype(np.float32, copy=False)


def segmentation_probabilities(output: np.ndarray, kind: str) -> np.ndarray:
    """(C, h, w) per-class probabilities, C >= 2 (a single sigmoid channel becomes [1-p, p])."""
    maps = np.asarray(output, dtype=np.float32)
    if maps.ndim == 4:
        maps = maps[0]
    if maps.shape[0] == 1:
        p = maps[0] if kind == "probabilities" else sigmoid(maps[0])
        return np.stack([1.0 - p, p])
    return maps if kind == "probabilities" else softmax(maps, axis=0)


def _resize_plane(plane: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    from PIL import Image  # here, not at import: the signal path never resizes a plane (cold start, README)

    h, w = size_hw
    return np.asarray(Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32), "F").resize(
        (w, h), Image.Resampling.BILINEAR))


def _resize_maps(maps: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    if maps.shape[1:] == tuple(size_hw):
        return maps
    if maps.shape[0] == 1:  # the common two-class margin: no stacking copy
        return _resize_plane(maps[0], size_hw)[None]
    return np.stack([_resize_plane(m, size_hw) for m in maps])


def _background(num_classes: int, size_hw: tuple[int, int], fill: list[float] | None) -> np.ndarray:
    out = np.zeros((num_classes,) + tuple(size_hw), dtype=np.float32)
    if fill is None:
        out[0] = 1.0  # probability maps: background is class 0 with certainty
    else:
        out[:] = np.asarray(fill, np.float32)[:, None, None]
    return out


def to_original_geometry(maps: np.ndarray, geometry: list, fill: list[float] | None = None) -> np.ndarray:
    """Undo the preprocessing geometry, last step first; areas outside the model's view are background
    (``fill`` gives the per-map value there; default: probability 1 for class 0, 0 for the others)."""
    for step in reversed(geometry):
        if isinstance(step, CropStep):
            full = _background(maps.shape[0], step.src, fill)
            sh, sw = step.src
            t, lft = step.top, step.left
            y0, x0 = max(0, t), max(0, lft)
            y1, x1 = min(sh, t + step.dst[0]), min(sw, lft + step.dst[1])
            if y1 > y0 and x1 > x0:
                full[:, y0:y1, x0:x1] = maps[:, y0 - t:y1 - t, x0 - lft:x1 - lft]
            maps = full
        elif isinstance(step, ResizeStep):
            top, left, h, w = step.box
            maps = _resize_maps(maps[:, top:top + h, left:left + w], step.src)
    return maps


def mask_from_probabilities(maps: np.ndarray) -> np.ndarray:
    return np.argmax(maps, axis=0).astype(np.uint8)


def segmentation_mask(output: np.ndarray, kind: str, geometry: list) -> tuple[np.ndarray, int]:
    """The (H, W) class map at the original image size, and the number of classes.

    Two classes take a shortcut that gives the same mask: the argmax is the sign of the margin
    p1 - p0 (= tanh((l1 - l0) / 2) for logits), and bilinear resizing is linear, so one margin map
    (background -1) is mapped back instead of two probability maps. It halves the resizing cost on
    the per-frame hot path of a 30 fps stream.
    """
    maps = np.asarray(output, dtype=np.float32)
    if maps.ndim == 4:
        maps = maps[0]
    if maps.shape[0] in (1, 2):
        if maps.shape[0] == 1:
            margin = 2.0 * (maps[0] if kind == "probabilities" else sigmoid(maps[0])) - 1.0
        else:
            margin = np.subtract(maps[1], maps[0])  # one new buffer, transformed in place
            if kind != "probabilities":
                margin *= 0.5
                np.tanh(margin, out=margin)
        margin = to_original_geometry(margin.astype(np.float32, copy=False)[None], geometry, fill=[-1.0])[0]
        return np.greater(margin, 0).view(np.uint8), 2
    probs = to_original_geometry(segmentation_probabilities(maps[None], kind), geometry)
    return mask_from_probabilities(probs), probs.shape[0]
