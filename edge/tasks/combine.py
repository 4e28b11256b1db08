"""How member outputs become one answer: flips on the way in and back out, then a weighted mean or vote.

Definitions (each member m has weight w_m; each sees V views: the frame, then each flip of ``tta``; every
(member, view) pair counts with weight w_m / V, and weights are normalised to sum to 1):

- ``mean-logits``: the weighted mean of the raw logits (all members output logits with the same channels), then
  the task's usual reading (softmax/sigmoid; for masks the per-pixel argmax at the frame's size).
- ``mean-probabilities``: each output read as class probabilities first (softmax/sigmoid, a 1-channel sigmoid
  map becomes [1-p, p]), then the weighted mean.
- ``vote``: each (member, view) votes for its argmax class (per pixel for masks, at the model's resolution);
  the result's probabilities are the weighted vote shares. A tie goes to the first label (for masks: to
  background), so with two equal members vote means "both agree"; prefer a mean there.

Flips apply to the preprocessed input tensor (height and width axes of its layout); a segmentation map computed
on a flipped input is flipped back before it is combined, so every view speaks about the same pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..postprocess import class_probabilities, segmentation_probabilities

# (height, width) flips of each view
_FLIPPED = {"none": (False, False), "hflip": (False, True), "vflip": (True, False), "hvflip": (True, True)}
_HW_AXES = {"NCHW": (2, 3), "NHWC": (1, 2)}


def _axes(view: str, h_axis: int, w_axis: int) -> tuple[int, ...]:
    flip_h, flip_w = _FLIPPED[view]
    return tuple(a for a, on in ((h_axis, flip_h), (w_axis, flip_w)) if on)


def flip_input(tensor: np.ndarray, view: str, layout: str) -> np.ndarray:
    """The preprocessed batch as a view sees it (a contiguous copy when flipped: engines need one)."""
    axes = _axes(view, *_HW_AXES[layout])
    return np.ascontiguousarray(np.flip(tensor, axes)) if axes else tensor


def unflip_output(output: np.ndarray, view: str) -> np.ndarray:
    """A channels-first segmentation map (N, C, h, w) computed on a flipped input, back on the frame's pixels."""
    axes = _axes(view, output.ndim - 2, output.ndim - 1)
    return np.flip(output, axes) if axes else output


def normalised(weights: Sequence[float], views: int) -> list[float]:
    """Per (member, view) weights in member-major order, summing to 1."""
    total = float(sum(weights)) * views
    return [w / total for w in weights for _ in range(views)]


def _vote_planes(probs: np.ndarray) -> np.ndarray:
    """One-hot planes of the argmax class along axis 0 (first class on ties, like ``np.argmax``)."""
    winner = np.argmax(probs, axis=0)
    return (np.arange(probs.shape[0]).reshape((-1,) + (1,) * winner.ndim) == winner).astype(np.float32)


def classification(rows: Sequence[np.ndarray], kinds: Sequence[str], weights: Sequence[float], combine: str
                   ) -> np.ndarray:
    """Class probabilities (num_classes,) of the ensemble from one output row per (member, view)."""
    if combine == "mean-logits":
        mean = sum(w * np.asarray(r, np.float64).reshape(-1) for r, w in zip(rows, weights))
        return class_probabilities(np.asarray(mean, np.float32), "logits")
    probs = [class_probabilities(r, k) for r, k in zip(rows, kinds)]
    if combine == "vote":
        probs = [_vote_planes(p) for p in probs]
    return np.asarray(sum(w * p.astype(np.float64) for p, w in zip(probs, weights)), np.float32)


def segmentation(maps: Sequence[np.ndarray], kinds: Sequence[str], weights: Sequence[float], combine: str
                 ) -> tuple[np.ndarray, str]:
    """The combined (1, C, h, w) map at the model's resolution, and how to read it (``logits`` or
    ``probabilities``): :func:`edgemed.postprocess.segmentation_mask` turns it into the mask at the frame's size."""
    if combine == "mean-logits":
        mean = sum(w * np.asarray(m[0], np.float64) for m, w in zip(maps, weights))
        return np.asarray(mean, np.float32)[None], "logits"
    probs = [segmentation_probabilities(m, k) for m, k in zip(maps, kinds)]
    if combine == "vote":
        probs = [_vote_planes(p) for p in probs]
    return np.asarray(sum(w * p.astype(np.float64) for p, w in zip(probs, weights)), np.float32)[None], \
        "probabilities"
