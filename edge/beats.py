"""Beats of a continuous signal: found by a QRS detector, cut, classified; the same in chunks or at once.

A monitor delivers samples as they come. :class:`BeatReader` keeps them and analyses fixed blocks
of ``block_s`` seconds, each with ``margin_s`` seconds of signal either side (so filters,
resampling and the beat windows never see an edge inside the block). A block is analysed as soon
as its right margin has arrived; its beats are those whose R peak falls inside it. Blocks are
fixed in sample time, not by how the samples were delivered, so feeding a record in any chunks
gives exactly what feeding it at once gives (a test holds it to that), and a beat is reported at
most ``block_s + margin_s`` seconds after it happened, plus the compute.

QRS detection is PhysioNet's ``wfdb.processing.XQRS`` on the model's lead at 360 Hz, the rate of
MIT-BIH, which XQRS's thresholds and filters are tuned for: a signal at another rate is resampled
for the detector (polyphase FIR) and the peaks mapped back to the source samples. Each peak is then
moved to the local extremum (``correct_peaks``), where MIT-BIH's annotations put R. At the source
rate instead, XQRS found no QRS at all in pydicom's 12-lead ``waveform_ecg.dcm`` (10 s at 1 kHz) on
leads I, II or V2; at 360 Hz it finds all 10 on each. Measured on DS2 record 213 (30 min,
3,251 beats, 360 Hz, so unchanged by this): 10 s blocks with 2 s margins found 98.1% of the annotated
beats with no false ones (20 s blocks: 99.0%), the R peak on the annotated sample (median offset 0,
95th percentile 1 sample at 360 Hz).

Stretches with no usable signal on the leads the model reads (NaN runs, flat stretches: an electrode
off, a dropout; :mod:`edgemed.signal_quality`) are found sample by sample, listed in ``gaps`` with the
reason and their times from the signal's start, and the stretches between them are analysed on their
own: a beat is kept when its window and :data:`GUARD_S` either side lie on usable signal (the resampler
and filters see no edge inside it), so a 5 s dropout costs the beats it touches, not the whole block.
The stream goes on, and nothing is classified on no signal. A signal that is not flat but gives no
beat at all carries a warning (a wrong rate, a lead with no QRS, not an ECG), never a quiet "0 beats".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError, SignalQualityError
from .io.signals import Signal, as_signal, stored_to_mv
from .postprocess import check_finite, class_probabilities_rows
from .rr_intervals import RR_FEATURES
from .signal_quality import FLAT_MV, bad_runs, usable

BLOCK_S = 10.0
MARGIN_S = 2.0
GUARD_S = 0.25  # usable signal a kept beat's window needs beside a gap (the resampler's FIR reaches 0.08 s at 360 Hz)
DETECT_FS = 360.0  # the rate XQRS is tuned for (MIT-BIH's)
MIN_STRETCH_S = 1.0  # XQRS's own filters need at least 0.3 s; shorter usable stretches hold no whole beat anyway
QRS_BAND_HZ = 20.0  # the top of the band XQRS filters to (wfdb.processing.XQRS._bandpass)
MAX_BATCH = 256  # beat windows per engine call: as fast as all of a 10 min record at once, bounded memory
_RR_COLUMN = {name: i for i, name in enumerate(RR_FEATURES)}  # the columns of rr_rows


@dataclass
class Beat:
    """One classified beat: where (R peak, at the source rate), what, and how sure."""

    sample: int
    time_s: float
    label: str
    index: int
    probabilities: np.ndarray
    labels: list[str] = field(repr=False, default_factory=list)

    def to_json(self) -> dict:
        return {"sample": self.sample, "time_s": round(self.time_s, 4), "label": self.label,
                "probabilities": {n: round(float(p), 6) for n, p in zip(self.labels, self.probabilities)}}


@dataclass
class Gap:
    """A stretch with no usable signal, in seconds from the signal's start, and why."""

    start_s: float
    end_s: float
    reason: str


