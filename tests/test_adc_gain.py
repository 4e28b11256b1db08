"""Raw digitiser counts with their gain (``adc_gain=``, counts per unit) at every signal entry point, by the one rule
signal-set files follow (:func:`edgemed.io.signals.stored_to_mv`), on a real MIT-BIH record's own integer samples."""

from __future__ import annotations

import numpy as np
import pytest

import edgemed
from edgemed.errors import InputError
from edgemed.io.signals import read_signal
from edgemed.signal_sets import SignalSet

from .conftest import SHARED

wfdb = pytest.importorskip("wfdb", reason="wfdb not installed (pip install 'edgemed[signal]')")

RECORD = SHARED / "mitbih" / "records" / "213"
HALF = 270  # 0.75 s at 360 Hz: half the shipped beat models' window


@pytest.fixture(scope="module")
def ecg(tmp_path_factory):
    from .conftest import convert_ecg_fp32

    with edgemed.load(convert_ecg_fp32(tmp_path_factory.mktemp("gain") / "ecg_cnn")) as pipe:
        yield pipe


@pytest.fixture(scope="module")
def record():
    """The first minute of record 213 as stored (format-212 counts, zero level removed, as the signal-set files
    store beats) and as PhysioNet's reader gives it in mV, with its annotated beats."""
    raw = wfdb.rdrecord(str(RECORD), sampto=60 * 360, physical=False)
    assert list(raw.adc_gain) == [200.0, 200.0] and raw.d_signal.dtype.kind == "i"
    counts = raw.d_signal - np.array(raw.baseline)  # integers still
    mv = wfdb.rdrecord(str(RECORD), sampto=60 * 360).p_signal
    ann = wfdb.rdann(str(RECORD), "atr", sampto=60 * 360)
    peaks = np.array([s for s, sym in zip(ann.sample, ann.symbol) if sym in "NVFSA"
                      and HALF <= s <= len(mv) - HALF])
    return counts, mv, peaks, tuple(raw.sig_name)


def test_raw_counts_with_their_gain_give_the_millivolt_answer(ecg, record):
    counts, mv, peaks, leads = record
    assert counts.dtype.kind == "i" and len(peaks) >= 40
    labels = []
    for p in peaks[:40]:
        cut = slice(p - HALF, p + HALF)
        a = ecg.predict(counts[cut], fs=360, units="mV", adc_gain=200, leads=leads)
        b = ecg.predict(mv[cut], fs=360, units="mV", leads=leads)
        assert a.label == b.label
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-6)
        labels.append(a.label)
    assert {"N", "V"} <= set(labels)  # record 213 has both in its first minute: not one class answered throughout


def test_predict_converts_counts_exactly_as_a_signal_set_file_does(ecg, record, tmp_path):
    """One rule: a beat of raw counts given to predict and the same beat read from a signal-set file give the same
    probabilities to the bit (integers, and the float counts the set stores for a float source alike)."""
    counts, _, peaks, leads = record
    beats = np.stack([counts[p - HALF:p + HALF].T for p in peaks[:6]])  # (N, L, T)
    for stored in (beats.astype(np.int16), beats.astype(np.float32)):
        np.savez(tmp_path / "set.npz", signals=stored, fs=360.0, units="uV", adc_gain=0.2, leads=np.array(leads))
        for (_, sig), beat in zip(SignalSet.open(tmp_path / "set.npz"), stored):
            a = ecg.predict(beat.T, fs=360, units="uV", adc_gain=0.2, leads=leads)
            np.testing.assert_array_equal(a.probabilities, ecg.predict(sig).probabilities)


def test_an_npy_of_counts_takes_its_gain(ecg, record, tmp_path):
    """An .npy states neither rate nor units nor gain: the caller does, as for an array."""
    counts, mv, _, leads = record
    np.save(tmp_path / "record.npy", counts)
    ours = ecg.beats(tmp_path / "record.npy", fs=360, units="mV", adc_gain=200, leads=leads)
    ref = ecg.beats(mv, fs=360, units="mV", leads=leads)
    assert len(ref.beats) > 60 and [(b.sample, b.label) for b in ours.beats] == [(b.sample, b.label) for b in ref.beats]


def test_whole_records_and_streams_of_counts_give_the_millivolt_beats(ecg, record):
    counts, mv, _, leads = record
    ours = ecg.beats(counts, fs=360, units="mV", adc_gain=200, leads=leads)
    ref = ecg.beats(mv, fs=360, units="mV", leads=leads)
    assert len(ref.beats) > 60 and not ours.gaps
    assert [(b.sample, b.label) for b in ours.beats] == [(b.sample, b.label) for b in ref.beats]
    reader = ecg.beat_reader(360, "mV", leads, adc_gain=200)
    got = []
    for at in range(0, len(counts), 1000):
        got += reader.feed(counts[at:at + 1000])
    got += reader.flush()
    assert [(b.sample, b.label) for b in got] == [(b.sample, b.label) for b in ref.beats]
    np.testing.assert_allclose(np.stack([b.probabilities for b in got]), np.stack([b.probabilities for b in ref.beats]),
                               atol=1e-6)


@pytest.mark.parametrize("gain, match", [
    (0, "adc_gain 0 is not positive and finite"),
    (-200, "adc_gain -200 is not positive and finite"),
    (float("nan"), "adc_gain nan is not positive and finite"),
    (float("inf"), "adc_gain inf is not positive and finite"),
    ("200", "adc_gain='200' is not a number"),
    (True, "adc_gain=True is not a number"),
    ([200], r"adc_gain=\[200\] is not a number"),
    (np.array([200.0]), "is not a number"),
])
def test_a_wrong_gain_is_a_one_line_error_at_every_entry_point(ecg, record, gain, match):
    counts, _, peaks, leads = record
    beat = counts[peaks[0] - HALF:peaks[0] + HALF]
    calls = [lambda: ecg.predict(beat, fs=360, units="mV", adc_gain=gain, leads=leads),
             lambda: ecg.beats(counts, fs=360, units="mV", adc_gain=gain, leads=leads),
             lambda: ecg.beat_reader(360, "mV", leads, adc_gain=gain)]  # refused before any sample arrives
    for call in calls:
        with pytest.raises(InputError, match=match) as info:
            call()
        assert len(str(info.value).splitlines()) == 1 and "adc_gain=200" in str(info.value)  # the fix, an example


def test_a_gain_for_samples_already_in_millivolts_is_refused(ecg, record):
    """A Signal, a WFDB record, a CSV or a DICOM waveform is read in physical units: a gain on it would scale the beat
    a second time, a silently wrong answer."""
    counts, mv, peaks, leads = record
    sig = read_signal(RECORD.with_suffix(".hea")).slice(int(peaks[0]) - HALF, int(peaks[0]) + HALF)
    with pytest.raises(InputError, match="already in mV.*drop adc_gain"):
        ecg.predict(sig, adc_gain=200)
    with pytest.raises(InputError, match="states its own units and gain.*drop adc_gain"):
        ecg.predict(RECORD.with_suffix(".hea"), adc_gain=200)
    with pytest.raises(InputError, match="states its own units and gain"):
        ecg.beats(RECORD.with_suffix(".hea"), adc_gain=200)
