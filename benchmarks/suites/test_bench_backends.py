"""FP32 vs INT8 per backend, and edgemed's layer beside the raw backend call it wraps.

Each benchmark is grouped with its twin so pytest-benchmark prints them side by side and
the ratio (INT8/FP32, edgemed/raw) is read from one run on one machine.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from edgemed import load
from edgemed.bundle import Bundle
from edgemed.datasets import ImageSet
from edgemed.samples import samples_for_task


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_infer(benchmark, bundle, backend, precision):
    b = Bundle.open(bundle)
    art = b.manifest.artifact(backend, precision)
    if art is None or not art.drift.passed:
        pytest.skip(f"{backend}/{precision} did not pass the drift gate for this model")
    benchmark.group = f"{b.name} infer"
    with load(bundle, backend=backend, precision=precision) as pipe:
        x = b.reference()["inputs"][:1]
        benchmark(pipe.engine.infer, {pipe.input_name: x})


def test_raw_onnxruntime(benchmark, bundle):
    b = Bundle.open(bundle)
    benchmark.group = f"{b.name} infer"
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    x = b.reference()["inputs"][:1]
    benchmark(session.run, None, {b.manifest.input.name: x})


def test_predict_end_to_end(benchmark, bundle):
    b = Bundle.open(bundle)
    benchmark.group = f"{b.name} end-to-end"
    frame = next(iter(ImageSet.open(samples_for_task(b.task))))[1]
    with load(bundle, backend="onnxruntime", precision="fp32") as pipe:
        benchmark(pipe.predict, frame)


def test_preprocess(benchmark, bundle):
    b = Bundle.open(bundle)
    benchmark.group = f"{b.name} end-to-end"
    frame = next(iter(ImageSet.open(samples_for_task(b.task))))[1]
    pre = b.preprocessor()
    benchmark(pre, frame)


def test_hand_written_numpy_plus_session_run(benchmark, bundle):
    """What a user would write without edgemed: PIL resize + numpy normalise + session.run + argmax."""
    from PIL import Image

    b = Bundle.open(bundle)
    benchmark.group = f"{b.name} end-to-end"
    frame = next(iter(ImageSet.open(samples_for_task(b.task))))[1]
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    h, w = b.manifest.input.shape[2:]
    name = b.manifest.input.name
    minmax = any(op["op"] == "minmax" for op in b.manifest.preprocess)  # the shipped U-Net's; the CNN's is 0.5/0.5

    def run():
        x = np.asarray(Image.fromarray(frame).resize((w, h), Image.Resampling.BILINEAR), np.float32)
        x = (x - x.min()) / max(float(x.max() - x.min()), 1e-6) if minmax else (x / 255 - 0.5) / 0.5
        out = session.run(None, {name: x[None, None]})[0]
        if out.ndim == 4:  # (1, 2, H, W) logits: the mask at the frame's size
            probs = out[0]
            mask = np.asarray(Image.fromarray(probs[1] - probs[0]).resize(frame.shape[::-1])) > 0
            return mask
        return int(np.argmax(out))

    benchmark(run)


def test_engine_infer_costs_what_a_plain_session_run_costs(bundle):
    """Engine-only p50 vs a bare ``InferenceSession.run`` on the same file, interleaved in one loop (a speed
    target, so it lives with the benchmarks: on a shared machine a unit test of it would flake)."""
    from edgemed.benchmarks.harness import bench_latency

    b = Bundle.open(bundle)
    frames = [im for _, im in ImageSet.open(samples_for_task(b.task))]
    with load(bundle, backend="onnxruntime", precision="fp32") as pipe:
        lat = bench_latency(pipe, frames, runs=400, warmup=50)
    ratio = lat["infer"]["p50_ms"] / lat["raw_onnxruntime"]["p50_ms"]
    assert 0.7 < ratio < 1.45, lat
