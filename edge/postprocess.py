"""Turning raw model outputs into clinical results, and masks back onto the original image.

Segmentation probabilities are mapped back through the preprocessing geometry in reverse
(crop → pad back, letterbox → unpad, resize → bilinear resize to the source size) before
the argmax, so the mask a clinician sees is aligned with the frame they captured.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .preprocess import CropStep, ResizeStep


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
        return row
    if row.size == 1:
        p = float(sigmoid(row)[0])
        return np.array([1.0 - p, p], dtype=np.float32)
    return softmax(row).astype(np.float32)


def segmentation_probabilities(output: np.ndarray, kind: str) -> np.ndarray:
    """(C, h, w) per-class probabilities, C >= 2 (a single sigmoid channel becomes [1-p, p])."""
    maps = np.asarray(output, dtype=np.float32)
    if maps.ndim == 4:
        maps = maps[0]
    if maps.shape[0] == 1:
        p = maps[0] if kind == "probabilities" else sigmoid(maps[0])
        return np.stack([1.0 - p, p])
    return maps if kind == "probabilities" else softmax(maps, axis=0)


def _resize_maps(maps: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    h, w = size_hw
    if maps.shape[1:] == (h, w):
        return maps
    return np.stack([
        np.asarray(Image.fromarray(np.ascontiguousarray(m, dtype=np.float32), "F").resize(
            (w, h), Image.Resampling.BILINEAR))
        for m in maps
    ])


def _background(num_classes: int, size_hw: tuple[int, int]) -> np.ndarray:
    out = np.zeros((num_classes,) + tuple(size_hw), dtype=np.float32)
    out[0] = 1.0
    return out


def to_original_geometry(maps: np.ndarray, geometry: list) -> np.ndarray:
    """Undo the preprocessing geometry, last step first; areas outside the model's view are background."""
    for step in reversed(geometry):
        if isinstance(step, CropStep):
            full = _background(maps.shape[0], step.src)
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
