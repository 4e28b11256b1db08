"""An FP32 artifact is certified as the reference is, on every backend and task, from a small site's 8 images;
one whose weights moved beyond FP32 round-off is judged by the budget instead (issue 28)."""

from __future__ import annotations

import numpy as np
import pytest

from edgemed import load
from edgemed.bundle import Bundle
from edgemed.gate.drift import compare
from edgemed.gate.verdict import PARITY, default_budget, judge_artifact
from edgemed.samples import ecg_beats, shipped_model
from edgemed.signal_sets import SignalSet

from .conftest import convert_shipped


def _images(array, path):
    np.savez(path, images=np.asarray(array))
    return path


@pytest.fixture(scope="module")
def eight(tmp_path_factory, busi, breastmnist):
    """Eight real cases of each kind: what a small site holds."""
    root = tmp_path_factory.mktemp("eight")
    test = np.flatnonzero(busi["split"] == "test")[:8]
    ecg = SignalSet.open(ecg_beats()).subset(8)
    ecg.save(root / "beats.npz")
    return {"cnn_breastmnist": _images(breastmnist["test_images"][:8], root / "cnn.npz"),
            "unet_busi": _images(busi["images"][test], root / "busi.npz"),
            "det_busi": _images(busi["images"][test], root / "busi.npz"),
            "ecg_lstm": root / "beats.npz"}


MODELS = ["cnn_breastmnist", "unet_busi", "det_busi", "ecg_lstm"]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, eight):
    out = {}
    for name in MODELS:
        _, card = shipped_model(name)
        out[name] = convert_shipped(name, tmp_path_factory.mktemp("parity") / name, calib=eight[name],
                                    input_kind=card.get("input_kind", "image"), targets=("onnx", "openvino"),
                                    precisions=("fp32", "fp16"))
    return out


@pytest.mark.parametrize("name", MODELS)
def test_openvino_fp32_from_8_images_is_certified_and_loads_by_default(bundles, name):
    b = Bundle.open(bundles[name])
    ov = b.manifest.artifact("openvino", "fp32")
    assert ov.drift.budget == PARITY and ov.verdict == "passed", ov.drift
    assert ov.drift.cases == 8 and ov.drift.computed_in == "fp32" and ov.drift.device == "cpu"
    assert ov.drift.tolerance is not None and ov.drift.tolerance < 1e-3
    with load(bundles[name], backend="openvino", precision="fp32") as pipe:  # no accept needed
        assert pipe.artifact.file == ov.file
    fp16 = b.manifest.artifact("onnxruntime", "fp16")  # precision-reducing: judged by its budget, not parity
    assert fp16.drift.budget != PARITY and fp16.verdict in ("uncertified", "failed")


def _perturbed(model: str, out, scale: float = 1.02):
    """The FP32 ONNX with its first convolution's weights moved by 2%: FP32 arithmetic, not the same model."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(model)
    conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    weight = next(i for i in proto.graph.initializer if i.name == conv.input[1])
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float32(scale), weight.name))
    onnx.save(proto, out)
    return out


@pytest.mark.parametrize("name", MODELS)
def test_fp32_weights_moved_beyond_round_off_are_judged_by_the_budget(bundles, name, tmp_path):
    from edgemed.runtimes.onnxruntime import OnnxRuntimeEngine

    b = Bundle.open(bundles[name])
    ref = b.manifest.artifact("onnxruntime", "fp32")
    with load(bundles[name]) as pipe:
        probes = b.reference()["inputs"]
        reference = pipe.reader.run(pipe.engine, pipe.input_name, probes)
        moved = _perturbed(str(bundles[name] / "model.onnx"), tmp_path / "moved.onnx")
        with OnnxRuntimeEngine(moved) as engine:
            candidate = pipe.reader.run(engine, pipe.input_name, probes)
        comparison = compare(reference, candidate, b.task, pipe.output_kind, b.labels)
    verdict = judge_artifact(comparison, default_budget(b.task), "fp32", ref.drift.tolerance, evaluated_on="probes")
    assert verdict.budget == str(default_budget(b.task)), verdict  # not parity: beyond round-off
    assert verdict.verdict != "passed"  # 8 probes cannot certify a budget
    faithful = judge_artifact(compare(reference, reference, b.task, pipe.output_kind, b.labels),
                              default_budget(b.task), "fp32", ref.drift.tolerance, evaluated_on="probes")
    assert faithful.budget == PARITY and faithful.passed


def test_an_fp32_artifact_computing_at_lower_precision_is_not_covered_by_parity(bundles):
    from edgemed.gate.verdict import holds_for

    ov = Bundle.open(bundles["cnn_breastmnist"]).manifest.artifact("openvino", "fp32")
    assert holds_for(ov.drift, "fp32")
    assert not holds_for(ov.drift, "fp16") and not holds_for(ov.drift, "bf16")  # an NPU, or a bf16 CPU hint
