"""Sets of pre-cut signal windows (beats) for calibration, verdicts and benchmarks.

The signal counterpart of :class:`edgemed.datasets.ImageSet`, with the same interface (names,
subsets, iteration, a content hash), so convert and bench take either. On disk it is an ``.npz``:

- ``signals``: (N, T) or (N, L, T) numeric windows
- ``fs``: the sampling rate in Hz; ``units``: their unit (``mV``, ``uV``, ...)
- ``adc_gain`` (optional): digitiser counts per unit, WFDB's convention (MIT-BIH: 200 per mV)
- ``leads`` (optional): lead names; ``labels`` (optional): one class index per window
- ``features`` (optional): (N, K) numbers that go with each window, named by ``feature_names`` (K,), e.g. a
  beat's RR intervals: what a model's inputs beside the signal read (NaN: not defined for that window)

The rate and units are required: a set that does not state them is refused, never guessed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .io.signals import Signal, stored_to_mv
from .set_base import IndexedSet, Npz

SIGNAL_KEYS = ("signals",)


def is_signal_set(path: Path) -> bool:
    if path.suffix.lower() != ".npz" or not path.is_file():
        return False
    try:
        with Npz(path) as data:
            return "signals" in data
    except InputError:  # not readable as a signal set: the image-set reader says why
        return False


@dataclass
class SignalSet(IndexedSet):
    path: Path
    names: list[str]
    _array: np.ndarray  # (N, L, T) in stored units
    fs: float
    factor: float  # stored value * factor = mV
    leads: tuple[str, ...]
    features: np.ndarray | None = None  # (N, K) float64, named by feature_names
    feature_names: tuple[str, ...] = ()

    @classmethod
    def open(cls, path: str | Path) -> SignalSet:
        path = Path(path)
        with Npz(path, "signal set") as data:
            missing = [k for k in ("signals", "fs", "units") if k not in data]
            if missing:
                raise InputError(f"{path}: a signal set needs {', '.join(missing)}",
                                 "store signals (N,T), fs (Hz) and units ('mV') in the .npz")
            array = data["signals"]
            fs = _scalar(data["fs"], path, "fs", "a rate in Hz, e.g. fs=360.0")
            units = data["units"]
            if units.shape != () or units.dtype.kind != "U":
                raise InputError(f"{path}: units is {units.dtype} of shape {units.shape}, not a unit name",
                                 "store units as text, e.g. units='mV'")
            units = str(units)
            gain = _scalar(data["adc_gain"], path, "adc_gain", "counts per unit, e.g. 200") \
                if "adc_gain" in data else None
            leads = data["leads"] if "leads" in data else None
            if leads is not None and (leads.ndim != 1 or leads.dtype.kind != "U"):
                raise InputError(f"{path}: leads is {leads.dtype} of shape {leads.shape}, not a list of names",
                                 "store lead names as text, e.g. leads=['MLII']")
            leads = tuple(str(x) for x in leads) if leads is not None else None
            features, feature_names = _features(data, path)
        if array.dtype.kind not in "uif" or array.ndim not in (2, 3) or len(array) == 0:
            raise InputError(f"{path}: signals has shape {array.shape} ({array.dtype}), not numeric (N,T) or (N,L,T)",
                             "store a stack of windows")
        array = array[:, None, :] if array.ndim == 2 else array
        leads = leads or tuple(f"lead{i}" for i in range(array.shape[1]))
        if len(leads) != array.shape[1]:
            raise InputError(f"{path}: {len(leads)} lead names for {array.shape[1]} leads", "name every lead")
        if features is not None and len(features) != len(array):
            raise InputError(f"{path}: features has {len(features)} rows for {len(array)} windows",
                             "store one row of features per window")
        return cls(path, [f"signals[{i}]" for i in range(len(array))], array, fs,
                   stored_to_mv(units, gain, str(path)), leads, features, feature_names)

    unit = "windows"

    def select(self, idx: list[int]) -> SignalSet:
        return SignalSet(self.path, [self.names[i] for i in idx], self._array[idx], self.fs, self.factor, self.leads,
                         None if self.features is None else self.features[idx], self.feature_names)

    def with_features(self, names: list[str]) -> tuple[SignalSet, int]:
        """The windows whose features ``names`` are all defined (a record's first and last beat have no RR
        interval), and how many were left out; a feature the set lacks is one line."""
        missing = [f for f in names if f not in self.feature_names]
        if missing:
            raise InputError(f"{self.path} has no {', '.join(missing)} (it has "
                             f"{', '.join(self.feature_names) or 'no features'})",
                             "pass a signal set (.npz) with features and feature_names holding them")
        defined = np.isfinite(self.features[:, [self.feature_names.index(f) for f in names]]).all(axis=1)
        return (self, 0) if defined.all() else (self.select(np.flatnonzero(defined).tolist()), int((~defined).sum()))

    def __iter__(self) -> Iterator[tuple[str, Signal]]:
        for i, (name, x) in enumerate(zip(self.names, self._array)):
            named = None if self.features is None else dict(zip(self.feature_names, self.features[i].tolist()))
            yield name, Signal(x.T.astype(np.float64) * self.factor, self.fs, self.leads, f"{self.path.name}:{name}",
                               named)

    def sha256(self) -> str:
        h = hashlib.sha256()
        h.update(f"{self._array.shape}{self.fs}{self.factor}{self.leads}".encode())
        h.update(np.ascontiguousarray(self._array).tobytes())
        if self.features is not None:  # the same windows with other features are other cases
            h.update(f"{self.feature_names}".encode())
            h.update(np.ascontiguousarray(self.features).tobytes())
        return h.hexdigest()

    def save(self, path: Path, count: int | None = None) -> None:
        """Write (a subset of) the set in its own format (a bundle's sample windows)."""
        part = self.subset(count)
        extra = {} if part.features is None else {"features": part.features,
                                                  "feature_names": np.array(part.feature_names)}
        np.savez_compressed(path, signals=part._array, fs=part.fs, units="mV", adc_gain=1.0 / part.factor,
                            leads=np.array(part.leads), **extra)


def _scalar(value: np.ndarray, path: Path, key: str, what: str) -> float:
    """One real number stored in a set (a string, an array of several or a bool is refused, never coerced)."""
    if value.shape != () or value.dtype.kind not in "uif":
        raise InputError(f"{path}: {key} is {value.dtype} of shape {value.shape}, not one number", f"store {what}")
    return float(value)


def _features(data: Npz, path: Path) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """The optional per-window features and their names, both or neither."""
    if ("features" in data) != ("feature_names" in data):
        raise InputError(f"{path}: features and feature_names go together", "store both, or neither")
    if "features" not in data:
        return None, ()
    features, names = data["features"], data["feature_names"]
    if features.ndim != 2 or features.dtype.kind not in "uif":
        raise InputError(f"{path}: features is {features.dtype} of shape {features.shape}, not numeric (N, K)",
                         "store one row of numbers per window")
    if names.ndim != 1 or names.dtype.kind != "U" or len(names) != features.shape[1]:
        raise InputError(f"{path}: feature_names must be {features.shape[1]} names, one per column of features",
                         "store feature_names=['rr_pre', ...]")
    names = tuple(str(n) for n in names)
    if len(set(names)) != len(names) or not all(names):
        raise InputError(f"{path}: feature_names {list(names)} are not distinct names", "name each column once")
    return features.astype(np.float64), names
