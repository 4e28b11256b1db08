"""The inputs beside a model's main one (manifest ``features``): from what a caller gives to the tensors fed.

A two-input beat classifier reads the beat and its RR intervals. ``predict(beat, fs=..., units=...,
features={"rr_pre": 0.81, ...})`` names each number, so a swapped column is an error, not a silently wrong answer;
a beat from a signal set carries its own (``Signal.features``); the beat stream derives RR intervals from the R peaks
it finds (:mod:`edgemed.rr_intervals`). Every number is checked (present, finite, real) before the engine sees it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import InputError
from .manifest import FeatureInput
from .rr_intervals import RR_FEATURES


class FeatureFeeds:
    """Builds the feature tensors of one bundle; one per Pipeline."""

    def __init__(self, specs: list[FeatureInput]) -> None:
        self.specs = list(specs)
        self.names = [n for s in self.specs for n in s.features]
        # inputs the beat stream fills itself: every feature one of the RR intervals it derives from R peaks
        self.rr_derived = [s for s in self.specs if set(s.features) <= set(RR_FEATURES)]

    def __bool__(self) -> bool:
        return bool(self.specs)

    def one(self, given: Any, carried: Mapping[str, float] | None) -> dict[str, np.ndarray]:
        """(1, K) float32 per feature input, from ``features=`` (a mapping of feature name to number) or else from
        what the input itself carries (a signal-set beat's features)."""
        values = given if given is not None else carried
        if values is None:
            raise InputError(f"this model also reads {', '.join(self.names)}, and none were given",
                             "pass features={" + ", ".join(f"'{n}': ..." for n in self.names[:4]) + "} to predict"
                             + (", or use pipe.beats() on the whole signal, which derives them" if self.rr_derived
                                else ""))
        if not isinstance(values, Mapping):
            raise InputError(f"features is a {type(values).__name__}, not a mapping of feature name to number",
                             "pass features={'" + self.names[0] + "': ..., ...}: by name, so no column is swapped")
        missing = [n for n in self.names if n not in values]
        unknown = sorted(set(values) - set(self.names))
        if missing or unknown:
            what = (f"missing {', '.join(missing)}" if missing else "") + ("; " if missing and unknown else "") + \
                (f"unknown {', '.join(map(str, unknown))}" if unknown else "")
            raise InputError(f"features: {what} (the model reads {', '.join(self.names)})",
                             "give exactly the features the bundle's manifest names")
        out = {}
        for spec in self.specs:
            row = np.empty((1, len(spec.features)), np.float32)
            for j, name in enumerate(spec.features):
                row[0, j] = _number(values[name], name)
            out[spec.name] = row
        return out

    def rows(self, spec: FeatureInput, matrix: np.ndarray) -> np.ndarray:
        """A (N, K) block of one input's features (the beat stream's), checked finite."""
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        if not np.isfinite(matrix).all():
            raise InputError(f"{spec.name}: features are NaN or Inf", "only beats with defined features are fed")
        return matrix


def _number(value: Any, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"feature {name!r} is {value!r}, not a number", f"pass {name} as a number")
    value = float(value)
    if not np.isfinite(value) or abs(value) > 3.0e38:
        raise InputError(f"feature {name!r} is {value}, not a finite float32",
                         f"pass a defined {name} (a record's first and last beat have no RR intervals)")
    return value
