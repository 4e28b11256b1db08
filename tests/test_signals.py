"""Signal reading and preprocessing on real files, held to what each op must do.

The readers are checked against the MIT-BIH beats as PhysioNet-derived data (the shared .npz was
made by an independent decoder and FIR decimation); the filters against their analytic response;
the beat ops against numpy's own statistics.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgemed.errors import InputError
from edgemed.io.signals import Signal, as_signal, read_signal
from edgemed.samples import calibration_set, ecg_beats, ecg_record
from edgemed.signal_preprocess import SignalPreprocessor, apply_beat_ops, apply_record_ops, validate_signal_spec
from edgemed.signal_sets import SignalSet

from .conftest import SHARED

RECORDS = SHARED / "mitbih" / "records"
BEATS = SHARED / "mitbih" / "mitdb_beats_ds1ds2.npz"
SPEC = [{"op": "select_leads", "leads": ["MLII"]}, {"op": "resample", "fs": 120},
        {"op": "window", "before_s": 0.75, "after_s": 0.75}]

needs_wfdb = pytest.mark.skipif(__import__("importlib").util.find_spec("wfdb") is None,
                                reason="wfdb not installed (pip install 'edgemed[signal]')")


def _sine(fs: float, seconds: float, *freqs: float) -> Signal:
    t = np.arange(int(fs * seconds)) / fs
    return Signal(sum(np.sin(2 * np.pi * f * t) for f in freqs)[:, None], fs, ("x",), "synthetic")


@needs_wfdb
def test_wfdb_record_reads_in_millivolts_at_its_own_rate():
    sig = read_signal(RECORDS / "213.hea")
    assert sig.fs == 360 and sig.leads == ("MLII", "V1") and sig.samples.shape == (650000, 2)
    # QRS amplitudes of a real ECG are around a millivolt (ADC counts would be hundreds)
    assert 0.5 < np.percentile(np.abs(sig.samples[:, 0] - np.median(sig.samples[:, 0])), 99.9) < 5


@needs_wfdb
def test_record_resampled_and_cut_at_r_peaks_gives_the_reference_beats():
    """Our reader + resample + window against the independently made MIT-BIH beat windows of the same record."""
    data = np.load(BEATS)
    rows = np.flatnonzero(data["record"] == 213)[:400]
    pre = SignalPreprocessor(SPEC, [1, 1, 180])
    record = pre.record(read_signal(RECORDS / "213.hea"))
    windows, ok = pre.cut(record, np.round(data["r_peak"][rows] / 3).astype(int))
    reference = data["x"][rows][ok] / 200.0  # ADC counts, 200 per mV
    ours = windows[:, 0, :]
    # the two FIR decimators differ only in their filters: the beats agree to a few microvolts
    corr = [np.corrcoef(a - a.mean(), b - b.mean())[0, 1] for a, b in zip(ours, reference)]
    assert ok.sum() >= 398 and min(corr) > 0.995
    assert np.median(np.abs((ours - ours.mean(1, keepdims=True)) - (reference - reference.mean(1, keepdims=True)))) \
        < 0.01


def test_dicom_waveform_reads_twelve_leads_with_units_from_the_file():
    pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    path = get_testdata_file("waveform_ecg.dcm")
    sig = read_signal(path)
    assert sig.samples.shape[1] == 12 and "II" in sig.leads
    assert sig.fs == 1000.0 and 9.9 < sig.duration < 10.1
    ii = sig.samples[:, sig.lead("II")]
    assert 0.3 < np.ptp(ii) < 10  # millivolts: the file's uV were converted, not taken as mV


def test_csv_takes_rate_from_time_and_units_from_header(tmp_path):
    t = np.arange(720) / 360
    x = np.sin(2 * np.pi * 1.2 * t) * 800  # microvolts
    path = tmp_path / "ecg.csv"
    path.write_text("time,MLII [uV]\n" + "\n".join(f"{a:.6f},{b:.3f}" for a, b in zip(t, x)))
    sig = read_signal(path)
    assert abs(sig.fs - 360) < 1e-6 and sig.leads == ("MLII",)
    np.testing.assert_allclose(sig.samples[:, 0], x / 1000, atol=1e-6)
    path.write_text("time,MLII\n0,1\n0.1,2\n0.2,3\n")
    with pytest.raises(InputError, match="states no unit"):
        read_signal(path)


def test_arrays_must_state_rate_and_units(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros(100))
    with pytest.raises(InputError, match="no sampling rate or units"):
        read_signal(tmp_path / "x.npy")
    with pytest.raises(InputError, match="not a voltage"):
        as_signal(np.zeros(100), fs=360, units="furlongs")
    assert as_signal(np.ones(100), fs=360, units="uV").samples.max() == pytest.approx(1e-3)


def test_highpass_removes_baseline_wander_and_keeps_the_qrs_band():
    sig = _sine(360, 60, 0.1, 10.0)
    spec = [{"op": "highpass", "cutoff_hz": 0.5, "order": 2}, {"op": "resample", "fs": 360},
            {"op": "window", "before_s": 0.75, "after_s": 0.75}]
    out = apply_record_ops(sig, validate_signal_spec(spec)).samples[:, 0]
    t = np.arange(len(out)) / 360
    mid = slice(3600, -3600)
    # zero-phase: the 10 Hz tone comes through in phase, within 1%; the 0.1 Hz wander is down by > 25 dB
    residual = out[mid] - np.sin(2 * np.pi * 10 * t[mid])
    assert np.abs(residual).max() < 0.06
    spectrum = np.abs(np.fft.rfft(out[mid]))
    freqs = np.fft.rfftfreq(len(out[mid]), 1 / 360)
    assert spectrum[np.argmin(np.abs(freqs - 0.1))] < spectrum[np.argmin(np.abs(freqs - 10))] * 10 ** (-25 / 20)


def test_bandpass_keeps_the_passband_and_rejects_both_sides():
    sig = _sine(360, 30, 0.05, 8.0, 100.0)
    spec = validate_signal_spec([{"op": "bandpass", "low_hz": 0.5, "high_hz": 40}, {"op": "resample", "fs": 360},
                                 {"op": "window", "before_s": 0.75, "after_s": 0.75}])
    out = apply_record_ops(sig, spec).samples[3600:-3600, 0]
    t = np.arange(3600, 3600 + len(out)) / 360
    assert np.abs(out - np.sin(2 * np.pi * 8 * t)).max() < 0.08


def test_resample_matches_the_analytic_signal_at_the_new_rate():
    sig = _sine(360, 10, 5.0)
    out = apply_record_ops(sig, validate_signal_spec(SPEC[1:])).samples[:, 0]
    t = np.arange(len(out)) / 120
    assert len(out) == 1200
    assert np.abs(out[60:-60] - np.sin(2 * np.pi * 5 * t[60:-60])).max() < 1e-2
    with pytest.raises(InputError, match="ratio of small integers"):
        apply_record_ops(_sine(360.123457, 2, 5.0), validate_signal_spec(SPEC[1:]))


def test_beat_ops_agree_with_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 2, 180)) + np.linspace(0, 3, 180)
    spec = [{"op": "window", "before_s": 0.75, "after_s": 0.75}, {"op": "detrend"}, {"op": "zscore"},
            {"op": "scale", "factor": 2.0}]
    out = apply_beat_ops(x, validate_signal_spec(spec))
    t = np.arange(180)
    for k in range(5):
        for lead in range(2):
            slope, icept = np.polyfit(t, x[k, lead], 1)
            r = x[k, lead] - (slope * t + icept)
            np.testing.assert_allclose(out[k, lead], 2 * (r - r.mean()) / r.std(), rtol=1e-4, atol=1e-4)


def test_detrend_removes_the_line_scipy_removes_on_real_beats():
    """The numpy detrend (no scipy import on a beat at the model's rate) against scipy.signal.detrend, the op's
    reference, on 20,000 real MIT-BIH beats: the same windows to 1e-12 mV, and in the model's float32 at most one
    unit in the last place apart (measured: 2e-15 mV; 1 float32 value in 3.6 million differs, by one ulp)."""
    from scipy.signal import detrend

    from edgemed.signal_preprocess import detrend as ours

    with np.load(BEATS) as data:
        x = (data["x"][:20000].astype(np.float64) / 200.0).reshape(10000, 2, 180)  # (K, L, T), two "leads"
    ref = detrend(x, axis=-1, type="linear")
    got = ours(x)
    assert np.abs(got - ref).max() < 1e-12
    a, b = got.astype(np.float32), ref.astype(np.float32)
    assert np.all(np.abs(a - b) <= np.spacing(np.maximum(np.abs(a), np.abs(b))))


def test_a_beat_at_the_models_rate_imports_no_scipy(tmp_path):
    """Cold start: predicting a beat at the rate the spec resamples to needs no scipy (importing scipy.signal was
    0.7 s of a 1.0 s first predict); one at another rate does resample, with scipy."""
    import subprocess
    import sys

    from .conftest import convert_ecg_fp32

    bundle = convert_ecg_fp32(tmp_path / "ecg_cnn", windows=8)
    code = f"""
import sys
import numpy as np
import edgemed
pipe = edgemed.load({str(bundle)!r})
beat = np.sin(np.arange(180) / 5.0)
print(pipe.predict(beat, fs=120, units="mV", leads=("MLII",)).label,
      sorted({{m.split('.')[0] for m in sys.modules}} & {{'scipy', 'PIL', 'torch', 'onnx'}}))
pipe.predict(np.sin(np.arange(540) / 15.0), fs=360, units="mV", leads=("MLII",))
print('scipy' in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()
    assert first.endswith(" []") and second == "True", out.stdout


def test_window_cuts_centred_on_the_position_and_never_pads():
    pre = SignalPreprocessor(SPEC[1:], [1, 1, 180])
    ramp = Signal(np.arange(1200, dtype=float)[:, None], 120, ("x",))
    windows, ok = pre.cut(ramp, np.array([50, 600, 1150]))
    assert ok.tolist() == [False, True, False]
    assert windows[0, 0, 0] == 600 - 90 and windows[0, 0, -1] == 600 + 89


def test_bad_signals_are_one_line_errors():
    pre = SignalPreprocessor(SPEC[1:], [1, 1, 180])
    x = np.sin(np.arange(180) / 5.0)
    x[40:60] = np.nan
    with pytest.raises(InputError, match="NaN/Inf sample"):
        pre(x, fs=120, units="mV")
    with pytest.raises(InputError, match="flat"):
        pre(np.zeros(180), fs=120, units="mV")
    with pytest.raises(InputError, match="single beat must be 180 samples"):
        pre(np.sin(np.arange(100) / 5.0), fs=120, units="mV")
    with pytest.raises(InputError, match="does not fit the model's 200"):
        SignalPreprocessor(SPEC[1:], [1, 1, 200])


@pytest.mark.parametrize("spec, match", [
    ([{"op": "resample", "fs": 120}], "exactly one window"),
    ([{"op": "zscore"}, {"op": "window", "before_s": 1, "after_s": 1}], "wrong side of window"),
    ([{"op": "bandpass", "low_hz": 40, "high_hz": 1}, {"op": "window", "before_s": 1, "after_s": 1}], "not below"),
    ([{"op": "resize", "size": [1, 1]}], "unknown op"),
    ([{"op": "window", "before_s": 1, "after_s": 1, "centre": 2}], "unknown parameter"),
])
def test_signal_specs_are_checked(spec, match):
    with pytest.raises(InputError, match=match):
        validate_signal_spec(spec)


def test_shipped_signal_sets_state_rate_and_units():
    for path in (calibration_set("classification", "signal"), ecg_beats()):
        s = SignalSet.open(path)
        name, beat = next(iter(s))
        assert s.fs == 120 and beat.samples.shape == (180, 1) and beat.leads == ("MLII",)
        assert 0.2 < np.ptp(beat.samples) < 10  # millivolts
    assert ecg_record().is_file()


@pytest.mark.parametrize("after", [[], [{"op": "detrend"}], [{"op": "detrend"}, {"op": "zscore"}],
                                   [{"op": "zscore"}, {"op": "scale", "factor": 5.0}]])
def test_a_single_beat_gives_the_bits_its_cut_window_gives(after):
    """predict's pre-cut beat path takes the whole signal as its one window (no indexing), and writes into the
    engine's bound input: the same float32 bits as cut() at the window's centre, on 2,000 real two-lead beats."""
    spec = [{"op": "resample", "fs": 120}, {"op": "window", "before_s": 0.75, "after_s": 0.75}] + after
    pre = SignalPreprocessor(spec, [1, 2, 180])
    with np.load(BEATS) as data:
        beats = (data["x"][:4000].astype(np.float64) / 200.0).reshape(2000, 180, 2)
    out = np.full((1, 2, 180), np.nan, np.float32)
    for beat in beats:
        sig = Signal(beat, 120.0, ("a", "b"))
        want, ok = pre.cut(pre.record(sig), np.array([90]))
        assert ok.all()
        got = pre(sig).tensor
        assert got.dtype == np.float32 and np.array_equal(got, want)
        assert pre(sig, out=out).tensor is out and np.array_equal(out, want)


def test_detrend_is_bit_for_bit_the_formula_it_replaced_on_real_beats():
    """The hot-path detrend (cached centred index, the mean without numpy's wrapper) gives the very bits of the
    closed form it stands for, on 20,000 real MIT-BIH beats."""
    from edgemed.signal_preprocess import detrend

    with np.load(BEATS) as data:
        x = (data["x"][:20000].astype(np.float64) / 200.0).reshape(10000, 2, 180)
    t = np.arange(180, dtype=np.float64)
    t -= t.mean()
    want = x - x.mean(axis=-1, keepdims=True) - ((x @ t) / (t @ t))[..., None] * t
    assert np.array_equal(detrend(x), want)
    assert np.array_equal(detrend(x[:1, :1]), want[:1, :1])


def test_selecting_the_only_lead_keeps_the_signal():
    sig = Signal(np.sin(np.arange(180) / 5.0)[:, None], 120.0, ("MLII",), "beat")
    assert apply_record_ops(sig, SPEC) is sig
    two = Signal(np.stack([np.sin(np.arange(180) / 5.0), np.cos(np.arange(180) / 5.0)], axis=1), 120.0, ("V1", "MLII"))
    picked = apply_record_ops(two, SPEC)
    assert picked.leads == ("MLII",) and np.array_equal(picked.samples[:, 0], two.samples[:, 1])


def test_a_plain_array_beat_gives_the_bits_and_errors_of_the_general_path():
    """An array beat at the model's rate takes a planned path (its description checked once per dtype, shape and
    description; the samples checked every beat): the same float32 bits as the same beat given as a Signal (the
    general path), on 1,000 real MIT-BIH beats as counts with their gain, in mV, in uV, float32 and int16; and the
    same one-line errors for a NaN, a flat lead, an overflow and a description that changes (fs=True)."""
    spec = [{"op": "select_leads", "leads": ["MLII"]}, {"op": "resample", "fs": 120},
            {"op": "window", "before_s": 0.75, "after_s": 0.75}, {"op": "detrend"}]
    pre = SignalPreprocessor(spec, [1, 1, 180])
    with np.load(BEATS) as data:
        counts = data["x"][:2000:2].astype(np.int16)  # (1000, 180): the MLII lead, MIT-BIH's 200 counts per mV
    forms = [(lambda c: c, {"units": "mV", "adc_gain": 200}), (lambda c: c / 200.0, {"units": "mV"}),
             (lambda c: (c / 200.0).astype(np.float32), {"units": "mV"}), (lambda c: c * 5.0, {"units": "uV"})]
    for make, units in forms:
        for beat in counts:
            x = make(beat)
            general = pre(as_signal(x, fs=120, leads=("MLII",), **units)).tensor
            plain = pre(x, fs=120, leads=("MLII",), **units).tensor
            assert plain.dtype == np.float32 and np.array_equal(plain, general)

    def errors(x, **describe):
        got = []
        for plain in (True, False):
            try:
                pre(x, **describe) if plain else pre(as_signal(x, **describe))
            except InputError as exc:
                got.append(str(exc))
        return got

    beat = counts[0] / 200.0
    nan = beat.copy()
    nan[40] = np.nan
    for bad in (nan, np.full(180, 0.3), beat * 1e300):
        pre(beat, fs=120, units="mV", leads=("MLII",))  # the plan exists
        first, again = errors(bad, fs=120, units="mV", leads=("MLII",))
        assert first == again and "\n" not in first
    with pytest.raises(InputError, match="not a number"):
        pre(beat, fs=True, units="mV", leads=("MLII",))


@needs_wfdb
@pytest.mark.parametrize("fs", [120, 250, 500])
def test_the_cached_resampling_filter_gives_scipys_own_output(fs):
    """resample designs its FIR once per ratio and hands it to resample_poly: the very output of resample_poly's own
    default design, bit for bit, on a real two-lead MIT-BIH record (360 Hz to 120, 250 and 500 Hz)."""
    from scipy import signal as ss

    from edgemed.signal_preprocess import resample

    sig = read_signal(ecg_record())
    sig = Signal(sig.samples[:36000], sig.fs, sig.leads, sig.source)
    from fractions import Fraction

    r = Fraction(fs / sig.fs).limit_denominator(1000)
    assert np.array_equal(resample(sig, fs).samples, ss.resample_poly(sig.samples, r.numerator, r.denominator, axis=0))
