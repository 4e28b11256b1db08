"""Physiological signals as edgemed reads them: samples in millivolts, with the rate and leads the file states.

A :class:`Signal` is what every signal path works with (preprocessing, the beat stream, bench).
Readers take the sampling rate, lead names and units from the file and convert to mV; where a
format carries no rate or units (a bare ``.npy``), the caller must state them: nothing is assumed.

- WFDB records (``.hea`` + ``.dat``): the ``wfdb`` package (PhysioNet's reader), physical units.
- DICOM waveforms (ECG IODs): pydicom's ``waveform_array``, which applies channel sensitivity,
  its correction factor and the baseline; units from the channel's sensitivity-units code.
- CSV: a ``time`` column in seconds (the rate comes from its spacing) and one column per lead
  named ``LEAD [unit]``, e.g. ``MLII [mV]``.
- NPY: one array (T,) or (T, L); ``fs`` and ``units`` must be given.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, OptionError

# Units a reader converts to millivolts; anything else is refused rather than guessed.
TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3, "nv": 1e-6}
MAX_SAMPLES = 1 << 28  # 268M samples per lead: a longer signal is a mistake or hostile
SIGNAL_SUFFIXES = (".hea", ".dat", ".dcm", ".csv", ".npy")


@dataclass(frozen=True)
class Signal:
    """Samples (T, L) float64 in mV, the sampling rate in Hz, and one name per lead."""

    samples: np.ndarray
    fs: float
    leads: tuple[str, ...]
    source: str = ""
    # numbers that go with a pre-cut beat, by name (its RR intervals, from the set it came from): what a model's
    # inputs beside the signal read (manifest ``features``); None where the signal carries none
    features: dict[str, float] | None = None

    def __post_init__(self) -> None:
        x = self.samples
        if not isinstance(x, np.ndarray) or x.ndim != 2 or x.dtype.kind not in "uif":
            raise InputError(f"{self.source or 'signal'}: samples must be a numeric (T, leads) array",
                             "pass a (T,) or (T, L) array")
        if not isinstance(self.leads, tuple) or not all(isinstance(n, str) for n in self.leads):
            raise InputError(f"{self.source or 'signal'}: lead names must be strings, got {self.leads!r}",
                             "name the leads, e.g. leads=('MLII',)")
        if isinstance(self.fs, (bool, np.bool_)) or not isinstance(self.fs, (int, float, np.integer, np.floating)):
            raise InputError(f"{self.source or 'signal'}: sampling rate {self.fs!r} is not a number",
                             "state the rate in Hz (e.g. fs=360 for MIT-BIH)")
        if x.shape[1] != len(self.leads):
            raise InputError(f"{self.source or 'signal'}: {x.shape[1]} lead(s) but {len(self.leads)} lead name(s)",
                             "give one name per lead")
        if x.shape[0] == 0 or x.shape[0] > MAX_SAMPLES:
            raise InputError(f"{self.source or 'signal'}: {x.shape[0]} samples", "pass a non-empty signal")
        if not (np.isfinite(self.fs) and 1.0 <= self.fs <= 100_000.0):
            raise InputError(f"{self.source or 'signal'}: sampling rate {self.fs} Hz is implausible",
                             "state the rate in Hz (e.g. 360 for MIT-BIH)")

    @property
    def duration(self) -> float:
        return self.samples.shape[0] / self.fs

    def lead(self, which: str | int) -> int:
        """The index of a lead given by name or index."""
        if isinstance(which, int):
            if not 0 <= which < len(self.leads):
                raise InputError(f"{self.source or 'signal'}: no lead {which} (it has {len(self.leads)})",
                                 f"choose one of {', '.join(self.leads)}")
            return which
        if which not in self.leads:
            unnamed = all(re.fullmatch(r"lead\d+", n) for n in self.leads)
            raise InputError(f"{self.source or 'signal'}: no lead {which!r} (it has {', '.join(self.leads)})",
                             "name the array's leads, e.g. leads=('MLII',)" if unnamed else
                             "choose one of its leads in the spec's select_leads")
        return self.leads.index(which)

    def slice(self, start: int, stop: int) -> Signal:
        return Signal(self.samples[start:stop], self.fs, self.leads, self.source)


def to_mv(unit: str, where: str) -> float:
    """The factor that turns ``unit`` into mV; an unknown unit is an error, never a guess."""
    factor = TO_MV.get(unit.strip().lower().replace("micro", "u"))
    if factor is None:
        raise InputError(f"{where}: unit {unit!r} is not a voltage edgemed knows", "use mV, uV or V")
    return factor


def check_gain(adc_gain: object, where: str) -> float:
    """The digitiser gain of stored samples (counts per unit, WFDB's convention: MIT-BIH stores 200 per mV), checked:
    a positive finite real number; ``None`` means the values are already in their unit (a gain of 1)."""
    if adc_gain is None:
        return 1.0
    if isinstance(adc_gain, (bool, np.bool_)) or not isinstance(adc_gain, (int, float, np.integer, np.floating)):
        raise InputError(f"{where}: adc_gain={adc_gain!r} is not a number",
                         "give the digitiser's counts per unit, e.g. adc_gain=200 (MIT-BIH: 200 counts per mV)")
    gain = float(adc_gain)
    if not 0 < gain < float("inf"):  # 0, negative, NaN, Inf: every sample would become 0 mV, NaN or the wrong sign
        raise InputError(f"{where}: adc_gain {gain:g} is not positive and finite",
                         "give the digitiser's counts per unit, e.g. adc_gain=200 (MIT-BIH: 200 counts per mV)")
    return gain


def stored_to_mv(units: str, adc_gain: object, where: str) -> float:
    """The factor that turns stored samples into mV: the unit's factor over the gain. The one rule for every entry
    point that takes raw digitiser counts (signal sets' ``adc_gain``, arrays given to ``predict``, ``beats`` and
    ``beat_reader``): physical value = stored value / adc_gain, in ``units``. Integer and float samples alike, as
    WFDB and the signal-set files store them."""
    if not isinstance(units, str):
        raise InputError(f"{where}: units={units!r} is not a unit name", "state the unit as text, e.g. units='mV'")
    gain = check_gain(adc_gain, where)
    return to_mv(units, where) / gain


SIGNAL_DESCRIPTION = frozenset({"fs", "units", "leads", "adc_gain"})  # as_signal's keywords: how a beat is described


def check_description(describe: dict) -> None:
    """Only what describes a signal (``as_signal``'s keywords) goes with one: anything else is refused, never
    ignored."""
    unknown = sorted(set(describe) - SIGNAL_DESCRIPTION)
    if unknown:
        raise OptionError(f"{', '.join(unknown)}: not a description of a signal",
                          f"describe a beat with {', '.join(sorted(SIGNAL_DESCRIPTION))} only")


def as_signal(x: np.ndarray | Signal, fs: float | None = None, units: str | None = None,
              leads: tuple[str, ...] | None = None, source: str = "array", adc_gain: float | None = None) -> Signal:
    """A Signal from an array the caller describes (rate and units stated, never assumed; raw digitiser counts with
    their ``adc_gain``, counts per unit)."""
    if isinstance(x, Signal):
        if adc_gain is not None:  # a Signal is in mV already: a gain on it would scale the beat a second time
            raise InputError(f"{x.source or 'signal'}: adc_gain={adc_gain!r} given for samples already in mV "
                             "(an edgemed Signal, or a file that states its units)",
                             "drop adc_gain, or pass the raw counts as an array with fs=, units= and adc_gain=")
        return x
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "uif":
        raise InputError(f"{source}: expected a numeric numpy array or an edgemed Signal, got "
                         f"{type(x).__name__}", "pass samples as a (T,) or (T, L) numpy array")
    if fs is None or units is None:
        raise InputError(f"{source}: an array carries no sampling rate or units",
                         "pass fs= (Hz) and units= ('mV', 'uV'), or an edgemed Signal, or a WFDB/DICOM/CSV file")
    if isinstance(fs, (bool, np.bool_)) or not isinstance(fs, (int, float, np.integer, np.floating)):
        raise InputError(f"{source}: fs={fs!r} is not a number", "state the sampling rate in Hz, e.g. fs=360")
    factor = stored_to_mv(units, adc_gain, source)
    if leads is not None and (isinstance(leads, str) or not isinstance(leads, (tuple, list))):
        raise InputError(f"{source}: leads={leads!r} is not a sequence of lead names", "write e.g. leads=('MLII',)")
    x = x[:, None] if x.ndim == 1 else x
    if x.ndim != 2:
        raise InputError(f"{source}: array shape {x.shape} is not (T,) or (T, L)", "pass one recording")
    with np.errstate(over="ignore"):  # a value beyond float64 in V or uV becomes Inf here, refused as such later
        samples = x.astype(np.float64) * factor
    return Signal(samples, float(fs), tuple(leads or (f"lead{i}" for i in range(x.shape[1]))), source)


def read_signal(path: str | Path, fs: float | None = None, units: str | None = None,
                adc_gain: float | None = None) -> Signal:
    """Read a WFDB record, a DICOM waveform, a CSV or an NPY file (only an NPY, which states nothing, takes a gain)."""
    path = Path(path)
    if adc_gain is not None and path.suffix.lower() != ".npy":
        raise InputError(f"{path}: adc_gain={adc_gain!r} given for a file that states its own units and gain",
                         "drop adc_gain (WFDB, DICOM and CSV files are read in their physical units), or pass raw "
                         "counts as an .npy or an array")
    suffix = path.suffix.lower()
    if not path.name:  # "", ".", "/": no file name to read (and none to swap a suffix on)
        raise InputError(f"{path}: not a signal file", "pass a WFDB record (.hea), a DICOM waveform, a CSV or an NPY")
    if suffix in (".hea", ".dat") or (not suffix and path.with_suffix(".hea").is_file()):
        return _wfdb(path.with_suffix(""))
    if not path.is_file():
        raise InputError(f"{path}: no such file", "pass a WFDB record (.hea), a DICOM waveform, a CSV or an NPY")
    if suffix == ".csv":
        return _csv(path)
    if suffix == ".npy":
        from .images import read_npy

        # the image reader's: the header first, a huge claim refused, an empty or cut file an InputError
        return as_signal(read_npy(path, MAX_SAMPLES, "signal"), fs, units, source=str(path), adc_gain=adc_gain)
    return _dicom(path)


def _wfdb(record: Path) -> Signal:
    try:
        import wfdb
    except ImportError as exc:
        raise InputError("reading WFDB records needs the wfdb package", "pip install 'edgemed[signal]'") from exc
    if not record.with_suffix(".hea").is_file():
        raise InputError(f"{record}.hea: no such WFDB header", "pass the record's .hea file")
    try:
        rec = wfdb.rdrecord(str(record))
    except Exception as exc:  # noqa: BLE001 - wfdb raises many kinds on a damaged record
        raise InputError(f"{record}: not a readable WFDB record ({str(exc).splitlines()[0][:160]})",
                         "check the .hea and .dat files are complete") from exc
    if rec.p_signal is None:
        raise InputError(f"{record}: the record holds no physical signal", "check the header's gain fields")
    units = rec.units or ["mV"] * rec.n_sig
    factors = np.array([to_mv(u, f"{record}.hea") for u in units])
    return Signal(rec.p_signal.astype(np.float64) * factors, float(rec.fs), tuple(rec.sig_name), str(record))


def _dicom(path: Path) -> Signal:
    try:
        import pydicom
    except ImportError as exc:
        raise InputError("reading DICOM waveforms needs pydicom", "pip install 'edgemed[dicom]'") from exc
    try:
        ds = pydicom.dcmread(str(path))
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path}: not a readable DICOM file ({str(exc)[:160]})",
                         "pass a WFDB record, a DICOM waveform, a CSV or an NPY") from exc
    if "WaveformSequence" not in ds:
        raise InputError(f"{path}: the DICOM file holds no waveform", "pass an ECG waveform object")
    group = ds.WaveformSequence[0]
    try:
        samples = np.asarray(ds.waveform_array(0), dtype=np.float64)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path}: the waveform data do not decode ({str(exc)[:160]})",
                         "check the file is complete") from exc
    factors = []
    for i, channel in enumerate(group.ChannelDefinitionSequence):
        unit = channel.ChannelSensitivityUnitsSequence[0].CodeValue if "ChannelSensitivityUnitsSequence" in channel \
            else None
        if unit is None:
            raise InputError(f"{path}: channel {i} states no sensitivity units", "the file cannot be read safely")
        factors.append(to_mv(unit, str(path)))
    return Signal(samples * np.array(factors), float(group.SamplingFrequency), dicom_lead_names(group), str(path))


def dicom_lead_names(group) -> tuple[str, ...]:
    """The leads of one DICOM waveform multiplex group, named as edgemed names them ('Lead II' -> 'II')."""
    return tuple(_lead_name(ch.ChannelSourceSequence[0].CodeMeaning) if "ChannelSourceSequence" in ch else f"lead{i}"
                 for i, ch in enumerate(group.ChannelDefinitionSequence))


def _lead_name(meaning: str) -> str:
    """'Lead II' -> 'II', 'I (Einthoven)' -> 'I' (DICOM's code meanings); other names unchanged."""
    name = meaning[5:].strip() if meaning.lower().startswith("lead ") else meaning.strip()
    return re.sub(r"\s*\((Einthoven|Goldberger|Wilson)\)$", "", name, flags=re.IGNORECASE) or name


_CSV_LEAD = re.compile(r"^\s*(.+?)\s*\[\s*([^\]]+)\s*\]\s*$")


def _csv(path: Path) -> Signal:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: not a readable CSV signal ({str(exc)[:120]})",
                         "write UTF-8 text: time,LEAD [mV] rows") from exc
    header = [h.strip() for h in rows[0]] if rows else []
    body = [r for r in rows[1:] if r]
    if len(header) < 2 or len(body) < 2:
        raise InputError(f"{path}: a CSV signal needs a header and at least two rows", "write time,LEAD [mV] rows")
    if header[0].lower() not in ("time", "time_s", "time [s]"):
        raise InputError(f"{path}: the first column must be 'time' (seconds)",
                         "write a header like: time,MLII [mV]; the rate is read from the time column")
    leads, factors = [], []
    for h in header[1:]:
        m = _CSV_LEAD.match(h)
        if not m:
            raise InputError(f"{path}: column {h!r} states no unit", "name lead columns like 'MLII [mV]'")
        leads.append(m.group(1))
        factors.append(to_mv(m.group(2), str(path)))
    for line, r in enumerate(rows[1:], start=2):  # a ragged row is named, not numpy's "inhomogeneous shape"
        if r and len(r) != len(header):
            raise InputError(f"{path}: line {line} has {len(r)} value(s), the header {len(header)} column(s)",
                             "write one value per column on every line")
    try:
        data = np.array([[float(v) for v in r] for r in body], dtype=np.float64)
    except ValueError as exc:
        raise InputError(f"{path}: a value is not a number ({exc})", "write plain decimal numbers") from exc
    steps = np.diff(data[:, 0])
    if not (steps > 0).all() or np.ptp(steps) > 0.01 * steps.mean():
        raise InputError(f"{path}: the time column is not evenly spaced and increasing",
                         "resample to a constant rate before writing the CSV")
    fs = (len(steps)) / (data[-1, 0] - data[0, 0])
    # times written with a few decimals put the rate a hair off a whole number of Hz: take the whole number
    fs = float(round(fs)) if abs(fs - round(fs)) < 1e-4 * fs else float(fs)
    return Signal(data[:, 1:] * np.array(factors), fs, tuple(leads), str(path))
