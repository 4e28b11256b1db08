"""The overhead benchmark's hand-written pipelines compute what predict computes, for every task.

benchmarks/studies/overhead.py times ``predict`` against the best pipeline an engineer writes by hand (one Pillow
resize, the folded affine map written into one bound input array, the engine called with IO binding or
shared memory on the very engine edgemed opened). A ratio is only worth reading if both sides compute the
same tensor and the same answer: this holds each baseline to that, on real frames and beats. No timing is
asserted here (targets live in the benchmark).
"""

from __future__ import annotations

import numpy as np
import pytest

import edgemed

from .conftest import convert_ecg_fp32, convert_shipped, study

overhead = study("overhead")


def _artifacts(bundle):
    with edgemed.load(bundle) as probe:
        return [(a.backend, a.precision) for a in probe.bundle.artifacts
                if a.drift.passed and a.backend in ("onnxruntime", "openvino")]


def _check(bundle, frames):
    for backend, precision in _artifacts(bundle):
        with edgemed.load(bundle, backend=backend, precision=precision) as pipe:
            for i, frame in enumerate(frames):
                case = overhead.image_case(pipe, frame, f"frame {i}")
                assert overhead.same(pipe, case, frame, {}) is None, (backend, precision, i)
                # and the tensor is edgemed's to the bit, not merely close
                assert np.array_equal(case.tensor(), pipe.prepare(frame).tensor), (backend, precision, i)


def test_classification_baseline_computes_predicts_answer(cnn_bundle, breastmnist):
    _check(cnn_bundle, list(breastmnist["test_images"][:12]))


def test_segmentation_baseline_gives_predicts_mask_at_full_resolution(unet_bundle, busi):
    from PIL import Image

    frames = [busi["images"][i] for i in (0, 1, 2)]
    big = [np.asarray(Image.fromarray(f).resize((w, h), Image.Resampling.BILINEAR))
           for f, (h, w) in zip(frames, ((512, 512), (584, 568), (600, 800)))]
    _check(unet_bundle, frames + big)


@pytest.mark.parametrize("nms", ["host", "graph"])
def test_detection_baseline_gives_predicts_boxes(nms, busi, det_fp32, tmp_path):
    # NMS on the host: the session's detector bundle; in the graph: its own conversion
    bundle = det_fp32 if nms == "host" else convert_shipped("det_busi", tmp_path / nms, nms=nms, targets=("onnx",),
                                                            precisions=("fp32",))
    images = busi["images"][busi["split"] == "test"][:16]
    with edgemed.load(bundle) as pipe:
        assert sum(len(pipe.predict(f).boxes) for f in images) > 0  # the check compares real boxes, not only none
    _check(bundle, list(images))


def test_beat_baseline_computes_predicts_tensor_and_label(tmp_path):
    from edgemed.samples import assets_dir

    bundle = convert_ecg_fp32(tmp_path / "ecg")
    with np.load(assets_dir() / "samples" / "ecg" / "ds2_beats.npz") as d:
        beats, gain, fs = d["signals"][:: 400].astype(np.float64), float(d["adc_gain"]), float(d["fs"])
    with edgemed.load(bundle) as pipe:
        for beat in beats / gain:
            case = overhead.beat_case(pipe, beat, fs, "beat")
            assert overhead.same(pipe, case, beat, {"fs": fs, "units": "mV", "leads": ("MLII",)}) is None
        # a whole record (2 minutes of MIT-BIH 213 at 360 Hz, resampled to the model's 120 Hz) through beats() at
        # the detector's R peaks, against the batched pipeline written by hand: the same beats, labels, probabilities
        from edgemed.io.signals import Signal, read_signal
        from edgemed.samples import ecg_record

        sig = read_signal(ecg_record())
        sig = Signal(sig.samples[:120 * 360], sig.fs, sig.leads, sig.source)
        peaks = np.array([b.sample for b in pipe.beats(sig).beats])
        assert len(peaks) > 100
        assert overhead.record_case(pipe, sig, peaks, "record").check() is None


def test_the_benchmark_refuses_a_baseline_that_differs(cnn_bundle, breastmnist):
    frame = breastmnist["test_images"][0]
    with edgemed.load(cnn_bundle) as pipe:
        case = overhead.image_case(pipe, frame, "frame")
        wrong = overhead.Case(case.label, case.predict, case.hand, case.engine, lambda: case.tensor() * 1.01)
        assert overhead.same(pipe, wrong, frame, {}).startswith("tensors differ")


def test_the_table_goes_into_the_bench_history_that_report_reads(cnn_bundle, tmp_path):
    """``--history``: each compared case a run of scenario ``overhead`` (its ratio, predict/hand/engine p50s, the
    load), trended per case by ``edgemed report``; a refused case is not stored as a figure."""
    from edgemed.benchmarks.history import History
    from edgemed.benchmarks.report import text_report

    rows = [overhead.Row("cnn_breastmnist", "onnxruntime/fp32", "frame 28x28", 0.2, 0.18, 0.15),
            overhead.Row("cnn_breastmnist", "openvino/fp32", "-", 0, 0, 0, refused="no hand-written baseline")]
    store = tmp_path / "history.sqlite"
    overhead.record_history(rows, [str(cnn_bundle)], str(store))
    runs = History(store, create=False).runs()
    assert [(r["scenario"], r["artifact"], r["backend"]) for r in runs] == [("overhead", "onnxruntime/fp32",
                                                                          "onnxruntime")]
    record = runs[0]["record"]
    assert record["ratio"] == round(0.2 / 0.18, 4) and record["workload"] == {"case": "frame 28x28"}
    assert "overhead" in text_report(runs, []) and "case frame 28x28" in text_report(runs, [])