class BeatReader:
    """Incremental beat analysis of one signal: ``feed`` samples, get the beats that are complete."""

    def __init__(self, pipe, fs: float, leads: tuple[str, ...] | None = None, units: str = "mV",
                 block_s: float = BLOCK_S, margin_s: float = MARGIN_S, positions: np.ndarray | None = None,
                 adc_gain: float | None = None) -> None:
        pre = pipe.preprocessor
        if not hasattr(pre, "cut"):
            raise InputError("this bundle's model reads images, not signals", "use pipe.predict for images")
        window_s = (pre.before + pre.after) / pre.fs
        if margin_s < window_s / 2 + GUARD_S:
            raise InputError(f"margin_s {margin_s} is too short for the model's {window_s:g} s beat window",
                             f"use margin_s of at least {window_s / 2 + GUARD_S:g}")
        if positions is None and not (isinstance(fs, (int, float, np.integer, np.floating)) and fs > 2 * QRS_BAND_HZ):
            # XQRS band-passes 5-20 Hz before it looks for beats: below 40 Hz that band does not exist
            raise InputError(f"the QRS detector needs a rate above {2 * QRS_BAND_HZ:g} Hz, got fs={fs!r}",
                             "pass the recording at its own rate (e.g. 360 Hz), or the R-peak positions")
        self.pipe, self.pre = pipe, pre
        self.fs = float(fs)
        # chunks are kept in mV, so the flat-line and dropout checks read the thresholds in their unit; wrong units or
        # a wrong gain fail here, not in every block
        self.to_mv = stored_to_mv(units, adc_gain, "the stream")
        self.leads = leads
        self._read: list[int] | None = None  # indices of the leads the model reads
        if leads is not None:  # a spec that names leads this signal lacks fails now, not as a gap per block
            self._read = pre.read_leads(Signal(np.ones((2, len(leads))), self.fs, tuple(leads), "the stream"))
        self.block = int(round(block_s * fs))
        self.margin = int(round(margin_s * fs))
        self.before = pre.before * self.fs / pre.fs  # a beat window's reach in source samples
        self.after = pre.after * self.fs / pre.fs
        self.guard = int(round(GUARD_S * self.fs))
        self.min_stretch = max(int(np.ceil(self.before + self.after)), int(round(MIN_STRETCH_S * self.fs)))
        self.positions = None if positions is None else np.sort(np.asarray(positions, dtype=np.int64))
        self._buffer = np.zeros((0, len(leads) if leads else 0))
        self._offset = 0  # source sample index of _buffer[0]
        self._next_block = 0
        self._received = 0
        self.gaps: list[Gap] = []
        self.usable_s = 0.0  # seconds of analysed signal that were not in a gap
        self.found = 0  # beats reported so far
        self.compute_s = 0.0  # time spent analysing (detector, preprocessing, inference)
        # a model that also reads RR intervals: a beat waits for the next R peak, its intervals come from the peaks
        # found (edgemed.rr_intervals, the definitions it was trained with)
        self._rr = pipe.features.rr_derived if pipe.features else []
        if pipe.features and len(self._rr) != len(pipe.features.specs):
            other = [s.name for s in pipe.features.specs if s not in self._rr]
            raise InputError(f"this model also reads {', '.join(other)}, which a signal does not give",
                             "classify pre-cut beats with pipe.predict(beat, features=...)")
        self._history = np.zeros(0, np.int64)  # R peaks found so far (source samples), as far back as RR needs
        self._pending: list[tuple[int, np.ndarray]] = []  # (R peak, window) waiting for the next R peak
        # windows cut by the blocks this feed completed, classified together at its end (see _classify_cut)
        self._cut: list[tuple[np.ndarray, np.ndarray, tuple[int, int]]] = []
        self.unclassified = 0  # beats without RR intervals (the signal's first and last): not classified

    def feed(self, samples: np.ndarray) -> list[Beat]:
        """Append samples (n,) or (n, leads); returns the beats of every block now complete."""
        with np.errstate(over="ignore"):  # beyond float64 in mV: Inf, a gap like NaN
            x = np.asarray(samples, dtype=np.float64) * self.to_mv
        x = x[:, None] if x.ndim == 1 else x
        if x.ndim != 2 or (self._buffer.shape[1] and x.shape[1] != self._buffer.shape[1]):
            raise InputError(f"chunk shape {np.shape(samples)} does not continue the stream's "
                             f"{self._buffer.shape[1]} lead(s)", "feed (n, leads) chunks of the same leads")
        if not self._buffer.shape[1]:
            self._buffer = np.zeros((0, x.shape[1]))
            self.leads = self.leads or tuple(f"lead{i}" for i in range(x.shape[1]))
        self._buffer = np.concatenate([self._buffer, x])
        self._received += len(x)
        out = []
        while self._received >= (self._next_block + 1) * self.block + self.margin:
            out += self._analyse(self._next_block)
            self._next_block += 1
        return out + self._classify_cut()

    def flush(self) -> list[Beat]:
        """The end of the signal: analyse what is left (its last block has no right margin beyond the end)."""
        out = []
        while self._next_block * self.block < self._received:
            out += self._analyse(self._next_block)
            self._next_block += 1
        out += self._classify_cut()
        if self._rr:
            self.unclassified += len(self._pending)  # the last beat has no next R peak: no rr_post
            self._pending = []
        return out

    def warnings(self) -> list[str]:
        """What a reader of the beats must know: a signal that is not flat but gave no beat at all; beats left
        unclassified for want of RR intervals."""
        window_s = (self.before + self.after) / self.fs
        told = [f"{self.unclassified} beat(s) not classified: the model reads RR intervals, and the signal's first "
                "and last beat lack a neighbour"] if self.unclassified else []
        if self.found or self.usable_s < window_s:
            return told
        lead = self.leads[self.read_leads()[0]] if self.leads else "lead0"
        cause = (f"the QRS detector found no QRS complex on lead {lead}" if self.positions is None
                 else "no given position has a whole beat window on usable signal")
        return [f"no beat in {self.usable_s:.1f} s of signal that is neither flat nor NaN: {cause}; check the lead "
                "choice, the sampling rate and units the signal states, and that it is an ECG"]

    def read_leads(self) -> list[int]:
        if self._read is None:
            self._read = self.pre.read_leads(Signal(np.ones((2, len(self.leads))), self.fs, tuple(self.leads)))
        return self._read

    # -- one block ---------------------------------------------------------------------------
    def _analyse(self, k: int) -> list[Beat]:
        t0 = time.perf_counter()
        core_lo, core_hi = k * self.block, min((k + 1) * self.block, self._received)
        lo, hi = max(0, core_lo - self.margin), min(self._received, core_hi + self.margin)
        span = self._buffer[lo - self._offset:hi - self._offset]
        read = self.read_leads()
        runs = bad_runs(span[:, read], self.fs, tuple(self.leads[i] for i in read))
        lost = 0
        for r in runs:
            a, b = max(lo + r.start, core_lo), min(lo + r.stop, core_hi)
            if a < b:
                self._gap(a, b, r.reason)
                lost += b - a
        self.usable_s += (core_hi - core_lo - lost) / self.fs
        beats = []
        for a, b in usable(len(span), runs):
            if b - a < self.min_stretch or lo + b <= core_lo - self.after or lo + a >= core_hi + self.before:
                continue  # too short for a beat, or no beat of this block can be cut from it
            # beside a gap (not at the block's own edges, which have margins) a beat needs GUARD_S more
            ok_lo = lo + a + (self.guard if a > 0 else 0)
            ok_hi = lo + b - (self.guard if b < len(span) else 0)
            try:
                beats += self._classify(span[a:b], lo + a, core_lo, core_hi, ok_lo, ok_hi)
            except SignalQualityError as exc:  # no signal here after all: say so and go on
                self._lost(max(lo + a, core_lo), min(lo + b, core_hi), exc.problem)
        if self._rr:
            beats = self._release()
        # keep only what the next block's left margin needs
        drop = max(0, (k + 1) * self.block - self.margin - self._offset)
        self._buffer, self._offset = self._buffer[drop:], self._offset + drop
        self.found += len(beats)
        self.compute_s += time.perf_counter() - t0
        return beats

    def _lost(self, start: int, stop: int, reason: str) -> None:
        """A stretch judged usable by its samples that could not be analysed after all (an amplitude no ECG has, a
        model output with NaN): a gap, and no longer usable signal, so no warning blames the QRS detector for it."""
        if start < stop:
            self.usable_s -= (stop - start) / self.fs
            self._gap(start, stop, reason)

    def _gap(self, start: int, stop: int, reason: str) -> None:
        """A gap in source samples; one that continues the last one for the same reason extends it."""
        if start >= stop:
            return
        last = self.gaps[-1] if self.gaps else None
        if last is not None and last.reason == reason and round(last.end_s * self.fs) == start:
            last.end_s = stop / self.fs
        else:
            self.gaps.append(Gap(start / self.fs, stop / self.fs, reason))

    def _classify(self, span: np.ndarray, lo: int, core_lo: int, core_hi: int, ok_lo: int, ok_hi: int
                  ) -> list[Beat]:
        sig = as_signal(span, self.fs, "mV", self.leads, source=f"signal at {lo / self.fs:.1f} s")
        processed = self.pre.record(sig)  # checks NaN and flat leads; select, resample, filter
        if self.positions is not None:
            peaks = self.positions[(self.positions >= core_lo) & (self.positions < core_hi)]
        else:
            peaks = self._detect(sig, lo, core_lo, core_hi)
        if self._rr and len(peaks):  # every R peak found counts for the intervals, its window cut or not
            self._history = np.union1d(self._history, peaks)
        if ok_lo > lo:
            peaks = peaks[peaks - self.before >= ok_lo]
        if ok_hi < lo + len(span):
            peaks = peaks[peaks + self.after <= ok_hi]
        if not len(peaks):
            return []
        at = np.round((peaks - lo) * self.pre.fs / self.fs).astype(np.int64)
        windows, ok = self.pre.cut(processed, at)
        peaks = peaks[ok]
        if not len(peaks):
            return []
        if self._rr:
            self._pending += list(zip(peaks.tolist(), windows))
        else:
            self._cut.append((peaks, windows, (max(lo, core_lo), min(lo + len(span), core_hi))))
        return []

    def _classify_cut(self) -> list[Beat]:
        """The windows every block of one feed cut, classified in engine calls of up to MAX_BATCH windows rather than
        one call per block: a record given whole is then batched as a hand-written pipeline would batch it. Per
        block (about 18 beats of a 10 s block at 70 bpm) the 1-D CNN's 1,079 beats of MIT-BIH 213 took 12.7 ms in
        OpenVINO and 32.4 ms in ONNX Runtime, in batches of 256 9.2 and 29.8 ms (2 cores). Each beat's probabilities
        do not depend on the batch it rode in on either CPU backend (batches of 1, 18 and 1,079: bit for bit), so
        a stream fed sample by sample gets the answer the whole record gets (tests/test_ecg.py). Where a batch's
        outputs hold NaN or Inf, each stretch is classified on its own and the one at fault becomes a gap."""
        if not self._cut:
            return []
        t0 = time.perf_counter()
        cut, self._cut = self._cut, []
        peaks = np.concatenate([p for p, _, _ in cut])
        windows = np.concatenate([w for _, w, _ in cut])
        try:
            beats = self._beats(peaks, np.concatenate([self._infer(windows[i:i + MAX_BATCH])
                                                       for i in range(0, len(windows), MAX_BATCH)]))
        except SignalQualityError:  # some stretch's outputs hold NaN or Inf: which one, as a gap
            beats = []
            for p, w, (start, stop) in cut:
                try:
                    beats += self._beats(p, self._infer(w))
                except SignalQualityError as exc:
                    self._lost(start, stop, exc.problem)
            self.gaps.sort(key=lambda g: g.start_s)
        self.found += len(beats)
        self.compute_s += time.perf_counter() - t0
        return beats

    def _beats(self, peaks: np.ndarray, probs: np.ndarray) -> list[Beat]:
        labels = self.pipe.labels
        return [Beat(int(p), p / self.fs, labels[i], i, q, labels)
                for p, i, q in zip(peaks.tolist(), probs.argmax(axis=1).tolist(), probs)]

    def _detect(self, sig: Signal, lo: int, core_lo: int, core_hi: int) -> np.ndarray:
        """R peaks (source samples) in the block's core: XQRS at (about) 360 Hz, mapped back to the source rate."""
        from fractions import Fraction

        from scipy import signal as ss
        from wfdb import processing

        from .local_peaks import install

        x = sig.samples[:, self.read_leads()[0]]
        if np.ptp(x) < FLAT_MV:
            return np.zeros(0, np.int64)
        ratio = Fraction(DETECT_FS / self.fs).limit_denominator(64)
        rate = self.fs * float(ratio)  # 360 Hz exactly for the usual rates (250, 500, 1000 Hz; 128 Hz: 360 too)
        xd = x if ratio == 1 else ss.resample_poly(x, ratio.numerator, ratio.denominator)
        install(processing.qrs)  # XQRS's local-peak search, vectorised (edgemed.local_peaks: same indices)
        xqrs = processing.XQRS(xd, rate)
        xqrs.detect(verbose=False)
        peaks = np.asarray(xqrs.qrs_inds, dtype=np.int64)
        if len(peaks):
            peaks = np.asarray(processing.correct_peaks(xd, peaks, int(0.1 * rate), int(0.15 * rate), "compare"),
                               dtype=np.int64)
        peaks = peaks[peaks >= 0]
        if ratio != 1 and len(peaks):  # back to the source rate, then onto its own sample of the extremum
            peaks = np.clip(np.round(peaks * self.fs / rate).astype(np.int64), 0, len(x) - 1)
            reach = int(np.ceil(self.fs / rate)) + 1
            peaks = np.asarray(processing.correct_peaks(x, peaks, reach, max(3, int(0.15 * self.fs)), "compare"),
                               dtype=np.int64)
            peaks = peaks[peaks >= 0]
        peaks = np.unique(peaks) + lo
        return peaks[(peaks >= core_lo) & (peaks < core_hi)]

    def _release(self) -> list[Beat]:
        """The pending beats whose next R peak is known, classified with their RR intervals; a beat with no
        previous R peak (the signal's first) is counted, not classified."""
        from .rr_intervals import RR_AVERAGE_S, RR_LOCAL_BEATS, rr_rows

        ready = [(p, w) for p, w in self._pending if len(self._history) and p < self._history[-1]]
        if not ready:
            return []
        self._pending = self._pending[len(ready):]
        peaks = np.array([p for p, _ in ready], np.int64)
        rows = rr_rows(self._history, self.fs)[np.searchsorted(self._history, peaks)]
        defined = np.isfinite(rows).all(axis=1)
        self.unclassified += int((~defined).sum())
        # keep the peaks the waiting beats' intervals still reach: 300 s back, and the 10 intervals before
        oldest = self._pending[0][0] if self._pending else int(self._history[-1])
        keep_from = min(np.searchsorted(self._history, oldest - RR_AVERAGE_S * self.fs - 1),
                        max(0, np.searchsorted(self._history, oldest) - RR_LOCAL_BEATS - 1))
        self._history = self._history[keep_from:]
        if not defined.any():
            return []
        windows = np.stack([w for (_, w), ok in zip(ready, defined) if ok])
        extra = {spec.name: self.pipe.features.rows(spec, rows[defined][:, [_RR_COLUMN[f] for f in spec.features]])
                 for spec in self._rr}
        return self._beats(peaks[defined], self._infer(windows, extra))

    def _infer(self, windows: np.ndarray, extra: dict[str, np.ndarray] | None = None) -> np.ndarray:
        engine, name = self.pipe.engine, self.pipe.input_name
        extra = extra or {}
        if self.pipe.dynamic_batch:
            out = engine.infer({name: windows, **extra}, validate=False)[self.pipe.output_name]
        else:
            out = np.concatenate([engine.infer({name: w[None], **{k: v[i:i + 1] for k, v in extra.items()}},
                                               validate=False)[self.pipe.output_name]
                                  for i, w in enumerate(windows)])
        check_finite({self.pipe.output_name: out}, windows, SignalQualityError)  # a gap in a stream, not an answer
        return class_probabilities_rows(out, self.pipe.output_kind)


