"""ECG beat classifiers end to end: conversion parity (1-D CNN, LSTM, GRU, bidirectional), INT8 per backend
through the per-class gate, whole-record and chunked beat streams on a real MIT-BIH record."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import edgemed
from edgemed.bundle import Bundle
from edgemed.converters.convert import convert
from edgemed.errors import InputError, OptionError
from edgemed.gate.drift import compare
from edgemed.gate.verdict import Budget, default_budget, judge
from edgemed.samples import assets_dir, calibration_set, ecg_beats, ecg_record
from edgemed.signal_sets import SignalSet
from edgemed.zoo import build

pytest.importorskip("wfdb", reason="wfdb not installed (pip install 'edgemed[signal]')")
torch = pytest.importorskip("torch")

SPEC = [{"op": "select_leads", "leads": ["MLII"]}, {"op": "resample", "fs": 120},
        {"op": "window", "before_s": 0.75, "after_s": 0.75}, {"op": "detrend"}]


SHARED_RECORDS = Path(__file__).resolve().parents[2] / "shared" / "data" / "mitbih" / "records"


def _card(name: str) -> dict:
    return json.loads((assets_dir() / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def lstm_bundle(tmp_path_factory):
    card = _card("ecg_lstm")
    out = tmp_path_factory.mktemp("ecg") / "lstm"
    return convert(assets_dir() / "ecg_lstm.pt", out, task="classification", input_kind="signal",
                   input_shape=tuple(card["input_shape"]), arch=card["arch"], arch_args=card["arch_args"],
                   labels=tuple(card["labels"]), preprocess=tuple(card["preprocess"]),
                   calib=calibration_set("classification", "signal"), eval=ecg_beats(),
                   targets=("onnx", "openvino"), precisions=("fp32", "int8"))


def test_signal_bundle_records_its_kind_layout_and_spec(lstm_bundle):
    m = Bundle.open(lstm_bundle).manifest
    assert m.model.input_kind == "signal" and m.input.layout == "NCL" and m.input.shape[1:] == [1, 180]
    assert [p["op"] for p in m.preprocess] == ["select_leads", "resample", "window", "detrend"]
    fp32 = next(a for a in m.artifacts if a.precision == "fp32" and a.backend == "onnxruntime")
    assert fp32.drift.verdict == "passed" and fp32.drift.value("max_abs_diff") <= 1e-4


def test_int8_of_the_lstm_is_judged_per_class_on_every_backend(lstm_bundle):
    b = Bundle.open(lstm_bundle)
    report = b.report()
    int8 = [a for a in b.artifacts if a.precision == "int8"]
    dropped = [d["artifact"] for d in report.get("dropped", [])]
    assert len(int8) + len([d for d in dropped if "int8" in d]) == 2  # one per backend, kept or said why not
    for art in int8:
        assert art.drift.budget == str(default_budget("classification"))
        est = art.drift.metrics["class_agreement"]
        assert est.cases >= 1 and "worst class" in est.method
        assert {f"class_agreement[{c}]" for c in "NV"} <= set(art.drift.figures)
    ort = next((a for a in int8 if a.backend == "onnxruntime"), None)
    if ort is not None:  # what ONNX Runtime cannot do statically is said, not hidden
        assert "LSTM" in ort.build.settings.get("recurrent", "")


def test_per_class_gate_fails_a_model_that_flips_the_rare_class():
    """High overall agreement bought by keeping N while flipping S beats must fail."""
    rng = np.random.default_rng(0)
    n_beats, s_beats = 4000, 320
    ref = np.zeros((n_beats + s_beats, 4), np.float32)
    ref[:n_beats, 0], ref[n_beats:, 1] = 5, 5
    cand = ref.copy()
    flip = n_beats + rng.choice(s_beats, 16, replace=False)  # 5% of S beats become N: 0.4% of all beats
    cand[flip, 0], cand[flip, 1] = 5, 0
    comparison = compare(ref, cand, "classification", "logits", ["N", "S", "V", "F"])
    assert comparison.values["agreement"] > 0.996
    assert judge(comparison, Budget.parse("agreement>=0.99", "classification")).verdict == "passed"
    record = judge(comparison, Budget.parse("agreement>=0.99,class_agreement>=0.99", "classification"))
    assert record.verdict == "failed" and "worst class S" in record.metrics["class_agreement"].method
    assert comparison.figures["class_agreement[S]"] == pytest.approx(0.95)


@pytest.mark.parametrize("cell, bidirectional", [("lstm", False), ("gru", True)])
def test_recurrent_exports_reproduce_pytorch(cell, bidirectional, tmp_path):
    torch.manual_seed(0)
    model = build("ecg_rnn", num_classes=4, cell=cell, bidirectional=bidirectional).eval()
    weights = tmp_path / "w.pt"
    torch.save(model.state_dict(), weights)
    out = convert(weights, tmp_path / "b", task="classification", input_kind="signal", input_shape=(1, 1, 180),
                  arch="ecg_rnn", arch_args={"num_classes": 4, "cell": cell, "bidirectional": bidirectional},
                  labels=("N", "S", "V", "F"), preprocess=tuple(SPEC),
                  calib=calibration_set("classification", "signal"), precisions=("fp32",))
    fp32 = Bundle.open(out).artifacts[0]
    assert fp32.drift.verdict == "passed" and fp32.drift.value("max_abs_diff") <= 1e-4


def test_torchscript_export_and_onnx_sources_convert_alike(tmp_path):
    torch.manual_seed(1)
    model = build("ecg_cnn", num_classes=4).eval()
    scripted = tmp_path / "m.ts"
    torch.jit.trace(model, torch.zeros(1, 1, 180)).save(str(scripted))
    exported = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(1, 1, 180),)), str(exported))
    onnx_path = tmp_path / "m.onnx"
    torch.onnx.export(model, (torch.zeros(1, 1, 180),), str(onnx_path), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "n"}})
    outputs = []
    for src in (scripted, exported, onnx_path):
        out = convert(src, tmp_path / src.suffix[1:], task="classification", input_kind="signal",
                      input_shape=(1, 1, 180), labels=("N", "S", "V", "F"), preprocess=tuple(SPEC),
                      calib=calibration_set("classification", "signal"))
        assert Bundle.open(out).artifacts[0].drift.verdict == "passed"
        with edgemed.load(out) as pipe:
            beat = next(iter(SignalSet.open(ecg_beats())))[1]
            outputs.append(pipe.predict(beat).probabilities)
    for other in outputs[1:]:
        np.testing.assert_allclose(outputs[0], other, atol=1e-5)


def test_signal_options_are_checked_before_work(tmp_path):
    with pytest.raises(OptionError, match="needs its preprocessing spec"):
        convert(tmp_path / "m.pt", tmp_path / "b", task="classification", input_kind="signal", input_shape=(1, 1, 180))
    with pytest.raises(OptionError, match="not three integers"):
        convert(tmp_path / "m.pt", tmp_path / "b", task="classification", input_kind="signal",
                input_shape=(1, 1, 1, 180), preprocess=tuple(SPEC))
    with pytest.raises(OptionError, match="supports classification"):
        convert(tmp_path / "m.pt", tmp_path / "b", task="segmentation", input_kind="signal",
                input_shape=(1, 1, 180), preprocess=tuple(SPEC))


def test_image_calibration_for_a_signal_model_is_refused(tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "w.pt"
    torch.save(build("ecg_cnn", num_classes=4).state_dict(), weights)
    with pytest.raises(OptionError, match="holds images, but the model's input kind is signal"):
        convert(weights, tmp_path / "b", task="classification", input_kind="signal", input_shape=(1, 1, 180),
                arch="ecg_cnn", arch_args={"num_classes": 4}, labels=("N", "S", "V", "F"), preprocess=tuple(SPEC),
                calib=calibration_set("classification"))
    assert not (tmp_path / "b").exists()


def test_predict_takes_a_beat_with_its_rate_and_refuses_one_without(lstm_bundle):
    with edgemed.load(lstm_bundle) as pipe:
        name, beat = next(iter(SignalSet.open(ecg_beats())))
        r = pipe.predict(beat)
        assert r.label in pipe.labels and r.probabilities.shape == (4,)
        same = pipe.predict(beat.samples[:, 0], fs=120, units="mV", leads=("MLII",))
        np.testing.assert_array_equal(r.probabilities, same.probabilities)
        with pytest.raises(InputError, match="no sampling rate or units"):
            pipe.predict(beat.samples[:, 0])
        with pytest.raises(InputError, match="name the array's leads"):  # the spec selects MLII by name
            pipe.predict(beat.samples[:, 0], fs=120, units="mV")


def test_whole_record_beats_match_the_annotations(lstm_bundle):
    import wfdb

    with edgemed.load(lstm_bundle) as pipe:
        record = pipe.beats(ecg_record())
    ann = wfdb.rdann(str(ecg_record().with_suffix("")), "atr")
    truth = np.array([s for s, sym in zip(ann.sample, ann.symbol) if sym in "NLRejAaJSVEFfQ/"])
    found = np.array([b.sample for b in record.beats])
    near = np.abs(truth[:, None] - found[None, :]).min(axis=1) <= 0.15 * 360
    assert near.mean() > 0.95  # the QRS detector finds the annotated beats
    assert record.duration_s == pytest.approx(600) and record.realtime_factor > 10
    assert not record.gaps


def test_chunked_stream_gives_exactly_the_whole_record_answer(lstm_bundle):
    from edgemed.io.signals import read_signal

    sig = read_signal(ecg_record())
    with edgemed.load(lstm_bundle) as pipe:
        whole = pipe.beats(sig).beats
        reader = pipe.beat_reader(sig.fs, "mV", sig.leads)
        rng = np.random.default_rng(3)
        got, at = [], 0
        while at < len(sig.samples):
            n = int(rng.integers(1, 5000))
            got += reader.feed(sig.samples[at:at + n])
            at += n
        got += reader.flush()
    assert [(b.sample, b.label) for b in got] == [(b.sample, b.label) for b in whole]
    np.testing.assert_array_equal(np.stack([b.probabilities for b in got]), np.stack([b.probabilities for b in whole]))


@pytest.fixture(scope="module")
def cnn_ecg_bundle(tmp_path_factory):
    """The shipped 1-D CNN beat classifier (a dynamic batch), FP32 on both CPU backends."""
    from .conftest import convert_ecg_fp32

    return convert_ecg_fp32(tmp_path_factory.mktemp("ecg_cnn") / "cnn", targets=("onnx", "openvino"))


def _minutes(sig, minutes: float):
    return type(sig)(sig.samples[:int(minutes * 60 * sig.fs)], sig.fs, sig.leads, sig.source)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_batched_record_and_a_beat_by_beat_stream_agree_to_the_bit(backend, cnn_ecg_bundle):
    """A record given whole is classified in batches of up to MAX_BATCH windows across blocks, a stream fed in
    small chunks block by block: the shipped 1-D CNN (a dynamic batch) gives every beat the same probabilities."""
    from edgemed.io.signals import read_signal

    sig = _minutes(read_signal(ecg_record()), 3)  # 18 blocks
    with edgemed.load(cnn_ecg_bundle, backend=backend) as pipe:
        assert pipe.dynamic_batch
        whole = pipe.beats(sig).beats
        reader = pipe.beat_reader(sig.fs, "mV", sig.leads)
        got = []
        for at in range(0, len(sig.samples), 1000):  # under 3 s a chunk: at most one block completes per feed
            got += reader.feed(sig.samples[at:at + 1000])
        got += reader.flush()
    assert len(whole) > 200
    assert [(b.sample, b.label) for b in got] == [(b.sample, b.label) for b in whole]
    np.testing.assert_array_equal(np.stack([b.probabilities for b in got]), np.stack([b.probabilities for b in whole]))


def _same_beats(clean, record, away_from: tuple[float, float]) -> list:
    """The clean record's beats outside a stretch that the other record lacks or answers otherwise."""
    got = {b.sample: b for b in record.beats}
    return [(b.time_s, b.label) for b in clean.beats if not away_from[0] <= b.time_s < away_from[1]
            and (b.sample not in got or not np.array_equal(got[b.sample].probabilities, b.probabilities))]


