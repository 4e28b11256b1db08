"""Models with an input beside the main one (issue 21): the shipped two-input ECG beat classifier (a beat window and its
RR intervals) converted, judged, loaded and streamed on real MIT-BIH data, ONNX Runtime and OpenVINO."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest

import edgemed
from edgemed.bundle import MANIFEST
from edgemed.converters.convert import convert
from edgemed.errors import BundleError, EdgemedError, InputError, OptionError
from edgemed.gate.verify import verify_artifact
from edgemed.rr_intervals import RR_FEATURES, rr_rows
from edgemed.samples import assets_dir, calibration_set, ecg_beats, ecg_record
from edgemed.signal_sets import SignalSet

pytest.importorskip("wfdb", reason="wfdb not installed (pip install 'edgemed[signal]')")
torch = pytest.importorskip("torch")

FEATURES = (("rr", RR_FEATURES),)


def _card() -> dict:
    return json.loads((assets_dir() / "ecg_rr.json").read_text())


def _module():
    from edgemed.zoo import build

    card = _card()
    module = build(card["arch"], **card["arch_args"])
    module.load_state_dict(torch.load(assets_dir() / "ecg_rr.pt", weights_only=True))
    return module.eval()


def test_a_two_input_model_converts_with_pytorch_parity_on_real_ds2_beats(rr_bundle):
    manifest = json.loads((rr_bundle / MANIFEST).read_text())
    assert manifest["features"] == [{"name": "rr", "features": list(RR_FEATURES), "units": "s"}]  # float32: default
    arts = {(a["backend"], a["precision"]): a for a in manifest["artifacts"]}
    assert {k: a["drift"]["verdict"] for k, a in arts.items()} == {("onnxruntime", "fp32"): "passed",
                                                                   ("openvino", "fp32"): "passed"}
    assert arts[("onnxruntime", "fp32")]["drift"]["cases"] >= 590  # the DS2 beats with defined RR intervals
    module = _module()
    beats = SignalSet.open(ecg_beats()).subset(40)
    for backend in ("onnxruntime", "openvino"):
        with edgemed.load(rr_bundle, backend=backend, precision="fp32") as pipe:
            for _, beat in beats:
                if not np.isfinite(list(beat.features.values())).all():
                    continue
                r = pipe.predict(beat)  # a set's beat carries its RR intervals
                prepared = pipe.prepare(beat)
                with torch.no_grad():
                    logits = module(torch.from_numpy(prepared.tensor), torch.from_numpy(prepared.extra["rr"]))
                expected = torch.softmax(logits, 1)[0].numpy()
                np.testing.assert_allclose(r.probabilities, expected, atol=1e-5)
                # the same beat as an array with its intervals by name gives the same answer
                again = pipe.predict(beat.samples, fs=beat.fs, units="mV", leads=beat.leads,
                                     features=dict(beat.features))
                np.testing.assert_array_equal(again.probabilities, r.probabilities)
            assert verify_artifact(pipe).passed  # the bundle's reference probes carry their intervals


def test_the_beat_stream_derives_rr_intervals_and_matches_the_pipeline_written_by_hand(rr_bundle):
    """A whole record (10 min of MIT-BIH 213) through ``beats()`` at its annotated R peaks: each beat's intervals come
    from the peaks, as the model was trained (edgemed.rr_intervals), and every beat's answer equals one batched engine
    call written by hand on the same windows and intervals (the record resampled once, cut, detrended)."""
    import wfdb
    from scipy import signal as ss

    from edgemed.io.signals import read_signal

    peaks = np.asarray(wfdb.rdann(str(ecg_record().with_suffix("")), "atr").sample, np.int64)
    sig = read_signal(ecg_record())
    with edgemed.load(rr_bundle, backend="onnxruntime", precision="fp32") as pipe:
        record = pipe.beats(sig, positions=peaks)
        assert len(record.beats) > 1000 and record.counts()["V"] > 20
        pre = pipe.preprocessor
        ratio = Fraction(pre.fs / sig.fs).limit_denominator(1000)
        x = ss.resample_poly(sig.samples[:, pre.read_leads(sig)[0]], ratio.numerator, ratio.denominator)
        rows = rr_rows(peaks, sig.fs)
        got = np.array([b.sample for b in record.beats])
        index = np.searchsorted(peaks, got)
        assert np.array_equal(peaks[index], got) and np.isfinite(rows[index]).all()
        at = np.round(got * float(ratio)).astype(np.int64)
        n, before = pre.length, pre.before
        t = np.arange(n) - (n - 1) / 2.0
        w = x[at[:, None] + np.arange(-before, n - before)]
        w = w - w.mean(axis=1, keepdims=True) - ((w @ t) / (t @ t))[:, None] * t
        feed = {pipe.input_name: w[:, None, :].astype(np.float32), "rr": rows[index]}
        logits = pipe.engine.session.run(None, feed)[0]
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        np.testing.assert_allclose(np.stack([b.probabilities for b in record.beats]), probs, atol=1e-5)
        assert [b.index for b in record.beats] == probs.argmax(1).tolist()
        # chunk by chunk, a live stream waits for each beat's next R peak and gives the same beats
        reader = pipe.beat_reader(sig.fs, "mV", sig.leads, positions=peaks)
        live = [b for i in range(0, len(sig.samples), 4321) for b in reader.feed(sig.samples[i:i + 4321])]
        live += reader.flush()
        assert [(b.sample, b.label) for b in live] == [(b.sample, b.label) for b in record.beats]


def test_features_are_taken_by_name_and_checked_in_one_line(rr_bundle, cnn_bundle):
    beat = next(b for _, b in SignalSet.open(ecg_beats()) if np.isfinite(list(b.features.values())).all())
    described = {"fs": beat.fs, "units": "mV", "leads": beat.leads}
    given = dict(beat.features)
    with edgemed.load(rr_bundle) as pipe:
        cases = [({}, "none were given"),
                 ({"features": {k: v for k, v in given.items() if k != "rr_post"}}, "missing rr_post"),
                 ({"features": {**given, "age": 3.0}}, "unknown age"),
                 ({"features": {**given, "rr_pre": float("nan")}}, "not a finite"),
                 ({"features": {**given, "rr_pre": "0.8"}}, "not a number"),
                 ({"features": list(given.values())}, "not a mapping")]
        for extra, problem in cases:
            with pytest.raises(InputError) as err:
                pipe.predict(beat.samples, **described, **extra)
            assert problem in str(err.value) and "\n" not in str(err.value), str(err.value)
    with edgemed.load(cnn_bundle) as pipe, pytest.raises(InputError, match="reads no input beside"):
        pipe.predict(np.zeros((28, 28), np.uint8), features={"rr_pre": 0.8})


def test_a_manifest_that_hides_an_input_is_refused_at_load(rr_bundle, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(rr_bundle, copy)
    manifest = json.loads((copy / MANIFEST).read_text())
    del manifest["features"]
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="its inputs are \\['input', 'rr'\\]"):
        edgemed.load(copy)


def test_convert_checks_the_features_the_sets_carry(tmp_path):
    card = _card()
    plain = tmp_path / "plain.npz"  # beats without their intervals
    with np.load(calibration_set("classification", "signal")) as d:
        np.savez(plain, **{k: d[k] for k in ("signals", "fs", "units", "adc_gain", "leads")})
    common = dict(task="classification", input_kind="signal", input_shape=tuple(card["input_shape"]),
                  arch=card["arch"], arch_args=card["arch_args"], preprocess=tuple(card["preprocess"]))
    with pytest.raises(OptionError, match="has no rr_pre, rr_post, rr_local, rr_average"):
        convert(assets_dir() / "ecg_rr.pt", tmp_path / "b", features=FEATURES, calib=plain, **common)
    with pytest.raises(EdgemedError, match="rr"):  # the model's second input, not declared: it cannot run
        convert(assets_dir() / "ecg_rr.pt", tmp_path / "c", calib=calibration_set("classification", "signal"),
                **common)
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
    with pytest.raises(OptionError, match="not NAME=FEATURE"):
        from edgemed.converters.options import parse_features

        parse_features("rr_pre,rr_post")
    half = tmp_path / "half.npz"
    with np.load(calibration_set("classification", "signal")) as d:
        np.savez(half, **{k: d[k] for k in d.files if k != "feature_names"})
    with pytest.raises(InputError, match="features and feature_names go together"):
        SignalSet.open(half)
