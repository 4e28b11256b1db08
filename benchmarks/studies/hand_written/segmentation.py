"""A two-class segmenter's mask by hand: the foreground margin resized to the frame in Pillow, thresholded at 0."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import NoBaseline

SIZES = ((128, 128), (512, 512), (584, 568))  # frames: the model's size, and full-resolution masks out


def post(pipe, frame_hw: tuple[int, int], in_hw: tuple[int, int]) -> Callable[[dict], np.ndarray]:
    from PIL import Image

    kind, name = pipe.output_kind, pipe.output_name
    h, w = frame_hw

    def segment(out: dict) -> np.ndarray:
        m = out[name][0]
        if m.shape[0] != 2 or kind == "probabilities":
            raise NoBaseline("a segmenter other than two-class logits")
        margin = np.tanh(0.5 * (m[1] - m[0]))  # sign(p1 - p0), and bilinear is linear: one map to resize
        if margin.shape != (h, w):
            margin = np.asarray(Image.fromarray(margin, "F").resize((w, h), Image.Resampling.BILINEAR))
        return (margin > 0).view(np.uint8)
    return segment


def agrees(result: Any, hand: np.ndarray) -> bool:
    return result.mask.shape == hand.shape and np.array_equal(result.mask, hand)


def frame_sizes(quick: bool) -> tuple[tuple[int, int], ...]:
    """Where the mask is resized back to matters: one full-resolution size quick, all three otherwise."""
    return SIZES[1:2] if quick else SIZES