def test_a_stretch_no_ecg_could_have_is_a_gap_and_nothing_near_it_is_answered(cnn_ecg_bundle):
    """Ten seconds scaled by 1e37 (finite, not flat): every block whose span (margins included) reaches them is a gap
    naming the units and gain, so no beat is answered on what the resampler spreads from them (before, the beats at
    70.3 and 70.8 s came back with answers off by up to 0.9 in probability); the other blocks keep their beats to the
    bit, whole or streamed, and no warning blames the QRS detector."""
    from edgemed.io.signals import read_signal

    sig = _minutes(read_signal(ecg_record()), 2)
    with edgemed.load(cnn_ecg_bundle) as pipe:
        clean = pipe.beats(sig)
        x = sig.samples.copy()
        x[60 * 360:70 * 360] *= 1e37  # the block of 60-70 s, both leads
        positions = [b.sample for b in clean.beats]
        record = pipe.beats(type(sig)(x, sig.fs, sig.leads, sig.source), positions=positions)
        reader = pipe.beat_reader(sig.fs, "mV", sig.leads, positions=positions)
        streamed = [b for at in range(0, len(x), 1000) for b in reader.feed(x[at:at + 1000])] + reader.flush()
    assert [(g.start_s, g.end_s) for g in record.gaps] == [(50.0, 60.0), (60.0, 70.0), (70.0, 80.0)]
    assert all("beyond any ECG in mV" in g.reason for g in record.gaps)
    assert [(g.start_s, g.end_s, g.reason) for g in record.gaps] == [(g.start_s, g.end_s, g.reason)
                                                                      for g in reader.gaps]
    assert [(b.sample, b.label) for b in streamed] == [(b.sample, b.label) for b in record.beats]
    assert not any(50 <= b.time_s < 80 for b in record.beats) and not record.warnings
    assert len(record.beats) > 100 and not _same_beats(clean, record, (50, 80))


