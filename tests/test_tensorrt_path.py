"""What surrounds TensorRT, tested here; the engine itself only where tensorrt imports (never here).

The TensorRT path is UNVERIFIED on the machines this project is built on: its libraries are
not installable there. These tests cover the Q/DQ ONNX it consumes, engine-cache keying and
invalidation, the version-mismatch message, and builder options chosen from device profiles.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgemed.devices.profiles import get_profile, load_profiles
from edgemed.errors import BundleError, InputError
from edgemed.runtimes.engine_cache import BuildOptions, EngineCache, TargetInfo, cache_key, check_compatible
from edgemed.samples import samples_dir

ORIN = TargetInfo("10.3.0", "Orin (nvgpu)", "8.7")
OPTS = BuildOptions("fp16", (1, 1, 128, 128), (1, 1, 128, 128), (8, 1, 128, 128))


def test_cache_key_changes_with_everything_an_engine_is_bound_to():
    base = cache_key("a" * 64, ORIN, OPTS)
    assert base == cache_key("a" * 64, ORIN, OPTS)
    variants = [
        cache_key("b" * 64, ORIN, OPTS),
        cache_key("a" * 64, dataclasses.replace(ORIN, tensorrt="10.4.0"), OPTS),
        cache_key("a" * 64, dataclasses.replace(ORIN, gpu="NVIDIA H100"), OPTS),
        cache_key("a" * 64, dataclasses.replace(ORIN, compute_capability="9.0"), OPTS),
        cache_key("a" * 64, ORIN, dataclasses.replace(OPTS, precision="int8")),
        cache_key("a" * 64, ORIN, dataclasses.replace(OPTS, dla_core=0)),
    ]
    assert len({base, *variants}) == 1 + len(variants)


def test_cache_roundtrip_and_invalidation(tmp_path):
    cache = EngineCache(tmp_path)
    key = cache_key("a" * 64, ORIN, OPTS)
    plan = b"serialized-plan-bytes"
    cache.store(key, plan, ORIN, "a" * 64, OPTS)
    assert cache.lookup(key, ORIN, "a" * 64) == plan
    with pytest.raises(BundleError, match="tensorrt '10.3.0' here '10.4.0'"):
        cache.lookup(key, dataclasses.replace(ORIN, tensorrt="10.4.0"), "a" * 64)
    with pytest.raises(BundleError, match="bundle's ONNX changed"):
        cache.lookup(key, ORIN, "c" * 64)
    engine, _ = cache.paths(key)
    engine.write_bytes(plan[:5])
    with pytest.raises(BundleError, match="does not match its recorded SHA-256"):
        cache.lookup(key, ORIN, "a" * 64)
    assert not list(tmp_path.glob(".*partial"))


def test_version_mismatch_message_names_both_sides():
    meta = {"target": dataclasses.asdict(ORIN), "onnx_sha256": "a" * 64}
    other = TargetInfo("10.3.0", "Xavier", "7.2")
    with pytest.raises(BundleError) as err:
        check_compatible(meta, other, "a" * 64, "x.engine")
    msg = str(err.value)
    assert "gpu 'Orin (nvgpu)' here 'Xavier'" in msg and "compute_capability '8.7' here '7.2'" in msg
    assert "rebuilt" in msg


@pytest.mark.parametrize("name,dla", [("jetson-agx-orin", 0), ("jetson-orin-nx", 0), ("jetson-orin-nano", None)])
def test_builder_flags_and_dla_from_device_profiles(name, dla):
    opts = BuildOptions.from_profile(get_profile(name), "int8", ["batch", 1, 128, 128])
    assert opts.dla_core == dla
    flags = opts.builder_flags()
    assert "INT8" in flags and "FP16" in flags
    assert ("GPU_FALLBACK" in flags) == (dla is not None)
    assert opts.min_shape[0] == 1 and opts.max_shape[0] == get_profile(name)["tensorrt"]["max_batch"]


def test_dla_refuses_fp32_and_unknown_precision():
    with pytest.raises(InputError, match="DLA cores run FP16 or INT8"):
        dataclasses.replace(OPTS, precision="fp32", dla_core=0).builder_flags()
    with pytest.raises(InputError, match="unknown TensorRT precision"):
        dataclasses.replace(OPTS, precision="int4").builder_flags()
    assert dataclasses.replace(OPTS, precision="fp32").builder_flags() == []


def test_every_profile_is_complete_data():
    profiles = load_profiles()
    for required in ("jetson-orin-nano", "jetson-orin-nx", "jetson-agx-orin", "jetson-xavier-nx", "x86-cpu",
                     "arm64-cpu", "intel-npu", "nvidia-gpu"):
        p = profiles[required]
        assert p["preference"] and p["latency_budget_ms"]["point-of-care"] <= 33.4
        assert "telemetry" in p and "memory_budget_mb" in p


def test_qdq_onnx_for_tensorrt_has_symmetric_int8_activations(tmp_path, breastmnist):
    """TensorRT's explicit quantization needs zero-point-0 INT8 Q/DQ pairs; check what edgemed hands it."""
    from edgemed.converters.ort_quantize import preprocess_for_quantization, quantize_int8
    from edgemed.datasets import ImageSet
    from edgemed.preprocess import Preprocessor
    from edgemed.samples import shipped_model
    from tests.conftest import convert_shipped

    bundle = convert_shipped("cnn_breastmnist", tmp_path / "b")
    spec = shipped_model("cnn_breastmnist")[1]["preprocess"]
    prepared = preprocess_for_quantization(bundle / "model.onnx", tmp_path / "prep.onnx")
    np.savez(tmp_path / "calib.npz", images=breastmnist["train_images"][:32])
    quantize_int8(prepared, tmp_path / "qdq.onnx", ImageSet.open(tmp_path / "calib.npz"),
                  Preprocessor(spec, [1, 1, 28, 28]), "input", symmetric_activations=True)
    model = onnx.load(str(tmp_path / "qdq.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    qnodes = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert qnodes
    for node in qnodes:
        zp = inits[node.input[2]]
        assert zp.dtype == np.int8 and not zp.any(), node.name
    assert samples_dir("busi").is_dir()


def test_tensorrt_engine_runs_where_tensorrt_imports(cnn_bundle):
    pytest.importorskip("tensorrt", reason="TensorRT is not installable on this machine (unverified path)")
    from edgemed.runtimes.tensorrt import TensorRtEngine

    engine = TensorRtEngine(cnn_bundle / "model.onnx", precision="fp32")
    ref = np.load(cnn_bundle / "reference.npz")
    out = engine.infer({"input": ref["inputs"]})
    np.testing.assert_allclose(next(iter(out.values())), ref["outputs"], atol=1e-3)