@dataclass
class BeatRecord:
    """What one whole signal gave: its beats, the stretches with no usable signal, and what it cost."""

    beats: list[Beat]
    gaps: list[Gap]
    duration_s: float
    compute_s: float
    warnings: list[str] = field(default_factory=list)

    @property
    def realtime_factor(self) -> float:
        """How many times faster than the signal arrives (signal seconds per second of compute)."""
        return self.duration_s / self.compute_s if self.compute_s > 0 else float("inf")

    def counts(self) -> dict[str, int]:
        labels = self.beats[0].labels if self.beats else []
        return {n: sum(b.label == n for b in self.beats) for n in labels}


def read_beats(pipe, signal: Signal | np.ndarray | str, positions: np.ndarray | None = None,
               block_s: float = BLOCK_S, margin_s: float = MARGIN_S, fs: float | None = None,
               units: str | None = None, leads: tuple[str, ...] | None = None,
               adc_gain: float | None = None) -> BeatRecord:
    """Every beat of a whole signal (a file, a Signal, or an array with fs= and units=, and adc_gain= for raw
    counts)."""
    from pathlib import Path

    from .io.signals import read_signal

    if isinstance(signal, (str, Path)):
        signal = read_signal(signal, fs, units, adc_gain)
        adc_gain = None  # applied by the reader: the Signal is in mV
        if leads is not None and tuple(leads) != signal.leads:  # names for a file that has none (.npy)
            if not all(n == f"lead{i}" for i, n in enumerate(signal.leads)) or len(leads) != len(signal.leads):
                raise InputError(f"{signal.source}: its leads are {', '.join(signal.leads)}, not "
                                 f"{', '.join(leads)}", "name leads only for a file that has no names (.npy), one "
                                 "name per lead")
            signal = Signal(signal.samples, signal.fs, tuple(leads), signal.source)
    sig = as_signal(signal, fs, units, leads, source="array", adc_gain=adc_gain)
    window_s = (pipe.preprocessor.before + pipe.preprocessor.after) / pipe.preprocessor.fs \
        if hasattr(pipe.preprocessor, "cut") else 0.0
    if sig.duration < window_s:
        raise InputError(f"{sig.source}: the signal is {sig.duration:.2f} s, shorter than one {window_s:g} s beat "
                         "window", "pass a longer recording")
    reader = BeatReader(pipe, sig.fs, sig.leads, "mV", block_s, margin_s, positions)
    beats = reader.feed(sig.samples) + reader.flush()
    return BeatRecord(beats, reader.gaps, sig.duration, reader.compute_s, reader.warnings())
