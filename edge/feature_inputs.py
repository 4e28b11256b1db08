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

    def one(self, given: Any, carried: Mapping[str, float] | None,
            out: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """(1, K) float32 per feature input, from ``features=`` (a mapping of feature name to number) or else from
        what the input itself carries (a signal-set beat's features); written into ``out``'s arrays (the engine's
        bound inputs) where given."""
        values = given if given is not None else carried
        if values is None:
            raise InputError(f"this model also reads {', '.join(self.names)}, and none were given",
                             "pass features={" + ", ".join(f"'{n}': ..." for n in self.names[:4]) + "} to predict"
                             + (", or use pipe.beats() on the whole signal, which derives them" if self.rr_derived
                                else ""))
        if not isinstance(values, Mapping):
            raise InputError(f"features is a {type(values).__name__}, not a mapping of feature name to number",
                             "pass features={'" + self.names[0] + "': ..., ...}: by name, so no column is swapped")
        if len(values) != len(self.names) or not all(n in values for n in self.names):
            missing = [n for n in self.names if n not in values]
            unknown = sorted(map(str, set(values) - set(self.names)))
            what = "; ".join(([f"missing {', '.join(missing)}"] if missing else [])
                             + ([f"unknown {', '.join(unknown)}"] if unknown else []))
            raise InputError(f"features: {what} (the model reads {', '.join(self.names)})",
                             "give exactly the features the bundle's manifest names")
        out = {} if out is None else out
        for spec in self.specs:
            given_row = [values[name] for name in spec.features]
            if not all(type(v) in _PLAIN_NUMBERS for v in given_row):  # the rare case: say which one and why
                given_row = [_number(v, name) for v, name in zip(given_row, spec.features)]
            row = out.get(spec.name)
            if row is None:
                row = out[spec.name] = np.empty((1, len(spec.features)), np.float32)
            try:
                with np.errstate(over="ignore"):  # beyond float32: Inf, refused below with the value named
                    row[0] = given_row
            except (OverflowError, ValueError):  # an int beyond any float
                row[0] = [_number(v, name) for v, name in zip(given_row, spec.features)]
            if not np.isfinite(row).all():
                bad = next(n for n, v in zip(spec.features, row[0]) if not np.isfinite(v))
                _number(values[bad], bad)  # NaN or Inf given: its one-line error
                raise InputError(f"feature {bad!r} is {values[bad]}, beyond float32",
                                 f"pass {bad} within float32's range")
        return {spec.name: out[spec.name] for spec in self.specs}

    def rows(self, spec: FeatureInput, matrix: np.ndarray) -> np.ndarray:
        """A (N, K) block of one input's features (the beat stream's), checked finite."""
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        if not np.isfinite(matrix).all():
            raise InputError(f"{spec.name}: features are NaN or Inf", "only beats with defined features are fed")
        return matrix


_PLAIN_NUMBERS = frozenset({float, int, np.float32, np.float64, np.int32, np.int64})  # exact types: no bool


def _number(value: Any, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"feature {name!r} is {value!r}, not a number", f"pass {name} as a number")
    try:
        value = float(value)
    except OverflowError:
        value = float("inf")
    if not np.isfinite(value) or abs(value) > 3.0e38:
        raise InputError(f"feature {name!r} is {value}, not a finite float32",
                         f"pass a defined {name} (a record's first and last beat have no RR intervals)")
    return value
