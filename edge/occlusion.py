"""Occlusion saliency through the runtime: where covering the model's input changes its answer most.

Any classifier or segmenter, any artifact, no graph change and no autograd (Zeiler & Fergus, ECCV 2014): the
preprocessed input is covered patch by patch with its own mean value, each covered copy is run by the pipeline's
engine, and a patch scores how much the target fell — the predicted class's probability (classifiers), or the
mean foreground probability over the lesion the uncovered frame's mask finds (segmenters; the whole frame's
highest foreground probability where that mask is empty). The map is mapped back onto the frame through the
recorded preprocessing geometry, like masks and CAM maps.

It costs one inference per patch, so it is for review, not for the live stream: the caller states the budget
(``budget`` inferences, the uncovered one included), and the patch grid is the finest that fits it. Detectors are
refused (a per-box occlusion needs box matching that is not built).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InputError, OptionError
from .postprocess import check_finite, class_probabilities, segmentation_probabilities
from .saliency import to_frame


@dataclass
class Occlusion:
    """An occlusion map (frame size, float32 in [0, 1]), what it explains and what it cost."""

    saliency: np.ndarray
    target: str  # what fell when a patch was covered
    base_score: float  # the target on the uncovered frame
    patch: tuple[int, int]  # patch size in model-input pixels
    inferences: int  # engine runs used (within the budget)


def occlusion(pipe: Any, frame: np.ndarray, *, budget: int) -> Occlusion:
    """The occlusion map of one frame for a classifier or segmenter ``pipe`` (an :func:`edgemed.load` pipeline),
    using at most ``budget`` engine runs (at least 5: the uncovered frame and a 2x2 grid)."""
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 5:
        raise OptionError(f"occlusion budget {budget!r} is not a number of inferences of at least 5",
                          "give budget=N (N-1 patches, e.g. 65 for an 8x8 grid)")
    task = getattr(pipe, "task", None)
    if task not in ("classification", "segmentation") or not hasattr(pipe, "engine"):
        raise InputError(f"occlusion explains a classifier's or segmenter's pipeline, not a {task or 'this'} one",
                         "use it on a classification or segmentation bundle loaded with edgemed.load (detectors: "
                         "per-box occlusion is not built)")
    prepared = pipe.prepare(frame)
    x = prepared.tensor
    if x.ndim != 4 or x.shape[0] != 1:
        raise InputError(f"occlusion needs one image input (1, C, H, W), the model takes {list(x.shape)}",
                         "use it on an image model")
    layout = pipe.bundle.manifest.input.layout
    h, w = (x.shape[2], x.shape[3]) if layout == "NCHW" else (x.shape[1], x.shape[2])
    score, target, base = _target(pipe, x)
    side = math.isqrt(budget - 1)  # patches per side: side*side + 1 runs fit the budget
    ph, pw = math.ceil(h / side), math.ceil(w / side)
    fill = x.mean(axis=(0, 2, 3) if layout == "NCHW" else (0, 1, 2), keepdims=True).astype(x.dtype)
    heat = np.zeros((h, w), np.float32)
    runs = 1
    covered = x.copy()
    for top in range(0, h, ph):
        for left in range(0, w, pw):
            window = (slice(None), slice(None), slice(top, top + ph), slice(left, left + pw)) if layout == "NCHW" \
                else (slice(None), slice(top, top + ph), slice(left, left + pw), slice(None))
            covered[window] = np.broadcast_to(fill, covered[window].shape)
            heat[top:top + ph, left:left + pw] = max(0.0, base - score(covered))
            covered[window] = x[window]
            runs += 1
    peak = float(heat.max())
    if peak > 0:
        heat /= peak
    return Occlusion(to_frame(heat, (h, w), prepared.geometry), target, base, (ph, pw), runs)


def _target(pipe: Any, x: np.ndarray):
    """The score a patch is judged by (a function of an input), its name, and its value on the uncovered input
    (from the one run that also found the class or the lesion)."""
    def outputs(tensor: np.ndarray) -> np.ndarray:
        out = pipe.engine.infer({pipe.input_name: tensor}, validate=False)
        check_finite(out, tensor)  # a NaN score would silently read as "no change" (max(0, nan) is 0)
        return out[pipe.output_name]

    first = outputs(x)
    if pipe.task == "classification":
        index = int(np.argmax(class_probabilities(first[0], pipe.output_kind)))

        def value(out: np.ndarray) -> float:
            return float(class_probabilities(out[0], pipe.output_kind)[index])

        target = f"probability of {pipe.labels[index]!r}"
    else:
        lesion = segmentation_probabilities(first, pipe.output_kind).argmax(axis=0) > 0

        def value(out: np.ndarray) -> float:
            foreground = segmentation_probabilities(out, pipe.output_kind)[1:].sum(axis=0)
            return float(foreground[lesion].mean() if lesion.any() else foreground.max())

        target = (f"mean foreground probability over the predicted lesion ({int(lesion.sum())} pixels)"
                  if lesion.any() else "highest foreground probability (no lesion predicted)")
    return (lambda tensor: value(outputs(tensor))), target, value(first)
