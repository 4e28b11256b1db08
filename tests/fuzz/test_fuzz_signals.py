"""Signal entry points on hostile input: a beat bundle's ``predict`` with arrays and their ``fs``/``units``/
``leads``, signal files (NPY, CSV, WFDB, DICOM waveforms: random, damaged, empty), and whole signals
through ``beats``."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgemed.samples import ecg_record

from . import strategies as fs
from .harness import fuzz_settings, outcome

pytestmark = pytest.mark.fuzz

RATES = [120, 250, 500, 1000, 128, 1, 0.5, 0, -360, 1e9, float("nan"), float("inf"), 359.9, "360", None,
         [360], np.float32(360), np.int64(360), True]
UNITS = ["uV", "V", "µV", "nV", "mv", " MV ", "microvolt", "furlong", "", None, 5, b"mV", ["mV"]]
LEADS = [None, ("MLII", "V1"), ("V1",), ("MLII", "MLII"), (1,), (), "MLII", ["MLII"], (None,)]


@st.composite
def beats(draw):
    """One beat as ``predict`` takes it: half the time right in every respect but one or two (rate, length,
    leads, units, dtype, layout, values), else anything."""
    rate, length, leads, units = 360, 540, ("MLII",), "mV"
    shape_of = draw(st.sampled_from(["(T,)", "(T, 1)", "(1, T)", "(T, 2)", "any"]))
    for what in draw(st.sets(st.sampled_from(["rate", "length", "leads", "units"]), max_size=2)):
        if what == "rate":
            rate = draw(st.sampled_from(RATES))
            try:
                length = int(round(1.5 * float(rate))) if 0 < float(rate) < 1e5 else length
            except (TypeError, ValueError, OverflowError):
                pass
        elif what == "length":
            length = draw(st.sampled_from([0, 1, 539, 541, 180, 4097, 100_000]))
        elif what == "leads":
            leads = draw(st.sampled_from(LEADS))
        else:
            units = draw(st.sampled_from(UNITS))
    shape = {"(T,)": (length,), "(T, 1)": (length, 1), "(1, T)": (1, length), "(T, 2)": (length, 2)}.get(shape_of)
    if shape_of == "(T, 2)" and leads == ("MLII",):
        leads = ("MLII", "V1")
    shape = st.just(shape) if shape is not None else fs.shapes(max_rank=3)
    x = draw(fs.arrays(shape, fs.NUMERIC * 3 + fs.ODD))
    describe = {"fs": rate, "units": units}
    if leads is not None:
        describe["leads"] = leads
    return x, describe


@fuzz_settings(320)
@given(data=st.data())
def test_beat_arrays_with_rate_units_and_leads(ecg_pipe, data):
    for _ in range(data.draw(st.integers(1, 6))):
        x, describe = data.draw(beats())
        extra = data.draw(st.sampled_from([{}, {}, {}, {"adc_gain": 200}, {"foo": 1}]))
        for key in data.draw(st.sets(st.sampled_from(["fs", "units"]), max_size=1)):
            describe.pop(key)
        outcome("predict signal (arrays)", lambda x=x, d=describe, e=extra: ecg_pipe.predict(x, **d, **e),
                lambda r: r.label in ecg_pipe.labels)


@fuzz_settings(80)
@given(data=st.data())
def test_not_signals(ecg_pipe, tmp_path_factory, data):
    for thing in data.draw(st.lists(fs.not_arrays(tmp_path_factory.getbasetemp()), min_size=1, max_size=6)):
        describe = data.draw(st.sampled_from([{}, {"fs": 360, "units": "mV"}, {"fs": 360, "units": "mV",
                                                                                "leads": ("MLII",)}]))
        outcome("predict signal (not a signal)", lambda t=thing, d=describe: ecg_pipe.predict(t, **d))


# --- files ------------------------------------------------------------------------------------------------


@st.composite
def csv_text(draw) -> bytes:
    """A CSV signal: a header (time and LEAD [unit] columns, or not), rows of numbers (or not), then damage."""
    rate = draw(st.sampled_from([360, 120, 1000, 1]))
    rows = draw(st.sampled_from([0, 1, 2, 3, 540, 541]))
    leads = draw(st.sampled_from([["MLII [mV]"], ["MLII [mV]", "V1 [uV]"], ["MLII"], ["MLII [furlong]"], [],
                                  ["MLII [mV", "[mV]"]]))
    first = draw(st.sampled_from(["time", "time", "time_s", "Time", "t", ""]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    body = [",".join([first] + leads)]
    for i in range(rows):
        values = [f"{i / rate:.6f}"] + [f"{v:.4f}" for v in rng.standard_normal(len(leads))]
        body.append(",".join(values))
    text = "\n".join(body).encode()
    if draw(st.booleans()):
        text = fs.mutate(text, draw, max_ops=3)
    return text


@pytest.fixture(scope="module")
def signal_seeds() -> dict[str, bytes]:
    from pydicom.data import get_testdata_file

    record = Path(ecg_record())
    return fs.Blobs({"hea": record.with_suffix(".hea").read_bytes(),
                     "dat": record.with_suffix(".dat").read_bytes()[:36000],
                     "dcm": Path(get_testdata_file("waveform_ecg.dcm")).read_bytes()})


@fuzz_settings(350)
@given(data=st.data())
def test_signal_files(ecg_pipe, signal_seeds, tmp_path_factory, data):
    folder = tmp_path_factory.getbasetemp() / "fuzz-signal"
    folder.mkdir(exist_ok=True)
    kind = data.draw(st.sampled_from(["npy", "npy", "csv", "csv", "wfdb", "dcm", "dcm", "random"]))
    if kind == "npy":
        path = folder / "beat.npy"
        path.write_bytes(data.draw(fs.npy_bytes()))
    elif kind == "csv":
        path = folder / "beat.csv"
        path.write_bytes(data.draw(csv_text()))
    elif kind == "wfdb":
        path = folder / "rec.hea"
        header = signal_seeds["hea"].replace(b"650000", b"12000")  # the first 33 s of the shipped excerpt
        path.write_bytes(fs.mutate(header, data.draw, max_ops=3) if data.draw(st.booleans()) else header)
        dat = signal_seeds["dat"]
        (folder / "rec.dat").write_bytes(fs.mutate(dat, data.draw, max_ops=3) if data.draw(st.booleans()) else dat)
    elif kind == "dcm":
        path = folder / "ecg.dcm"
        seed = signal_seeds["dcm"]
        path.write_bytes(fs.mutate(seed, data.draw, length_fields=_waveform_fields(seed)))
    else:
        path = folder / f"beat{data.draw(st.sampled_from(['.npy', '.csv', '.hea', '.dat', '.dcm', '.txt', '']))}"
        path.write_bytes(data.draw(st.binary(max_size=512)))
    describe = data.draw(st.sampled_from([{}, {"fs": 360, "units": "mV"}, {"fs": 360, "units": "mV",
                                                                            "leads": ("MLII",)}]))
    outcome("predict signal (files)", lambda: ecg_pipe.predict(path, **describe))
    from edgemed.io.signals import read_signal

    outcome("read_signal (files)", lambda: read_signal(path, describe.get("fs"), describe.get("units")))


_FIELDS: dict[int, list] = {}


def _waveform_fields(seed: bytes) -> list:
    if id(seed) not in _FIELDS:
        _FIELDS[id(seed)] = fs.dicom_length_fields(seed)
    return _FIELDS[id(seed)]


@fuzz_settings(60, deadline_s=20)
@given(data=st.data())
def test_whole_signals_through_beats(ecg_pipe, data):
    """``pipe.beats``: a few seconds of signal, sometimes real ECG, with dropouts, flat stretches and huge values."""
    rate = data.draw(st.sampled_from([360, 360, 250, 1000, 7, 0, -1, float("nan")]))
    seconds = data.draw(st.sampled_from([0, 1, 3, 12, 25]))
    n = int(seconds * 360)
    with np.load(io.BytesIO(_beats_npz())) as d:
        real = np.tile(d["x"], 1 + n // len(d["x"]))[:n]
    x = data.draw(st.sampled_from(["real", "noise", "zeros"]))
    x = real if x == "real" else (np.random.default_rng(n).standard_normal(n) if x == "noise" else np.zeros(n))
    if n and data.draw(st.booleans()):
        a = data.draw(st.integers(0, n - 1))
        x = x.copy()
        x[a:a + data.draw(st.integers(1, n))] = data.draw(st.sampled_from(fs.SPECIALS))
    leads = data.draw(st.sampled_from([("MLII",), ("V1",), None]))
    outcome("beats (whole signals)", lambda: ecg_pipe.beats(x, fs=rate, units="mV", leads=leads))


_NPZ: list[bytes] = []


def _beats_npz() -> bytes:
    """25 s of the shipped MIT-BIH excerpt, lead MLII at 360 Hz, in mV."""
    if not _NPZ:
        from edgemed.io.signals import read_signal

        sig = read_signal(ecg_record())
        buf = io.BytesIO()
        np.savez(buf, x=sig.samples[:9000, sig.lead("MLII")])
        _NPZ.append(buf.getvalue())
    return _NPZ[0]