def test_a_record_in_microvolts_called_mv_gives_gaps_that_say_so_not_beats(cnn_ecg_bundle):
    """A whole record whose samples are µV said to be mV (1,000x): every block a gap naming the units, no beat, and
    no warning that the QRS detector found nothing (it was never asked)."""
    from edgemed.io.signals import read_signal

    sig = _minutes(read_signal(ecg_record()), 1)
    with edgemed.load(cnn_ecg_bundle) as pipe:
        record = pipe.beats(sig.samples * 1000, fs=sig.fs, units="mV", leads=sig.leads)
        right = pipe.beats(sig.samples * 1000, fs=sig.fs, units="uV", leads=sig.leads)
    assert not record.beats and not record.warnings
    assert record.gaps and record.gaps[0].start_s == 0 and record.gaps[-1].end_s == pytest.approx(60)
    assert all("beyond any ECG in mV, so a wrong unit or gain" in g.reason for g in record.gaps)
    assert len(right.beats) > 50 and not right.gaps


def test_a_batch_whose_outputs_hold_nan_costs_only_the_stretch_at_fault(cnn_ecg_bundle, monkeypatch):
    """Beats of many blocks ride in one engine call; when its outputs hold NaN, each stretch is classified on its own
    and only the one whose outputs hold NaN becomes a gap (an engine made to fail there: the third stretch)."""
    from edgemed.io.signals import read_signal

    sig = _minutes(read_signal(ecg_record()), 2)
    with edgemed.load(cnn_ecg_bundle) as pipe:
        clean = pipe.beats(sig)
        real, calls = pipe.engine.infer, []

        def failing(feed, **kw):
            out = real(feed, **kw)
            calls.append(len(next(iter(feed.values()))))
            if len(calls) in (1, 4):  # the whole batch, then the third stretch's own call
                out = {k: v.copy() for k, v in out.items()}
                next(iter(out.values()))[0] = np.nan
            return out

        monkeypatch.setattr(pipe.engine, "infer", failing)
        record = pipe.beats(sig, positions=[b.sample for b in clean.beats])
    # the blocks complete when the record is fed: one batch, then one call per block's stretch; flush's last block
    assert calls[0] == sum(calls[1:-1]) and calls[0] + calls[-1] == len(clean.beats)
    assert [(g.start_s, g.end_s) for g in record.gaps] == [(20.0, 30.0)]
    assert "NaN or Inf" in record.gaps[0].reason
    assert not any(20 <= b.time_s < 30 for b in record.beats) and not _same_beats(clean, record, (20, 30))


