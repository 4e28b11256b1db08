"""What surrounds TensorRT, tested here; the engine itself only where tensorrt imports (never here).

The TensorRT path is UNVERIFIED on the machines this project is built on: its libraries are
not installable there. These tests cover the Q/DQ ONNX it consumes, engine-cache keying and
invalidation, the version-mismatch message, builder options chosen from device profiles, and
(with TensorRT's API replaced by a test double at its boundary) that the engine a device
rebuilds at load is built with exactly the options the drift gate measured at conversion.
"""

from __future__ import annotations

import dataclasses

import msgspec
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgemed.devices.detect import Machine
from edgemed.devices.profiles import get_profile, load_profiles
from edgemed.errors import BundleError, OptionError
from edgemed.manifest import TensorRtOptions
from edgemed.runtimes.engine_cache import (
    EngineCache,
    TargetInfo,
    build_options,
    builder_flags,
    cache_key,
    check_compatible,
)
from edgemed.samples import samples_dir

ORIN = TargetInfo("10.3.0", "Orin (nvgpu)", "8.7")
OPTS = TensorRtOptions(precision="fp16", min_shape=[1, 1, 128, 128], opt_shape=[1, 1, 128, 128],
                       max_shape=[8, 1, 128, 128])


def test_cache_key_changes_with_everything_an_engine_is_bound_to():
    base = cache_key("a" * 64, ORIN, OPTS)
    assert base == cache_key("a" * 64, ORIN, OPTS)
    variants = [
        cache_key("b" * 64, ORIN, OPTS),
        cache_key("a" * 64, dataclasses.replace(ORIN, tensorrt="10.4.0"), OPTS),
        cache_key("a" * 64, dataclasses.replace(ORIN, gpu="NVIDIA H100"), OPTS),
        cache_key("a" * 64, dataclasses.replace(ORIN, compute_capability="9.0"), OPTS),
        cache_key("a" * 64, ORIN, msgspec.structs.replace(OPTS, precision="int8")),
        cache_key("a" * 64, ORIN, msgspec.structs.replace(OPTS, dla_core=0)),
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
    section = get_profile(name).tensorrt
    opts = build_options(section, "int8", [1, 128, 128])
    assert opts.dla_core == dla
    flags = builder_flags(opts)
    assert "INT8" in flags and "FP16" in flags
    assert ("GPU_FALLBACK" in flags) == (dla is not None)
    assert opts.min_shape[0] == 1 and opts.max_shape[0] == section.max_batch
    assert opts.workspace_bytes == section.workspace_mb << 20
    assert build_options(section, "fp32", [1, 128, 128]).dla_core is None  # the profile's DLA default skips FP32


def test_dla_refuses_fp32_and_cores_the_device_lacks():
    with pytest.raises(OptionError, match="DLA cores run FP16 or INT8"):
        builder_flags(msgspec.structs.replace(OPTS, precision="fp32", dla_core=0))
    assert builder_flags(msgspec.structs.replace(OPTS, precision="fp32")) == []
    with pytest.raises(OptionError, match="this device has 0 DLA core"):
        build_options(get_profile("jetson-orin-nano").tensorrt, "fp16", [1, 28, 28], dla_core=0)


def test_every_profile_is_complete_data():
    profiles = load_profiles()
    for required in ("jetson-orin-nano", "jetson-orin-nx", "jetson-agx-orin", "jetson-xavier-nx", "x86-cpu",
                     "arm64-cpu", "intel-npu", "nvidia-gpu"):
        p = profiles[required]
        assert p.preference and p.latency_budget_ms.point_of_care <= 33.4
        assert p.telemetry and p.memory_budget_mb > 0
        if p.tensorrt:
            assert p.tensorrt.max_batch >= p.tensorrt.opt_batch >= 1


def test_a_profile_with_a_typo_is_refused_naming_the_field(tmp_path, monkeypatch):
    import json

    from edgemed.devices import profiles as profiles_module
    from edgemed.errors import EdgemedError

    data = json.loads((profiles_module.profiles_dir() / "jetson-orin-nano.json").read_text())
    data["tensorrt"]["max_batchh"] = 4
    (tmp_path / "jetson-orin-nano.json").write_text(json.dumps(data))
    monkeypatch.setattr(profiles_module, "profiles_dir", lambda: tmp_path)
    profiles_module.load_profiles.cache_clear()
    try:
        with pytest.raises(EdgemedError, match="jetson-orin-nano.json is invalid.*max_batchh"):
            profiles_module.load_profiles()
    finally:
        profiles_module.load_profiles.cache_clear()


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

    options = build_options(None, "fp32", [1, 28, 28])
    engine = TensorRtEngine(cnn_bundle / "model.onnx", precision="fp32", options=options)
    ref = np.load(cnn_bundle / "reference.npz")
    out = engine.infer({"input": ref["inputs"]})
    np.testing.assert_allclose(next(iter(out.values())), ref["outputs"], atol=1e-3)


JETSON = {"agx": Machine("aarch64", "ARMv8 Processor rev 1 (v8l)", [], 12, "NVIDIA Jetson AGX Orin Developer Kit",
                         "R36.3.0"),
          "nano": Machine("aarch64", "ARMv8 Processor rev 1 (v8l)", [], 6, "NVIDIA Jetson Orin Nano Developer Kit",
                          "R36.3.0")}


def test_load_rebuilds_the_engine_with_exactly_the_options_the_gate_measured(tmp_path, monkeypatch):
    """Convert on an (emulated) AGX Orin with DLA core 1, then load with an empty engine cache: the rebuild
    gets the same precision flags, DLA core, batch profile and workspace as the engine the gate measured."""
    from edgemed import load
    from edgemed.bundle import Bundle
    from edgemed.devices import detect as detect_module
    from edgemed.errors import DeviceNotFound
    from edgemed.gate.verdict import Budget
    from tests import fake_tensorrt

    from .conftest import SHARED, convert_shipped

    fake_tensorrt.install(monkeypatch)
    machine = {"now": JETSON["agx"]}
    monkeypatch.setattr(detect_module, "detect", lambda *a, **k: machine["now"])
    monkeypatch.setenv("EDGEMED_CACHE", str(tmp_path / "cache-at-conversion"))
    out = convert_shipped("cnn_breastmnist", tmp_path / "b", targets=("onnx", "tensorrt"),
                          precisions=("fp32", "fp16", "int8"), dla_core=1, calib=SHARED / "breastmnist.npz",
                          calib_key="train_images", budget=Budget.parse("agreement>=0.98", "classification"))
    assert len(fake_tensorrt.BUILDS) == 3  # one engine built per precision, in order, for the gate
    gated = dict(zip(("fp32", "fp16", "int8"), fake_tensorrt.BUILDS))
    arts = {a.precision: a for a in Bundle.open(out).artifacts if a.backend == "tensorrt"}
    assert set(arts) == {"fp32", "fp16", "int8"}
    assert arts["fp16"].build.tensorrt.dla_core == 1 and arts["fp32"].build.tensorrt.dla_core is None
    assert arts["fp16"].drift.passed and arts["fp32"].drift.passed  # the double runs the FP32 ONNX: no drift
    assert arts["fp16"].build.tensorrt.max_shape[0] == get_profile("jetson-agx-orin").tensorrt.max_batch

    monkeypatch.setenv("EDGEMED_CACHE", str(tmp_path / "empty-cache-on-the-device"))
    for precision in ("fp32", "fp16", "int8"):
        if not arts[precision].drift.passed:
            continue
        fake_tensorrt.BUILDS.clear()
        with load(out, device="jetson", backend="tensorrt", precision=precision) as pipe:
            assert pipe.engine.options == arts[precision].build.tensorrt
            pipe.predict(np.full((28, 28), 90, np.uint8))
        (rebuilt,) = fake_tensorrt.BUILDS
        assert rebuilt == gated[precision], precision

    assert gated["fp16"]["flags"] == ["FP16", "GPU_FALLBACK"] and gated["int8"]["flags"] == ["FP16", "GPU_FALLBACK",
                                                                                              "INT8"]
    assert gated["fp32"]["cleared"] == ["TF32"] and gated["fp16"]["cleared"] == []  # FP32 computes in FP32
    assert gated["fp16"]["device"] == "DLA" and gated["fp16"]["dla_core"] == 1
    assert gated["fp32"]["device"] == "GPU" and gated["fp16"]["profile"][2][0] == 16

    machine["now"] = JETSON["nano"]  # no DLA: an engine gated on DLA core 1 must not be rebuilt for the GPU
    if arts["fp16"].drift.passed:
        with pytest.raises(DeviceNotFound, match="gated for DLA core 1.*0 DLA core"):
            load(out, device="jetson", backend="tensorrt", precision="fp16")
