"""INT8/FP16 artifacts for ONNX Runtime and OpenVINO on real data, gated by clinical drift."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from edgemed import load
from edgemed.bundle import Bundle
from edgemed.errors import EdgemedError, InputError, NoEligibleArtifact, OptionError
from edgemed.gate.verdict import Budget, default_budget
from edgemed.samples import shipped_model

from .conftest import SHARED, convert_shipped

CALIB = dict(calib=SHARED / "breastmnist.npz", calib_key="train_images")


@pytest.fixture(scope="module")
def cnn_all(tmp_path_factory):
    out = tmp_path_factory.mktemp("q") / "cnn_all"
    return convert_shipped("cnn_breastmnist", out, targets=("onnx", "openvino"), precisions=("fp32", "fp16", "int8"),
                           **CALIB)


def test_every_artifact_is_built_measured_and_hashed(cnn_all):
    b = Bundle.open(cnn_all)
    kinds = {(a.backend, a.precision) for a in b.artifacts}
    assert kinds == {(x, p) for x in ("onnxruntime", "openvino") for p in ("fp32", "fp16", "int8")}
    for a in b.artifacts:
        d = a.drift
        assert d.cases >= 64 and "agreement" in d.metrics and "max_abs_diff" in d.metrics
        assert d.verdict in ("passed", "failed", "uncertified")
    prov = b.manifest.provenance
    assert prov.calibration_count == 128 and len(prov.calibration_sha256) == 64
    assert any(f.file.endswith(".bin") for _, f in b.manifest.listed_files())  # OpenVINO weights are hashed too


def test_int8_artifacts_meet_the_default_budget_or_say_so(cnn_all):
    b = Bundle.open(cnn_all)
    for a in b.artifacts:
        if a.precision != "int8":
            continue
        d = a.drift
        budget = default_budget("classification")  # agreement and the worst class's agreement
        assert d.budget == str(budget)
        terms = [(b.value, d.metrics[b.metric]) for b in budget.terms]
        assert d.metrics["agreement"].cases == d.cases >= 100
        if d.verdict == "passed":  # certified: the bound, not the point estimate, meets every term
            assert all(est.low >= value for value, est in terms)
            with load(cnn_all, backend=a.backend, precision="int8") as pipe:
                assert pipe.artifact.file == a.file
        elif d.verdict == "failed":  # surely misses: even the optimistic bound is below, for some term
            assert any(est.high < value for value, est in terms)
        else:
            assert all(est.high >= value for value, est in terms)
            assert any(est.low < value for value, est in terms) and d.needed_cases and "not certified" in d.missed[0]


def test_passed_engines_agree_with_the_pytorch_reference_on_real_images(cnn_all, breastmnist):
    images = breastmnist["test_images"][:40]
    with load(cnn_all, backend="onnxruntime", precision="fp32") as ref:
        want = [ref.predict(im).index for im in images]
    b = Bundle.open(cnn_all)
    for a in b.artifacts:
        if not a.drift.passed:
            continue
        with load(cnn_all, backend=a.backend, precision=a.precision) as pipe:
            got = [pipe.predict(im).index for im in images]
        assert np.mean(np.array(got) == np.array(want)) >= 0.95, a.file


def test_failed_artifacts_are_never_selected(tmp_path):
    out = convert_shipped("cnn_breastmnist", tmp_path / "strict", precisions=("fp32", "int8"),
                          budget=Budget.parse("agreement>=0.999,max_prob_diff<=0.000001", "classification"), **CALIB)
    b = Bundle.open(out)
    int8 = next(a for a in b.artifacts if a.precision == "int8")
    assert not int8.drift.passed and int8.drift.missed
    attempts = int8.build.attempts
    assert len(attempts) > 1 and attempts[1]["excluded"]  # the layer fallback ran
    assert int8.build.layer_sqnr_db  # ranked by onnxruntime's qdq_loss_debug
    with pytest.raises(NoEligibleArtifact, match=r"onnxruntime/int8 \(failed\)"):
        load(out, precision="int8")
    with load(out) as pipe:
        assert pipe.artifact.precision == "fp32"
    report = json.loads((out / "report.json").read_text())
    assert any(r["verdict"] == "failed" for r in report["artifacts"])


def test_ort_int8_layer_fallback_reaches_a_tight_budget(tmp_path):
    # A budget FP32-vs-INT8 logits rarely meet with every layer quantized: fallback must keep layers in float.
    out = convert_shipped("cnn_breastmnist", tmp_path / "tight", precisions=("fp32", "int8"),
                          budget=Budget.parse("agreement>=0.999,max_prob_diff<=0.02", "classification"), **CALIB)
    int8 = next(a for a in Bundle.open(out).artifacts if a.precision == "int8")
    attempts = int8.build.attempts
    if attempts[0]["predicted"]["meets_budget"]:
        pytest.skip("full INT8 already met the tight budget on this model; nothing to fall back from")
    d = int8.drift
    if d.passed:
        assert d.value("max_prob_diff") <= 0.02 and d.metrics["agreement"].low >= 0.999
    assert len(int8.build.excluded_nodes) >= 1 or not d.passed


def _images(folder, arrays):
    folder.mkdir()
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(folder / f"{i:03d}.png")
    return folder


@pytest.mark.parametrize("case", ["empty", "mixed_no_resize", "corrupt", "too_few"])
def test_bad_calibration_data(tmp_path, breastmnist, case):
    imgs = breastmnist["train_images"]
    spec = [{"op": "scale", "factor": 1 / 255}]
    kwargs = dict(precisions=("fp32", "int8"))
    if case == "empty":
        calib, needle = _images(tmp_path / "c", []), "holds no images"
    elif case == "mixed_no_resize":
        big = [np.asarray(Image.fromarray(i).resize((40, 40))) for i in imgs[:30]]
        calib, needle = _images(tmp_path / "c", list(imgs[:30]) + big), "40x40 after preprocessing"
        kwargs["preprocess"] = tuple(spec)
    elif case == "corrupt":
        calib = _images(tmp_path / "c", list(imgs[:40]))
        (calib / "010.png").write_bytes((calib / "010.png").read_bytes()[:50])
        needle = "010.png"
    else:
        calib, needle = _images(tmp_path / "c", list(imgs[:5])), "at least 16 calibration images"
    with pytest.raises(EdgemedError, match=needle):
        convert_shipped("cnn_breastmnist", tmp_path / "out", calib=calib, **kwargs)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


@pytest.mark.parametrize("kw,needle", [
    (dict(precision="int4"), "--precision int4"),
    (dict(drift_budget="dice>>0.9"), "does not parse"),
    (dict(drift_budget="dice>=0.99"), "does not apply to classification"),
    (dict(drift_budget="agreement<=0.99"), "points the wrong way"),
    (dict(drift_budget="agreement>=2"), "outside agreement's range"),
    (dict(to="coreml"), "--to coreml"),
    (dict(calib_count=0), "--calib-count 0 must be a whole number >= 1"),
    (dict(calib_count=-5), "--calib-count -5 must be a whole number >= 1"),
])
def test_bad_options(tmp_path, kw, needle):
    """The command line's strings are parsed into typed options before any work; each bad one is one line."""
    from edgemed.converters.options import ConvertOptions

    weights, _ = shipped_model("cnn_breastmnist")
    with pytest.raises(OptionError, match=needle):
        ConvertOptions.from_cli(weights, tmp_path / "out", "classification", **kw)
    assert not (tmp_path / "out").exists()


