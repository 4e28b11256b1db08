"""Calibration and evaluation images, streamed through the bundle's own preprocessing.

The same :class:`~edgemed.preprocess.Preprocessor` the runtime uses feeds the quantizers:
calibrating on differently preprocessed pixels is the commonest cause of INT8 collapse.
A held-out part of the images (never used to calibrate) measures drift.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from edgemed.datasets import ImageSet
from edgemed.errors import EdgemedError, InputError
from edgemed.preprocess import Preprocessor

MIN_INT8_CALIBRATION = 16
DEFAULT_CALIB_COUNT = 128
MAX_EVALUATION = 128
PROBE_COUNT = 8


@dataclass
class ImageSplit:
    calibration: ImageSet
    evaluation: ImageSet
    overlap: bool  # True when the set was too small to hold images out


def split_images(images: ImageSet, calib_count: int | None) -> ImageSplit:
    """Every 4th image (up to 128) held out for evaluation, the rest for calibration."""
    n = len(images)
    if n >= 40:
        held = list(range(0, n, 4))[:MAX_EVALUATION]
        rest = [i for i in range(n) if i not in set(held)]
        calibration = images.select(rest).subset(calib_count or DEFAULT_CALIB_COUNT)
        return ImageSplit(calibration, images.select(held), overlap=False)
    return ImageSplit(images.subset(calib_count or DEFAULT_CALIB_COUNT), images, overlap=True)


def preprocess_stream(images: ImageSet, pre: Preprocessor) -> Iterator[np.ndarray]:
    """(1,C,H,W) float32 tensors one at a time, so memory stays bounded for large sets."""
    for name, image in images:
        try:
            yield pre(image).tensor
        except EdgemedError as exc:
            raise InputError(f"calibration image {name}: {exc}",
                             "make every image match the model input (add resize/to_gray ops to the spec)") from exc


def stack(images: ImageSet, pre: Preprocessor) -> np.ndarray:
    return np.concatenate(list(preprocess_stream(images, pre)))
