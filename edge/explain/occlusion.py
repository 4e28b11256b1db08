"""Occlusion saliency through the runtime: where covering the model's input changes its answer most.

Any classifier, segmenter or detector, any artifact, no graph change and no autograd (Zeiler & Fergus, ECCV 2014): the
preprocessed input is covered patch by patch with its own mean value, each covered copy is run by the pipeline's
engine, and a patch scores how much the target fell — the predicted class's probability (classifiers), or the
mean foreground probability over the lesion the uncovered frame's mask finds (segmenters; the whole frame's
highest foreground probability where that mask is empty), or, for detectors, each box's score, one map per box
the uncovered frame's predict finds (after NMS): on each covered copy the box is looked up among that copy's own
detections (the same class, IoU >= 0.5, one-to-one as the drift gate matches boxes), and a box that vanished —
below the score threshold, or moved too far to match — scores 0. The map is mapped back onto the frame through the
recorded preprocessing geometry, like masks and CAM maps.

It costs one inference per patch, so it is for review, not for the live stream: the caller states the budget
(``budget`` inferences, the uncovered one included), and the patch grid is the finest that fits it. A detector's
boxes share the runs: each covered copy is decoded once and every box is looked up in it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..detection import Detections, match
from ..errors import InputError, OptionError
from ..postprocess import check_finite
from ..tasks import TASKS
from .saliency import to_frame


@dataclass
class Occlusion:
    """An occlusion map (frame size, float32 in [0, 1]), what it explains and what it cost."""

    saliency: np.ndarray
    target: str  # what fell when a patch was covered
    base_score: float  # the target on the uncovered frame
    patch: tuple[int, int]  # patch size in model-input pixels
    inferences: int  # engine runs used (within the budget)
    # detectors: one map per box of the uncovered frame (N, H, W) float32 in [0, 1], its box (N, 4) xyxy in frame
    # pixels and score (N,); ``saliency`` is then their pixelwise maximum (zeros where nothing was detected)
    box_maps: np.ndarray | None = None
    boxes: np.ndarray | None = None
    box_scores: np.ndarray | None = None

MATCH_IOU = 0.5  # a covered copy's box is "the same box" at this IoU (the detection drift gate's matching)


def occlusion(pipe: Any, frame: np.ndarray, *, budget: int) -> Occlusion:
    """The occlusion map of one frame for a classifier, segmenter or detector ``pipe`` (an :func:`edgemed.load`
    pipeline), using at most ``budget`` engine runs (at least 5: the uncovered frame and a 2x2 grid). A detector's
    frame without a box costs the one run that found none, and its maps are empty."""
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 5:
        raise OptionError(f"occlusion budget {budget!r} is not a number of inferences of at least 5",
                          "give budget=N (N-1 patches, e.g. 65 for an 8x8 grid)")
    task = getattr(pipe, "task", None)
    if task not in TASKS or not hasattr(pipe, "engine"):
        raise InputError(f"occlusion explains a classifier's, segmenter's or detector's pipeline, not a "
                         f"{task or 'this'} one", "use it on a bundle loaded with edgemed.load")
    if TASKS[task].ragged_outputs:  # boxes: a map per box the uncovered frame gives
        return _boxes_occlusion(pipe, frame, budget)
    prepared = pipe.prepare(frame)
    x = prepared.tensor
    if x.ndim != 4 or x.shape[0] != 1:
        raise InputError(f"occlusion needs one image input (1, C, H, W), the model takes {list(x.shape)}",
                         "use it on an image model")
    score, target, base = _target(pipe, x)
    heat, patch, runs = _cover(pipe, x, budget, lambda covered: np.array([max(0.0, base - score(covered))]))
    return Occlusion(to_frame(heat[0], heat.shape[1:], prepared.geometry), target, base, patch, runs)


def _cover(pipe: Any, x: np.ndarray, budget: int, drops) -> tuple[np.ndarray, tuple[int, int], int]:
    """Cover ``x`` patch by patch with its mean (the finest grid ``budget`` runs allow, the uncovered run already
    made) and record ``drops(covered)`` (one value per map) over each patch: (maps (M, h, w) each scaled to [0, 1]
    by its peak, patch size, runs used including the uncovered one)."""
    layout = pipe.bundle.manifest.input.layout
    h, w = (x.shape[2], x.shape[3]) if layout == "NCHW" else (x.shape[1], x.shape[2])
    side = math.isqrt(budget - 1)  # patches per side: side*side + 1 runs fit the budget
    ph, pw = math.ceil(h / side), math.ceil(w / side)
    fill = x.mean(axis=(0, 2, 3) if layout == "NCHW" else (0, 1, 2), keepdims=True).astype(x.dtype)
    heat: np.ndarray | None = None
    runs = 1
    covered = x.copy()
    for top in range(0, h, ph):
        for left in range(0, w, pw):
            window = (slice(None), slice(None), slice(top, top + ph), slice(left, left + pw)) if layout == "NCHW" \
                else (slice(None), slice(top, top + ph), slice(left, left + pw), slice(None))
            covered[window] = np.broadcast_to(fill, covered[window].shape)
            values = drops(covered)
            if heat is None:
                heat = np.zeros((len(values), h, w), np.float32)
            heat[:, top:top + ph, left:left + pw] = np.asarray(values, np.float32)[:, None, None]
            covered[window] = x[window]
            runs += 1
    peak = heat.reshape(len(heat), -1).max(axis=1)
    heat[peak > 0] /= peak[peak > 0, None, None]
    return heat, (ph, pw), runs


def _boxes_occlusion(pipe: Any, frame: np.ndarray, budget: int) -> Occlusion:
    """Per-box occlusion of a detector: one map per box the uncovered frame gives (after NMS, in frame pixels,
    exactly ``predict``'s boxes), of how far that box's score falls when a patch is covered."""
    from ..detection_post import finish

    prepared = pipe.prepare(frame)
    x = prepared.tensor
    if x.ndim != 4 or x.shape[0] != 1:
        raise InputError(f"occlusion needs one image input (1, C, H, W), the model takes {list(x.shape)}",
                         "use it on an image model")

    def detect(tensor: np.ndarray) -> Detections:
        out = pipe.engine.infer({pipe.input_name: tensor}, validate=False)
        check_finite(out, tensor)
        return finish(out, pipe.detection, prepared.geometry, prepared.original_size)

    base = detect(x)
    size = tuple(prepared.original_size)
    if not len(base):
        return Occlusion(np.zeros(size, np.float32), "no box detected", 0.0, (0, 0), 1,
                         np.zeros((0, *size), np.float32), base.boxes, base.scores)

    def drops(covered: np.ndarray) -> np.ndarray:
        seen = detect(covered)
        found, _ = match(base, seen, MATCH_IOU)
        after = np.where(found >= 0, seen.scores[np.maximum(found, 0)] if len(seen) else 0.0, 0.0)
        return np.maximum(0.0, base.scores - after)

    heat, patch, runs = _cover(pipe, x, budget, drops)
    maps = np.stack([to_frame(m, m.shape, prepared.geometry) for m in heat])
    target = f"score of each of the {len(base)} detected box(es) (a vanished box scores 0)"
    return Occlusion(maps.max(axis=0), target, float(base.scores.max()), patch, runs, maps, base.boxes, base.scores)


def _target(pipe: Any, x: np.ndarray):
    """The score a patch is judged by (a function of an input), its name, and its value on the uncovered input
    (from the one run that also found the class or the lesion)."""
    def outputs(tensor: np.ndarray) -> np.ndarray:
        out = pipe.engine.infer({pipe.input_name: tensor}, validate=False)
        check_finite(out, tensor)  # a NaN score would silently read as "no change" (max(0, nan) is 0)
        return out[pipe.output_name]

    first = outputs(x)
    value, target = TASKS[pipe.task].explained_score(first, pipe.output_kind, pipe.labels)
    return (lambda tensor: value(outputs(tensor))), target, value(first)