def test_tensorrt_target_without_tensorrt_is_a_clear_error(tmp_path):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(InputError, match="built on the target"):
            convert_shipped("cnn_breastmnist", tmp_path / "out", targets=("onnx", "tensorrt"))
        assert not (tmp_path / "out").exists()
    else:
        pytest.skip("tensorrt is installed here")


def test_each_passed_backend_agrees_with_the_pytorch_reference_engine(cnn_all, breastmnist):
    """Fresh real images (the BreastMNIST test split), not the ones the gate saw."""
    import torch

    from edgemed.gate.drift import compare, population_margins
    from edgemed.gate.verdict import judge
    from edgemed.zoo import build

    from .torch_reference import TorchReferenceEngine

    weights, card = shipped_model("cnn_breastmnist")
    module = build("cnn", **card["arch_args"])
    module.load_state_dict(torch.load(weights, weights_only=True))
    b = Bundle.open(cnn_all)
    pre = b.preprocessor()
    x = np.concatenate([pre(im).tensor for im in breastmnist["test_images"]])
    with TorchReferenceEngine(module, card["input_shape"]) as ref_engine:
        ref = ref_engine.infer({"input": x})["output"]
    budget = Budget.parse(b.artifacts[1].drift.budget, "classification")  # the bundle's own budget
    for a in b.artifacts:
        if not a.drift.passed:
            continue
        with load(cnn_all, backend=a.backend, precision=a.precision) as pipe:
            out = np.concatenate([pipe.engine.infer({"input": x[i:i + 1]})[pipe.output_name] for i in range(len(x))])
        verdict = judge(compare(ref, out, "classification"), budget, population=population_margins(
            ref, "classification", "logits"))
        assert verdict.verdict != "failed" and verdict.value("agreement") >= 0.99, (a.file, verdict.missed)


