"""The preprocessor a model's input layout calls for: images (NCHW/NHWC) or signal windows (NCL).

Above both preprocessing modules, so the image one never reaches up to the signal one (which builds on it)."""

from __future__ import annotations

from collections.abc import Sequence

from .preprocess import Preprocessor
from .signal_preprocess import SignalPreprocessor


def make_preprocessor(spec: Sequence[dict], input_shape: Sequence[int | str],
                      layout: str = "NCHW") -> Preprocessor | SignalPreprocessor:
    """The preprocessor for a model's input, by the layout its manifest records."""
    if layout == "NCL":
        return SignalPreprocessor(spec, input_shape, layout)
    return Preprocessor(spec, input_shape, layout)
