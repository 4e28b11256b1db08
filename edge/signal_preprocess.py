"""Signal preprocessing: the JSON spec for 1-D inputs and the one implementation of it.

Ops, applied in order (the ones before ``window`` see the whole signal, the ones after each beat):

- ``{"op": "select_leads", "leads": ["MLII"]}``: keep these leads (names or indices), in this order.
- ``{"op": "resample", "fs": 120}``: to this rate; polyphase FIR (``scipy.signal.resample_poly``).
- ``{"op": "highpass", "cutoff_hz": 0.5, "order": 2}``: baseline wander; zero-phase Butterworth
  (``scipy.signal.butter`` + ``sosfiltfilt``).
- ``{"op": "bandpass", "low_hz": 0.5, "high_hz": 40, "order": 2}``: likewise, both edges.
- ``{"op": "window", "before_s": 0.75, "after_s": 0.75}``: cut around a position (an R peak); a
  signal of exactly the window's length is the window itself (a pre-cut beat).
- ``{"op": "detrend"}``: remove each window's least-squares line (the closed form of ``scipy.signal.detrend``'s
  fit, in numpy: the same line to 1e-15 mV, held to scipy's by the tests).
- ``{"op": "zscore"}``: each lead of each window to zero mean, unit deviation.
- ``{"op": "scale", "factor": 5.0}``: multiply (e.g. mV to the units a model was trained on).

The filters and the resampler are scipy.signal's (a well-kept library), not hand-written ones;
the tests hold them to what they must do on real MIT-BIH records. scipy is imported only by the ops
that need it (a resample to another rate, a filter): importing ``scipy.signal`` took 0.7 s of a
1.0 s cold start that predicts one beat at the model's own rate (``python -X importtime``, 2 cores).
Inputs are checked before any op: NaN runs and flat-line leads (an electrode off) are one-line errors,
never a silent answer. Only the leads the spec reads are checked: a flat V1 does not stop an MLII model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from .errors import InputError, SignalQualityError
from .io.signals import Signal, as_signal, stored_to_mv
from .preprocess import Prepared
from .signal_quality import ECG_MAX_MV, FLAT_MV


@dataclass(frozen=True)
class _PlainBeat:
    """A checked description of plain beats (see :meth:`SignalPreprocessor._plain_plan`)."""

    fs: float
    leads: tuple[str, ...]
    source: str
    shape: tuple[int, int]  # (T, L): the samples as the model's window reads them
    factor: float  # stored value -> mV (the unit's factor over the gain)


def _positive(p: dict, key: str, op: str) -> float:
    v = p.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v <= 0:
        raise InputError(f"preprocessing op {op}: {key} must be a positive number, got {v!r}",
                         f"write e.g. {{\"op\": \"{op}\", \"{key}\": 1}}")
    return float(v)


def _order(p: dict, op: str) -> None:
    order = p.setdefault("order", 2)
    if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= 8:
        raise InputError(f"preprocessing op {op}: order must be an integer 1..8, got {order!r}", "write \"order\": 2")


def _check_leads(p: dict) -> None:
    leads = p.get("leads")
    if not isinstance(leads, list) or not leads or not all(isinstance(x, (str, int)) for x in leads):
        raise InputError("preprocessing op select_leads: leads must be a non-empty list of names or indices",
                         'write e.g. {"op": "select_leads", "leads": ["MLII"]}')


def _check_band(p: dict) -> None:
    low, high = _positive(p, "low_hz", "bandpass"), _positive(p, "high_hz", "bandpass")
    if low >= high:
        raise InputError(f"preprocessing op bandpass: low_hz {low} is not below high_hz {high}",
                         "write e.g. low_hz 0.5, high_hz 40")
    _order(p, "bandpass")


def _check_window(p: dict) -> None:
    _positive(p, "before_s", "window")
    _positive(p, "after_s", "window")


_CHECKS = {
    "select_leads": ({"leads"}, _check_leads),
    "resample": ({"fs"}, lambda p: _positive(p, "fs", "resample")),
    "highpass": ({"cutoff_hz", "order"}, lambda p: (_positive(p, "cutoff_hz", "highpass"), _order(p, "highpass"))),
    "bandpass": ({"low_hz", "high_hz", "order"}, _check_band),
    "window": ({"before_s", "after_s"}, _check_window),
    "detrend": (set(), None),
    "zscore": (set(), None),
    "scale": ({"factor"}, lambda p: _positive(p, "factor", "scale")),
}
SIGNAL_OPS = tuple(_CHECKS)
RECORD_OPS = ("select_leads", "resample", "highpass", "bandpass")  # before the window: on the whole signal
BEAT_OPS = ("detrend", "zscore", "scale")  # after it: on each window


def validate_signal_spec(spec: Any) -> list[dict]:
    """Check a signal spec: known ops, typed parameters, one ``window``, record ops before it, beat ops after."""
    if not isinstance(spec, list):
        raise InputError(f"signal preprocessing spec must be a JSON list of ops, got {type(spec).__name__}",
                         'write e.g. [{"op": "resample", "fs": 120}, {"op": "window", "before_s": 0.75, '
                         '"after_s": 0.75}]')
    out = []
    for i, step in enumerate(spec):
        if not isinstance(step, dict) or step.get("op") not in _CHECKS:
            name = step.get("op") if isinstance(step, dict) else step
            raise InputError(f"signal preprocessing spec item {i}: unknown op {name!r}",
                             f"use one of {', '.join(SIGNAL_OPS)}")
        allowed, check = _CHECKS[step["op"]]
        extra = set(step) - allowed - {"op"}
        if extra:
            raise InputError(f"signal preprocessing spec item {i} ({step['op']}): unknown parameter(s) "
                             f"{sorted(extra)}", f"allowed: {sorted(allowed) or 'none'}")
        params = dict(step)
        if check is not None:
            check(params)
        out.append(params)
    ops = [p["op"] for p in out]
    if ops.count("window") != 1:
        raise InputError("signal preprocessing spec needs exactly one window op",
                         'add {"op": "window", "before_s": 0.75, "after_s": 0.75} (the beat window the model reads)')
    w = ops.index("window")
    late = [o for o in ops[:w] if o in BEAT_OPS] + [o for o in ops[w + 1:] if o in RECORD_OPS]
    if late:
        raise InputError(f"signal preprocessing spec: {late[0]} is on the wrong side of window",
                         f"put {', '.join(RECORD_OPS)} before window and {', '.join(BEAT_OPS)} after it")
    return out


def check_signal(sig: Signal) -> None:
    """NaN/Inf samples and flat-line leads are refused: either would give an answer about no ECG at all."""
    check_samples(sig.samples, sig.leads, sig.fs, sig.source)


def check_samples(x: np.ndarray, leads: Sequence[str], fs: float, source: str) -> None:
    """:func:`check_signal` on samples (T, L) and their description, with no Signal to build (per beat, the
    Signal's own checks cost more than these)."""
    # Per lead, max - min: NaN where a lead holds NaN (maximum propagates it), Inf where it holds Inf, so one finite
    # sum of the spans clears both checks' first question in four reductions over the samples (2.5 against 4.9 us a
    # beat); only a signal that fails it is looked at again, sample by sample, to say what is wrong.
    span = np.subtract(np.maximum.reduce(x, axis=0), np.minimum.reduce(x, axis=0))
    if not span.size or (math.isfinite(np.add.reduce(span)) and not np.minimum.reduce(span) < FLAT_MV
                         and not np.maximum.reduce(span) > ECG_MAX_MV):
        return
    if not np.isfinite(x).all():
        bad = ~np.isfinite(x)
        t = int(np.argmax(bad.any(axis=1)))
        raise SignalQualityError(f"{source or 'signal'}: {int(bad.sum())} NaN/Inf sample(s), the first at "
                                 f"{t / fs:.3f} s", "cut or interpolate the gap before analysis (a lead dropped "
                                 "out?)")
    low = span < FLAT_MV  # every span is finite here
    if low.any():
        flat = [leads[i] for i in np.flatnonzero(low)]
        raise SignalQualityError(f"{source or 'signal'}: lead(s) {', '.join(flat)} are flat (under "
                                 f"{FLAT_MV * 1e3:g} µV peak to peak)", "check the electrodes, or select another lead")
    wide = span > ECG_MAX_MV
    if wide.any():
        named = ", ".join(f"{leads[i]} {span[i]:.4g} mV" for i in np.flatnonzero(wide))
        raise SignalQualityError(f"{source or 'signal'}: peak to peak {named}, beyond any ECG in mV, so a wrong "
                                 f"unit or gain (a front end takes 10 mV; over {ECG_MAX_MV:g} mV is refused)",
                                 "check the units (µV given as mV?) and the gain (raw counts need adc_gain=, counts "
                                 "per mV)")


def _butter(sig: Signal, p: dict, kind: str) -> Signal:
    from scipy import signal as ss

    nyq = sig.fs / 2
    edges = [p["cutoff_hz"]] if kind == "highpass" else [p["low_hz"], p["high_hz"]]
    wn = edges[0] if kind == "highpass" else edges
    if max(edges) >= nyq:
        raise InputError(f"{kind} edge {max(edges)} Hz is at or above the Nyquist frequency ({nyq:g} Hz) of a "
                         f"{sig.fs:g} Hz signal", "lower the edge, or resample after filtering")
    sos = ss.butter(p["order"], wn, btype="highpass" if kind == "highpass" else "bandpass", fs=sig.fs,
                    output="sos")
    pad = min(sig.samples.shape[0] - 1, 3 * (2 * len(sos) + 1))
    return Signal(ss.sosfiltfilt(sos, sig.samples, axis=0, padlen=pad), sig.fs, sig.leads, sig.source)


def resample(sig: Signal, fs: float) -> Signal:
    if abs(sig.fs - fs) < 1e-9:
        return sig
    from scipy import signal as ss

    up, down = resample_ratio(float(sig.fs), float(fs))
    out = ss.resample_poly(sig.samples, up, down, axis=0, window=lowpass(up, down))
    return Signal(out, float(fs), sig.leads, sig.source)


@lru_cache(maxsize=64)
def resample_ratio(fs_in: float, fs: float) -> tuple[int, int]:
    """(up, down) in lowest terms for resampling fs_in to fs, found once per pair of rates: limit_denominator
    took 32 us a call, 2 ms of a 10-minute record read in 60 blocks (profiled)."""
    from fractions import Fraction

    ratio = Fraction(fs / fs_in).limit_denominator(1000)
    if abs(float(ratio) * fs_in - fs) > 1e-6 * fs:
        raise InputError(f"cannot resample {fs_in:g} Hz to {fs:g} Hz by a ratio of small integers",
                         "resample the recording to a standard rate first")
    return ratio.numerator, ratio.denominator


@lru_cache(maxsize=16)
def lowpass(up: int, down: int) -> np.ndarray:
    """The anti-aliasing FIR resample_poly designs for up/down by default (its ``firwin`` of 20*max(up, down)+1
    taps, cutoff 1/max(up, down), Kaiser beta 5), designed once per ratio rather than per block: a whole record
    read in 10 s blocks designed it 60 times (8% of beats() on a 10-minute record, profiled). Given as
    ``window``, resample_poly uses exactly these taps: the same output, bit for bit (tests/test_signals.py)."""
    from scipy.signal import firwin

    rate = max(up, down)
    taps = firwin(2 * 10 * rate + 1, 1.0 / rate, window=("kaiser", 5.0))
    taps.flags.writeable = False  # shared between calls; resample_poly copies it before scaling
    return taps


def selected_leads(spec: Sequence[dict]) -> list | None:
    """The leads (names or indices) a spec's first ``select_leads`` before its window keeps; None: every lead."""
    first = next((p for p in spec if p["op"] in ("select_leads", "window")), None)
    return None if first is None or first["op"] != "select_leads" else list(first["leads"])


def apply_record_ops(sig: Signal, spec: Sequence[dict]) -> Signal:
    """The ops before ``window``, on a whole signal (or a pre-cut beat)."""
    for p in spec:
        op = p["op"]
        if op == "window":
            break
        if op == "select_leads":
            idx = [sig.lead(x) for x in p["leads"]]
            if idx != list(range(len(sig.leads))):  # every lead in its order (a one-lead beat): nothing to select
                sig = Signal(sig.samples[:, idx], sig.fs, tuple(sig.leads[i] for i in idx), sig.source)
        elif op == "resample":
            sig = resample(sig, p["fs"])
        else:
            sig = _butter(sig, p, op)
    return sig


def detrend(x: np.ndarray) -> np.ndarray:
    """Each window (last axis) less its least-squares line: the mean, and the slope times the centred sample
    index (the normal equations of scipy.signal.detrend's fit, solved in closed form; its ``lstsq`` and import are
    what this saves)."""
    t, tt = _centred(x.shape[-1])
    slope = (x @ t) / tt  # sum(t) == 0, so the mean needs no removing first
    # the mean as numpy's mean computes it (add.reduce, then divide by the count), without its Python wrapper
    return x - np.add.reduce(x, axis=-1, keepdims=True) / x.shape[-1] - slope[..., None] * t


_CENTRED: dict[int, tuple[np.ndarray, np.float64]] = {}


def _centred(n: int) -> tuple[np.ndarray, np.float64]:
    """The centred sample index of an n-sample window and its squared norm, made once per length (read-only)."""
    got = _CENTRED.get(n)
    if got is None:
        t = np.arange(n, dtype=np.float64)
        t -= t.mean()  # exact: half-integers, symmetric about 0
        t.flags.writeable = False
        got = _CENTRED[n] = (t, t @ t)
    return got


def apply_beat_ops(windows: np.ndarray, spec: Sequence[dict], out: np.ndarray | None = None) -> np.ndarray:
    """The ops after ``window``, on windows (K, L, T) at once; into ``out`` (float32, overwritten) when it fits."""
    return beat_ops_after(windows, list(spec)[[p["op"] for p in spec].index("window") + 1:], out)


def beat_ops_after(windows: np.ndarray, after: Sequence[dict], out: np.ndarray | None = None) -> np.ndarray:
    """:func:`apply_beat_ops` given the ops after ``window`` (a preprocessor finds them once, not per beat)."""
    x = windows.astype(np.float64, copy=False)  # every op below makes a new array: the caller's is never written
    for p in after:
        if p["op"] == "detrend":
            x = detrend(x)
        elif p["op"] == "zscore":
            std = x.std(axis=-1, keepdims=True)
            x = (x - x.mean(axis=-1, keepdims=True)) / np.maximum(std, 1e-12)
        elif p["op"] == "scale":
            x = x * p["factor"]
    if out is not None and out.shape == x.shape and out.dtype == np.float32:
        np.copyto(out, x, casting="same_kind")  # the same rounding to float32 as astype
        return out
    return x.astype(np.float32)


class SignalPreprocessor:
    """The signal counterpart of :class:`edgemed.preprocess.Preprocessor`: same call, same ``Prepared``.

    ``pre(beat)`` prepares one pre-cut window (what calibration sets and ``predict`` hold);
    :meth:`windows` cuts and prepares many around given positions of a long signal (records, streams).
    """

    def __init__(self, spec: Sequence[dict], input_shape: Sequence[int | str], layout: str = "NCL") -> None:
        if layout != "NCL" or len(input_shape) != 3:
            raise InputError(f"a signal model takes (N, C, L) inputs, got shape {list(input_shape)}",
                             "write e.g. --input-shape 1x1x180")
        self.spec = validate_signal_spec(list(spec))
        self.input_shape = tuple(int(d) if isinstance(d, int) else -1 for d in input_shape)
        self.layout = layout
        self.channels, self.length = self.input_shape[1], self.input_shape[2]
        at = [p["op"] for p in self.spec].index("window")
        win = self.spec[at]
        self._after = self.spec[at + 1:]
        self._filters = any(p["op"] in ("highpass", "bandpass") for p in self.spec[:at])
        self._plans: dict[tuple, _PlainBeat | None] = {}
        self.fs = self.rate_at_window()
        self.before = int(round(win["before_s"] * self.fs))
        self.after = int(round(win["after_s"] * self.fs))
        if self.before + self.after != self.length:
            raise InputError(f"the window ({win['before_s']} s + {win['after_s']} s at {self.fs:g} Hz = "
                             f"{self.before + self.after} samples) does not fit the model's {self.length}",
                             "make before_s + after_s times the rate equal the input length")

    def rate_at_window(self) -> float:
        rates = [p["fs"] for p in self.spec[:[p["op"] for p in self.spec].index("window")] if p["op"] == "resample"]
        if not rates:
            raise InputError("the signal spec has no resample op, so the rate the model reads is unknown",
                             'add {"op": "resample", "fs": RATE} before window (a no-op at that rate)')
        return float(rates[-1])

    def read_leads(self, sig: Signal) -> list[int]:
        """The indices of the leads the model reads (the spec's first ``select_leads``; every lead without one)."""
        chosen = selected_leads(self.spec)
        return list(range(len(sig.leads))) if chosen is None else [sig.lead(x) for x in chosen]

    def record(self, sig: Signal | np.ndarray, **describe: Any) -> Signal:
        """A signal after the record ops, checked on the leads the model reads (the samples every window is
        cut from)."""
        sig = as_signal(sig, **describe)
        used = self.read_leads(sig)
        check_samples(sig.samples[:, used], [sig.leads[i] for i in used], sig.fs, sig.source)
        out = apply_record_ops(sig, self.spec)
        if out.samples.shape[1] != self.channels:
            raise InputError(f"the signal has {out.samples.shape[1]} lead(s) after preprocessing but the model takes "
                             f"{self.channels}", 'select leads with {"op": "select_leads", "leads": [...]}')
        return out

    def cut(self, sig: Signal, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Windows (K, C, L) around ``positions`` (samples of ``sig``, already at the model's rate) and which
        positions had a whole window (a beat too near either end is left out, never zero-padded)."""
        positions = np.asarray(positions, dtype=np.int64)
        ok = (positions - self.before >= 0) & (positions + self.after <= sig.samples.shape[0])
        idx = positions[ok][:, None] + np.arange(-self.before, self.after)[None, :]
        windows = sig.samples[idx].transpose(0, 2, 1) if len(idx) else np.zeros((0, self.channels, self.length))
        return self._beat_ops(sig.source, sig.samples, windows), ok

    def _beat_ops(self, source: str, samples: np.ndarray, windows: np.ndarray,
                  out: np.ndarray | None = None) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):
            out = beat_ops_after(windows, self._after, out)
        if not np.isfinite(out).all():
            # samples near float32's limit (1e38 mV) overflow the model's input type
            raise SignalQualityError(f"{source or 'signal'}: samples too large for the model's float32 input "
                                     f"(up to {np.max(np.abs(samples)):.3g} mV)", "check the units and the gain")
        return out

    def _plain_plan(self, beat: np.ndarray, describe: dict[str, Any]) -> _PlainBeat | None:
        """How an array described like this one, of its dtype and shape, becomes the model's beat when the ops
        before ``window`` leave it as it is (its rate is the model's, no filter, the leads the model reads are all
        of it in order): made once per description from the checked general path, None where it does not apply.
        Every check that depends only on the description, dtype and shape (Signal's) is then done; what depends
        on the samples (NaN/Inf, flat leads, overflow) is still checked on every beat."""
        try:
            # the value's type too: fs=True must not find the plan fs=1 made (True == 1 and hashes alike); in the
            # caller's order (another order is another key, at most a second plan), unsorted: 1 us less per beat
            key = (beat.dtype.str, beat.shape, *[(k, type(v), tuple(v) if type(v) is list else v)
                                                  for k, v in describe.items()])
            return self._plans[key]
        except TypeError:  # an unhashable description: the general path judges it
            return None
        except KeyError:
            pass
        sig = as_signal(beat, **describe)
        used = self.read_leads(sig)
        plain = (not self._filters and used == list(range(len(sig.leads))) and abs(sig.fs - self.fs) < 1e-9
                 and sig.samples.shape == (self.length, self.channels))
        factor = stored_to_mv(describe.get("units"), describe.get("adc_gain"), sig.source)  # as_signal's, checked
        plan = _PlainBeat(sig.fs, sig.leads, sig.source, sig.samples.shape, factor) if plain else None
        if len(self._plans) < 64:  # descriptions a caller cycles through; beyond that, no caching
            self._plans[key] = plan
        return plan

    def _plain_beat(self, beat: np.ndarray, plan: _PlainBeat, out: np.ndarray | None,
                    describe: dict[str, Any]) -> Prepared:
        """:meth:`__call__` of a plain array along the checked plan: the same samples (as_signal's arithmetic),
        the same checks and ops, the same bits."""
        x, factor = beat.reshape(plan.shape), plan.factor
        if factor == 1.0:  # x * 1.0 is x, Inf and NaN included: no multiply, no errstate; read, never written
            samples = x.astype(np.float64, copy=False)
        else:
            with np.errstate(over="ignore"):
                samples = x.astype(np.float64) * factor
        check_samples(samples, plan.leads, plan.fs, plan.source)
        return Prepared(self._beat_ops(plan.source, samples, samples[None].transpose(0, 2, 1), out), plan.shape, [])

    def __call__(self, beat: Signal | np.ndarray, out: np.ndarray | None = None, **describe: Any) -> Prepared:
        """One pre-cut beat as the model's (1, C, L) input; written into ``out`` (the engine's bound input, whose
        contents are overwritten) when it has that shape and float32 type."""
        if isinstance(beat, np.ndarray):
            plan = self._plain_plan(beat, describe)
            if plan is not None:
                return self._plain_beat(beat, plan, out, describe)
        sig = self.record(beat, **describe)
        n = sig.samples.shape[0]
        if n != self.length:
            raise InputError(f"a single beat must be {self.before + self.after} samples at {self.fs:g} Hz after "
                             f"preprocessing, got {n}", "pass a pre-cut window, or a record to pipe.beats()")
        # the one window of a pre-cut beat is the whole signal: what cut(sig, [before]) indexes out, with the
        # same (1, L, C)-transposed layout, so every op after it computes the same bits (tests/test_signals.py)
        windows = np.ascontiguousarray(sig.samples)[None].transpose(0, 2, 1)
        return Prepared(self._beat_ops(sig.source, sig.samples, windows, out), (n, self.channels), [])
