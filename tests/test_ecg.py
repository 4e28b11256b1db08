"""ECG beat classifiers end to end: conversion parity (1-D CNN, LSTM, GRU, bidirectional), INT8 per backend
through the per-class gate, whole-record and chunked beat streams on a real MIT-BIH record."""

from __future__ import annotations

import json

import numpy as np
import pytest

import edgemed
from edgemed.bundle import Bundle
from edgemed.converters.convert import convert
from edgemed.drift import compare
from edgemed.errors import InputError, OptionError
from edgemed.gate import Budget, default_budget, judge
from edgemed.samples import assets_dir, calibration_set, ecg_beats, ecg_record
from edgemed.signal_sets import SignalSet
from edgemed.zoo import build

pytest.importorskip("wfdb", reason="wfdb not installed (pip install 'edgemed[signal]')")
torch = pytest.importorskip("torch")

SPEC = [{"op": "select_leads", "leads": ["MLII"]}, {"op": "resample", "fs": 120},
        {"op": "window", "before_s": 0.75, "after_s": 0.75}, {"op": "detrend"}]


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
    from edgemed.signals import read_signal

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


def test_dropouts_and_short_records_are_reported_not_guessed(lstm_bundle):
    from edgemed.signals import read_signal

    sig = read_signal(ecg_record())
    x = sig.samples[: 60 * 360].copy()
    x[20 * 360: 25 * 360] = np.nan  # a lead-off stretch
    with edgemed.load(lstm_bundle) as pipe:
        with pytest.raises(InputError, match="name the array's leads"):  # a set-up error is never a "gap"
            pipe.beats(x, fs=360, units="mV")
        record = pipe.beats(x, fs=360, units="mV", leads=("MLII", "V1"))
        assert record.gaps and "NaN" in record.gaps[0].reason
        assert all(not 20 <= b.time_s < 30 for b in record.beats)  # the block holding the gap yields nothing
        assert len(record.beats) > 40
        with pytest.raises(InputError, match="shorter than one"):
            pipe.beats(x[:360], fs=360, units="mV", leads=("MLII", "V1"))


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