def test_dropouts_and_short_records_are_reported_not_guessed(lstm_bundle):
    """Issue 20.2: a 5 s NaN run costs the beats it touches, not the blocks around it; the gap is where the NaN is,
    in seconds from the record's start; chunking still changes nothing."""
    from edgemed.io.signals import read_signal

    sig = read_signal(ecg_record())
    x = sig.samples[: 60 * 360].copy()
    with edgemed.load(lstm_bundle) as pipe:
        clean = pipe.beats(x, fs=360, units="mV", leads=("MLII", "V1"))
        x[20 * 360: 25 * 360, 0] = np.nan  # a lead-off stretch on the lead the model reads
        with pytest.raises(InputError, match="name the array's leads"):  # a set-up error is never a "gap"
            pipe.beats(x, fs=360, units="mV")
        record = pipe.beats(x, fs=360, units="mV", leads=("MLII", "V1"))
        reader = pipe.beat_reader(360, "mV", ("MLII", "V1"))
        chunked = reader.feed(x[:7777]) + reader.feed(x[7777:13001]) + reader.feed(x[13001:]) + reader.flush()
        with pytest.raises(InputError, match="shorter than one"):
            pipe.beats(x[:360], fs=360, units="mV", leads=("MLII", "V1"))
    assert [(g.start_s, g.end_s) for g in record.gaps] == [(20.0, 25.0)]  # before: 10-30 s, "first at 12.000 s"
    assert "NaN" in record.gaps[0].reason and "MLII" in record.gaps[0].reason
    assert not any(20 <= b.time_s < 25 for b in record.beats)
    got = {b.sample: b.label for b in record.beats}
    far = [b for b in clean.beats if not 19 <= b.time_s < 26]  # every beat whose window misses the gap is kept
    assert len(far) > 90 and all(got.get(b.sample) == b.label for b in far)  # before: 70 of 107 beats were left
    assert [(b.sample, b.label) for b in chunked] == [(b.sample, b.label) for b in record.beats]
    assert [(g.start_s, g.end_s) for g in reader.gaps] == [(20.0, 25.0)]


