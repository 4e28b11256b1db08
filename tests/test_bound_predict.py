"""predict through the engine's bound input (ORT IO binding, an OpenVINO tensor sharing memory) answers exactly
what the unbound stages answer (prepare → infer → finish), per thread, and a closed pipeline still refuses."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import edgemed
from edgemed.errors import InputError, PipelineClosed
from edgemed.input_range import always_within, check
from edgemed.manifest import ValueRange

from .conftest import convert_ecg_fp32


def _unbound(pipe, x, **describe):
    prepared = pipe.prepare(x, **describe)
    return pipe.finish(pipe.infer(prepared), prepared)


def _artifacts(bundle):
    with edgemed.load(bundle) as probe:
        return [(a.backend, a.precision) for a in probe.bundle.artifacts if a.drift.passed]


def test_bound_predict_answers_what_the_stages_answer(cnn_bundle_all, unet_bundle, breastmnist, busi):
    frames = {cnn_bundle_all: list(breastmnist["test_images"][:20]),
              unet_bundle: [busi["images"][i] for i in (0, 5, 400)] + [busi["images"][7][:200, :230]]}
    for bundle, images in frames.items():
        for backend, precision in _artifacts(bundle):
            with edgemed.load(bundle, backend=backend, precision=precision) as pipe:
                for x in images:
                    r, ref = pipe.predict(x), _unbound(pipe, x)
                    assert pipe._binding() is not None, (backend, precision)  # the bound path was the one taken
                    if pipe.task == "classification":
                        assert r.index == ref.index and np.array_equal(r.probabilities, ref.probabilities)
                    else:
                        assert np.array_equal(r.mask, ref.mask)


def test_bound_beats_answer_what_the_stages_answer(tmp_path):
    from edgemed.samples import assets_dir

    bundle = convert_ecg_fp32(tmp_path / "ecg")
    with np.load(assets_dir() / "samples" / "ecg" / "ds2_beats.npz") as d:
        beats, gain = d["signals"][::200], float(d["adc_gain"])
    with edgemed.load(bundle) as pipe:
        for counts in beats:
            describe = {"fs": 120, "units": "mV", "leads": ("MLII",)}
            r = pipe.predict(counts, adc_gain=gain, **describe)
            ref = _unbound(pipe, counts, adc_gain=gain, **describe)
            assert r.index == ref.index and np.array_equal(r.probabilities, ref.probabilities)


def test_each_thread_predicts_through_its_own_binding(cnn_bundle, breastmnist):
    images = breastmnist["test_images"][:60]
    with edgemed.load(cnn_bundle) as pipe:
        want = [pipe.predict(x).probabilities for x in images]
        got: dict[int, list] = {}

        def work(k: int) -> None:
            got[k] = [pipe.predict(x).probabilities for x in images]

        threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for k in range(3):
            assert all(np.array_equal(a, b) for a, b in zip(got[k], want)), k


def test_a_closed_pipeline_refuses_after_its_binding_was_made(cnn_bundle, breastmnist):
    pipe = edgemed.load(cnn_bundle)
    pipe.predict(breastmnist["test_images"][0])
    pipe.close()
    with pytest.raises(PipelineClosed):
        pipe.predict(breastmnist["test_images"][0])


def test_a_dtype_trusted_without_a_scan_can_never_fail_the_range_check():
    calibrated = ValueRange(dtypes=["uint8"], low=0.0, high=255.0, frames=100)
    narrow = ValueRange(dtypes=["uint8"], low=40.0, high=90.0, frames=100)
    for dtype in (np.uint8, np.int8, np.uint16, np.int16, np.float32, np.bool_):
        for expected in (calibrated, narrow):
            if not always_within(np.dtype(dtype), expected):
                continue
            info = np.iinfo(dtype)
            for frame in (np.full((4, 4), info.min, dtype), np.full((4, 4), info.max, dtype),
                          np.array([[info.min, info.max]], dtype)):
                check(frame, expected)  # raises nothing, so skipping it changes nothing
    assert always_within(np.dtype(np.uint8), calibrated)
    assert not always_within(np.dtype(np.uint16), calibrated) and not always_within(np.dtype(np.float32), calibrated)
    assert not always_within(np.dtype(np.uint8), narrow)
    with pytest.raises(InputError, match="far outside"):
        check(np.full((4, 4), 255, np.uint8), narrow)


def test_only_outputs_the_inputs_do_not_size_are_bound_anew(tmp_path):
    """An output sized by the inputs' named dims (every edgemed export's ``batch``) stays bound between runs; one
    whose size the data decides (NonZero's count, as a detector's boxes after NMS) is bound anew each run, so
    runs of different counts answer exactly what ``session.run`` answers."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from edgemed.runtimes.onnxruntime import OnnxRuntimeEngine

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("NonZero", ["x"], ["z"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5]),
         helper.make_tensor_value_info("z", TensorProto.INT64, [2, "count"])])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    engine = OnnxRuntimeEngine(path)
    assert engine._data_dependent() == ["z"]
    binding = engine.bind((1, 5))
    for row in ([1, 0, 2, 0, 3], [0, 0, 0, 0, 4], [5, 6, 7, 8, 9], [-1, 0, 0, 0, 0]):
        binding.input[:] = np.asarray(row, np.float32)
        got = binding.run()
        y, z = engine.session.run(["y", "z"], {"x": binding.input})
        np.testing.assert_array_equal(got["y"], y)
        np.testing.assert_array_equal(got["z"], z)
        assert got["y"] is not binding.run()["y"]  # every run's outputs are its own arrays