@pytest.fixture(scope="module")
def monai_unet_trained(tmp_path_factory, busi):
    """A MONAI UNet trained briefly on BUSI (train split, 64x64) through edgemed's own preprocessing."""
    import torch
    from monai.networks.nets import UNet

    from edgemed.preprocess import Preprocessor, resize_array

    torch.manual_seed(0)
    spec = [{"op": "to_gray"}, {"op": "resize", "size": [64, 64]}, {"op": "minmax"}]
    pre = Preprocessor(spec, [1, 1, 64, 64])
    train = np.where(busi["split"] == "train")[0][:240]
    x = torch.from_numpy(np.concatenate([pre(busi["images"][i]).tensor for i in train]))
    masks = np.stack([resize_array(busi["masks"][i], (64, 64), "nearest") for i in train])
    y = torch.from_numpy(masks.astype(np.int64))
    net = UNet(spatial_dims=2, in_channels=1, out_channels=2, channels=(8, 16, 32), strides=(2, 2), num_res_units=1)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(4):
        for i in range(0, len(x), 16):
            loss = torch.nn.functional.cross_entropy(net(x[i:i + 16]), y[i:i + 16])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    d = tmp_path_factory.mktemp("monai")
    path = d / "monai_unet.pt"
    torch.jit.save(torch.jit.script(net), path)
    (d / "spec.json").write_text(json.dumps(spec))
    return path, d / "spec.json"


def test_monai_unet_goes_through_int8_and_openvino(monai_unet_trained, tmp_path, busi):
    from edgemed.converters.convert import convert
    from edgemed.converters.options import read_preprocess
    from edgemed.samples import calibration_set

    src, spec = monai_unet_trained
    out = convert(src, tmp_path / "monai", task="segmentation", input_shape=(1, 1, 64, 64),
                  preprocess=read_preprocess(spec), labels=("background", "lesion"),
                  calib=calibration_set("segmentation"), targets=("onnx", "openvino"), precisions=("fp32", "int8"))
    b = Bundle.open(out)
    arts = {(a.backend, a.precision): a for a in b.artifacts}
    assert set(arts) == {("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "int8")}
    assert arts[("onnxruntime", "fp32")].drift.value("max_abs_diff") <= 1e-4
    for a in arts.values():
        assert "dice" in a.drift.metrics
    assert arts[("onnxruntime", "int8")].build.quantized_layers.of > 0
    with load(out) as pipe:
        assert pipe.predict(busi["images"][600]).mask.shape == (256, 256)


def test_static_shapes_for_the_npu(tmp_path):
    out = convert_shipped("cnn_breastmnist", tmp_path / "static", targets=("onnx", "openvino"), static_shapes=True)
    b = Bundle.open(out)
    assert b.manifest.input.shape[0] == 1
    ov = next(a for a in b.artifacts if a.backend == "openvino")
    assert ov.build.static_batch == 1
    import openvino as ov_

    model = ov_.Core().read_model(str(out / ov.file))
    assert model.inputs[0].partial_shape.is_static and list(model.inputs[0].shape) == [1, 1, 28, 28]


def test_onnxruntime_cuda_execution_provider_where_a_gpu_exists(cnn_bundle, breastmnist):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("no CUDA execution provider here (onnxruntime-gpu and a GPU are needed)")
    with load(cnn_bundle, device="cuda", backend="onnxruntime", precision="fp32") as gpu, load(cnn_bundle) as cpu:
        assert "CUDAExecutionProvider" in gpu.describe()["providers"]
        for im in breastmnist["test_images"][:50]:
            np.testing.assert_allclose(gpu.predict(im).probabilities, cpu.predict(im).probabilities, atol=1e-4)