def _csv(path, x, leads=("MLII", "V1"), fs=360, digits=3):
    rows = ["time," + ",".join(f"{n} [mV]" for n in leads)]
    rows += [f"{i / fs:.6f}," + ",".join(f"{v:.{digits}f}" for v in row) for i, row in enumerate(x)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_a_lead_the_model_does_not_read_cannot_blank_the_record(lstm_bundle, tmp_path):
    """Issue 20.1: the spec selects MLII; V1 flat, or NaN for 45 s, leaves every beat as it was."""
    import subprocess
    import sys

    from edgemed.io.signals import read_signal

    x = read_signal(ecg_record()).samples[: 60 * 360]
    flat, nan = x.copy(), x.copy()
    flat[:, 1] = 0.0
    nan[5 * 360: 50 * 360, 1] = np.nan
    with edgemed.load(lstm_bundle) as pipe:
        clean = pipe.beats(_csv(tmp_path / "clean.csv", x))
        for damaged in (_csv(tmp_path / "v1_flat.csv", flat), _csv(tmp_path / "v1_nan.csv", nan)):
            record = pipe.beats(damaged)
            assert [(b.sample, b.label) for b in record.beats] == [(b.sample, b.label) for b in clean.beats]
            assert not record.gaps and not record.warnings
    assert len(clean.beats) > 100  # before: 0 beats and 6 gaps with V1 flat
    proc = subprocess.run([sys.executable, "-m", "edgemed.cli", "predict", str(lstm_bundle),
                           str(tmp_path / "v1_flat.csv")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and f": {len(clean.beats)} beats in 60 s" in proc.stdout, proc.stdout + proc.stderr
    assert "0 gap(s)" in proc.stdout and "warning" not in proc.stderr


def test_a_flat_stretch_inside_a_block_is_a_gap(lstm_bundle):
    """Issue 20.3: ten flat seconds inside a record are listed (before: no beats there and gaps == [])."""
    from edgemed.io.signals import read_signal
    from edgemed.signal_quality import bad_runs

    x = read_signal(ecg_record()).samples[: 60 * 360].copy()
    x[30 * 360: 40 * 360, 0] = x[30 * 360, 0]  # the electrode held at its last value
    with edgemed.load(lstm_bundle) as pipe:
        record = pipe.beats(x, fs=360, units="mV", leads=("MLII", "V1"))
    assert [(g.start_s, g.end_s) for g in record.gaps] == [(30.0, 40.0)]
    assert "flat" in record.gaps[0].reason and "MLII" in record.gaps[0].reason
    assert not any(30 <= b.time_s < 40 for b in record.beats) and len(record.beats) > 80
    # real ECG is never judged flat: all four 30-minute records, both leads
    for name in ("105", "208", "213", "232"):
        sig = read_signal(SHARED_RECORDS / f"{name}.hea")
        assert bad_runs(sig.samples, sig.fs, sig.leads) == [], name


def test_a_12_lead_ecg_at_1khz_gives_its_beats_and_no_beats_is_never_silent(lstm_bundle, tmp_path):
    """Issue 20.4: XQRS at 1 kHz found no QRS in pydicom's resting ECG; detection runs at 360 Hz and the peaks come
    back onto the source's own samples. A non-flat signal without a beat carries a warning (CLI: on stderr)."""
    import subprocess
    import sys

    from pydicom.data import get_testdata_file

    from edgemed.io.signals import Signal, read_signal

    ecg = read_signal(get_testdata_file("waveform_ecg.dcm"))
    assert ecg.fs == 1000 and ecg.leads[:2] == ("I", "II")  # "I (Einthoven)" is lead I
    with edgemed.load(lstm_bundle) as pipe:
        for lead in ("I", "II", "V2"):
            x = ecg.samples[:, ecg.lead(lead)]
            record = pipe.beats(Signal(x[:, None], ecg.fs, ("MLII",)))  # the model reads MLII: lead II's kin
            times = np.array([b.time_s for b in record.beats])
            assert len(times) == 8 and not record.warnings, lead  # 10 QRS; the first and last lack a whole window
            assert np.ptp(np.diff(times)) < 0.1  # a steady ~60/min rhythm, one beat per QRS
            for b in record.beats:  # each back on the 1 kHz samples, within 2 ms of the local extremum
                near = np.abs(x[b.sample - 20: b.sample + 21] - np.median(x))
                assert abs(int(near.argmax()) - 20) <= 2, (lead, b.time_s)
        t = np.arange(20 * 360) / 360
        sine = pipe.beats(0.3 * np.sin(2 * np.pi * t), fs=360, units="mV", leads=("MLII",))
    assert not sine.beats and "no beat" in sine.warnings[0] and "QRS" in sine.warnings[0]
    # written in full: rounded to 1 µV, the sine's staircase gave XQRS 38 "QRS complexes" in 20 s
    csv = _csv(tmp_path / "sine.csv", 0.3 * np.sin(2 * np.pi * t)[:, None], leads=("MLII",), digits=9)
    proc = subprocess.run([sys.executable, "-m", "edgemed.cli", "predict", str(lstm_bundle), str(csv), "--out",
                           str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and ": 0 beats" in proc.stdout
    assert "edgemed: warning:" in proc.stderr and "no beat in 20.0 s" in proc.stderr
    assert json.loads((tmp_path / "o" / "sine.beats.json").read_text())["warnings"] == sine.warnings


def test_cli_predicts_every_beat_of_a_record_and_bench_reports_real_time(lstm_bundle, tmp_path):
    import subprocess
    import sys

    run = [sys.executable, "-m", "edgemed.cli"]
    proc = subprocess.run(run + ["predict", str(lstm_bundle), str(ecg_record()), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "beats in 600 s" in proc.stdout
    saved = json.loads((tmp_path / "o" / "mitdb213_10min.beats.json").read_text())
    assert len(saved["beats"]) > 1000 and {"sample", "time_s", "label", "probabilities"} <= set(saved["beats"][0])
    proc = subprocess.run(run + ["bench", str(lstm_bundle), "--record", str(ecg_record()), "--runs", "20",
                                 "--no-history", "--json", str(tmp_path / "b.json")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "x real time" in proc.stdout and "vs annotations" in proc.stdout
    report = json.loads((tmp_path / "b.json").read_text())
    rec = report["artifacts"][0]["record"]
    assert rec["against_annotations"]["detected"]["value"] > 0.95 and rec["realtime_factor"] > 10
    assert report["artifacts"][0]["accuracy"]["per_class"]["V"]["ppv_interval"]["cases"] > 0


def test_signal_bundles_speak_of_signals_and_take_what_the_cli_can_describe(lstm_bundle, tmp_path):
    """Issue 20.12, the signal side: a folder of recordings, a bare .npy with --fs/--units/--leads, a ragged CSV
    named by line, messages about windows not images, and view refusing what it cannot show."""
    import subprocess
    import sys

    from edgemed.io.signals import read_signal

    run = [sys.executable, "-m", "edgemed.cli"]
    x = read_signal(ecg_record()).samples[: 30 * 360]
    folder = tmp_path / "records"
    folder.mkdir()
    _csv(folder / "a.csv", x)
    np.save(folder / "b.npy", x * 1000)  # in µV, with no rate and no lead names: the CLI states them
    proc = subprocess.run(run + ["predict", str(lstm_bundle), str(folder / "a.csv")], capture_output=True, text=True,
                          timeout=300)
    beats = proc.stdout.split(": ")[1].split(" beats")[0]
    proc = subprocess.run(run + ["predict", str(lstm_bundle), str(folder), "--fs", "360", "--units", "uV", "--leads",
                                 "MLII,V1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr  # before: "folder: no such file", and no way to give fs/units
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and all(f": {beats} beats in 30 s" in ln for ln in lines), proc.stdout
    proc = subprocess.run(run + ["predict", str(lstm_bundle), str(folder / "b.npy")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and "no sampling rate or units" in proc.stderr
    ragged = folder / "ragged.csv"
    ragged.write_text("time,MLII [mV],V1 [mV]\n0.0,0.1,0.2\n0.002778,0.1\n0.005556,0.1,0.2\n")
    proc = subprocess.run(run + ["predict", str(lstm_bundle), str(ragged)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "line 3 has 2 value(s), the header 3 column(s)" in proc.stderr, proc.stderr
    assert "inhomogeneous" not in proc.stderr
    proc = subprocess.run(run + ["view", str(lstm_bundle), "--port", "1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "view shows images" in proc.stderr and "http://" not in proc.stdout
    proc = subprocess.run(run + ["bench", str(lstm_bundle), "--runs", "10", "--no-history"], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0 and "beat windows" in proc.stdout.splitlines()[0] and "images" not in proc.stdout
    card = _card("ecg_lstm")
    spec = [dict(p, leads=["II"]) if p["op"] == "select_leads" else p for p in card["preprocess"]]
    with pytest.raises(InputError, match="window signals.* no lead 'II'.*select_leads, resample and window") as exc:
        convert(assets_dir() / "ecg_lstm.pt", tmp_path / "ii", task="classification", input_kind="signal",
                input_shape=tuple(card["input_shape"]), arch=card["arch"], arch_args=card["arch_args"],
                labels=tuple(card["labels"]), preprocess=tuple(spec), calib=calibration_set("classification", "signal"))
    assert "image" not in str(exc.value) and "resize" not in str(exc.value)


@pytest.mark.parametrize("kind", ["logits", "probabilities"])
@pytest.mark.parametrize("classes", [1, 2, 4])
def test_a_records_probabilities_at_once_are_each_beats_to_the_bit(kind, classes):
    """beats() turns a block's outputs into probabilities in one call: row k is class_probabilities of output k,
    bit for bit, for softmax, sigmoid and already-probability heads (outputs of the shipped beat models' range)."""
    from edgemed.postprocess import class_probabilities, class_probabilities_rows

    rng = np.random.default_rng(0)
    out = rng.normal(0, 4, (500, classes)).astype(np.float32)
    if kind == "probabilities":
        out = np.abs(out) / np.abs(out).sum(axis=1, keepdims=True) if classes > 1 else 1 / (1 + np.exp(-out))
    rows = class_probabilities_rows(out, kind)
    assert rows.dtype == np.float32
    assert np.array_equal(rows, np.stack([class_probabilities(o, kind) for o in out]))
