"""Which images calibrate, which tune the fallback, and which the verdict is taken on.

The same :class:`~edgemed.preprocess.Preprocessor` the runtime uses feeds the quantizers:
calibrating on differently preprocessed pixels is the commonest cause of INT8 collapse.

A verdict is only as good as the cases under it, so the gate gets every image the user gave
that did not calibrate or tune: up to ``--calib-count`` images (default 128, evenly spaced)
calibrate, a tuning set (a quarter of the rest, up to 256) is held out for the layer fallback and
NNCF's accuracy control, and *all* the rest are verdict cases. With ``--eval`` the verdict is taken on that
separate set instead. The fallback never grades itself: tuning and verdict images are disjoint.
Nothing caps the verdict set: its cases stream through the gate from disk one at a time
(:mod:`edgemed.converters.cases`), so memory does not grow with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgemed.datasets import ImageSet
from edgemed.errors import EdgemedError, InputError
from edgemed.preprocess import Preprocessor

MIN_INT8_CALIBRATION = 16
DEFAULT_CALIB_COUNT = 128
# The fallback predicts the verdict's bound from the tuning cases, so more is better (64 images cannot see a
# 0.1% flip rate); a quarter of what is held out, up to 256, keeps each fallback attempt's pass bounded.
MAX_TUNING = 256
SMALL_SET = 24  # below this, images cannot be split: calibration, tuning and verdict share them


@dataclass
class DataPlan:
    calibration: ImageSet
    tuning: ImageSet
    verdict: ImageSet
    overlap: bool  # a set too small to split: the verdict was taken on calibration images (never certifies)

    def describe(self) -> str:
        unit = self.verdict.unit
        text = (f"{len(self.calibration)} {unit} calibrate, {len(self.tuning)} tune the fallback, "
                f"{len(self.verdict)} are verdict cases")
        if self.overlap:
            text += f" (too few {unit} to hold any out: the verdict shares the calibration {unit})"
        return text


def _spaced(n: int, k: int) -> list[int]:
    return sorted(set(np.linspace(0, n - 1, k).round().astype(int).tolist())) if k > 0 and n > 0 else []


def _rest(n: int, taken: list[int]) -> list[int]:
    used = set(taken)
    return [i for i in range(n) if i not in used]


def plan(images: ImageSet, calib_count: int | None, evaluation: ImageSet | None = None) -> DataPlan:
    n = len(images)
    count = calib_count or DEFAULT_CALIB_COUNT
    if evaluation is None and n < SMALL_SET:
        return DataPlan(images.subset(count), images, images, overlap=True)
    calib_idx = _spaced(n, min(count, n if evaluation is not None else n // 2))
    calibration = images.select(calib_idx)
    left = _rest(n, calib_idx)
    if evaluation is not None:
        if len(left) >= 8:
            tuning, verdict = images.select(left[:MAX_TUNING]), evaluation
        else:
            t = _spaced(len(evaluation), min(MAX_TUNING, len(evaluation) // 4))
            tuning, verdict = evaluation.select(t), evaluation.select(_rest(len(evaluation), t))
    else:
        pool = images.select(left)
        t = _spaced(len(pool), min(MAX_TUNING, max(4, len(pool) // 4)))
        tuning, verdict = pool.select(t), pool.select(_rest(len(pool), t))
    return DataPlan(calibration, tuning, verdict, overlap=False)


def preprocess_stream(images: ImageSet, pre: Preprocessor) -> Iterator[Any]:
    """(1,C,H,W) float32 tensors (with any feature inputs beside them) one at a time, so memory stays bounded."""
    for _, tensor in named_tensors(images, pre):
        yield tensor


def case_input(pre: Preprocessor, item: Any) -> Any:
    """One case's model input: the preprocessed tensor, and beside it the feature inputs the item carries (a
    signal-set beat's RR intervals) when the model reads any (``pre.feature_feeds``, set by convert)."""
    tensor = pre(item).tensor
    feeds = getattr(pre, "feature_feeds", None)
    if not feeds:
        return tensor
    extra = feeds.one(None, getattr(item, "features", None))
    return (tensor, *(extra[spec.name] for spec in feeds.specs))


def input_names(pre: Preprocessor, main: str) -> list[str]:
    """The model's input names, the main one first, as :func:`case_input` orders a case's arrays."""
    feeds = getattr(pre, "feature_feeds", None)
    return [main] + ([spec.name for spec in feeds.specs] if feeds else [])


def named_tensors(images: ImageSet, pre: Preprocessor) -> Iterator[tuple[str, Any]]:
    """(name, (1, ...) float32 tensor) per case (with feature inputs: a tuple, :func:`case_input`), one at a
    time; a case that does not fit is one line naming it."""
    for name, image in images:
        try:
            yield name, case_input(pre, image)
        except EdgemedError as exc:
            if images.unit == "images":
                raise InputError(f"image {name} of {images.path.name}: {exc}",
                                 "make every image match the model input (add resize/to_gray ops to the spec)") from exc
            raise InputError(f"window {name} of {images.path.name}: {exc}",
                             "make every window match the model input (the spec's select_leads, resample and window "
                             "ops, and the set's leads and rate)") from exc


def stack(images: ImageSet, pre: Preprocessor) -> np.ndarray:
    """The main tensors of a set, stacked (one-input models)."""
    tensors = list(preprocess_stream(images, pre))
    return np.concatenate(tensors) if tensors else np.zeros((0, *pre.input_shape[1:]), np.float32)
