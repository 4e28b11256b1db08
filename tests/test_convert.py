"""edgemed convert from every model source, and every bad input refused without a partial bundle."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgemed import load
from edgemed.bundle import Bundle
from edgemed.converters.convert import convert
from edgemed.errors import ConversionError, EdgemedError, InputError
from edgemed.samples import samples_dir, shipped_model
from edgemed.zoo import build

CNN_SPEC = shipped_model("cnn_breastmnist")[1]["preprocess"]
CALIB = samples_dir("breastmnist")


@pytest.fixture(scope="module")
def cnn():
    weights, card = shipped_model("cnn_breastmnist")
    model = build("cnn", **card["arch_args"])
    model.load_state_dict(torch.load(weights, weights_only=True))
    return model.eval()


def _convert(src, out, **kw):
    args = dict(task="classification", input_shape=(1, 1, 28, 28), preprocess=CNN_SPEC, calib=CALIB,
                labels=("malignant", "benign_or_normal"))
    args.update(kw)
    return convert(src, out, **args)


def _no_partial(tmp_path):
    leftovers = [p.name for p in tmp_path.iterdir() if ".partial" in p.name]
    assert not leftovers, leftovers


def _check_bundle(path, model=None):
    b = Bundle.open(path)
    art = b.artifacts[0]
    assert art.drift.passed and art.drift.value("max_abs_diff") <= 1e-4
    with load(path) as pipe:
        ref = b.reference()
        out = pipe.engine.infer({"input": ref["inputs"][:1]})
        np.testing.assert_allclose(out[pipe.output_name], ref["outputs"][:1], atol=1e-4)
        if model is not None:
            with torch.no_grad():
                want = model(torch.from_numpy(ref["inputs"][:1])).numpy()
            np.testing.assert_allclose(out[pipe.output_name], want, atol=1e-4)
    return b


def test_state_dict_with_zoo_arch(tmp_path, cnn):
    b = _check_bundle(convert_state_dict(tmp_path), cnn)
    assert b.manifest.provenance.source_kind == "state_dict"
    assert b.manifest.input.shape[0] == "batch"
    assert json.loads((b.path / "report.json").read_text())["export"]["exporter"] == "dynamo"


def convert_state_dict(tmp_path):
    weights, card = shipped_model("cnn_breastmnist")
    return _convert(weights, tmp_path / "sd", arch="cnn", arch_args=card["arch_args"])


def test_torchscript_uses_named_fallback_exporter(tmp_path, cnn):
    src = tmp_path / "cnn.ts.pt"
    torch.jit.save(torch.jit.trace(cnn, torch.zeros(1, 1, 28, 28)), src)
    b = _check_bundle(_convert(src, tmp_path / "ts"), cnn)
    report = b.report()
    assert report["export"]["exporter"] == "torchscript"
    assert any("TorchScript" in n for n in report["export"]["notes"])


def test_torch_export_program(tmp_path, cnn):
    src = tmp_path / "cnn.pt2"
    torch.export.save(torch.export.export(cnn, (torch.zeros(1, 1, 28, 28),)), src)
    b = _check_bundle(_convert(src, tmp_path / "pt2"), cnn)
    assert b.manifest.provenance.source_kind == "torch.export"


def test_pickled_module_needs_allow_pickle(tmp_path, cnn):
    src = tmp_path / "whole.pt"
    torch.save(cnn, src)
    with pytest.raises(ConversionError, match="unpickling runs arbitrary code.*--allow-pickle"):
        _convert(src, tmp_path / "pk")
    _no_partial(tmp_path)
    assert not (tmp_path / "pk").exists()
    _check_bundle(_convert(src, tmp_path / "pk", allow_pickle=True), cnn)


def test_onnx_source_is_checked_against_onnx_reference_evaluator(tmp_path, cnn):
    src = tmp_path / "cnn.onnx"
    torch.onnx.export(cnn, (torch.zeros(1, 1, 28, 28),), src, dynamo=False, input_names=["image"],
                      output_names=["scores"], dynamic_axes={"image": {0: "n"}, "scores": {0: "n"}})
    b = _check_bundle_onnx(_convert(src, tmp_path / "onnx", input_shape=None))
    assert b.artifacts[0].drift.reference == "onnx.reference.ReferenceEvaluator"
    assert b.manifest.input.name == "image"


def _check_bundle_onnx(path):
    b = Bundle.open(path)
    assert b.artifacts[0].drift.passed
    with load(path) as pipe:
        r = pipe.predict(samples_dir("breastmnist") / "breastmnist_test_000.png")
        assert r.probabilities.shape == (2,)
    return b


def test_monai_unet_from_the_ecosystem(tmp_path, busi):
    from monai.networks.nets import UNet

    torch.manual_seed(0)  # random weights put two-class logits near ties; unseeded, a tie could land anywhere
    net = UNet(spatial_dims=2, in_channels=1, out_channels=2, channels=(8, 16, 32), strides=(2, 2),
               num_res_units=1).eval()
    src = tmp_path / "monai_unet.pt"
    torch.jit.save(torch.jit.script(net), src)
    out = convert(src, tmp_path / "monai", task="segmentation", input_shape=(1, 1, 96, 96),
                  calib=samples_dir("busi"), labels=("background", "lesion"))
    b = Bundle.open(out)
    assert b.artifacts[0].drift.value("max_abs_diff") <= 1e-4
    with load(out) as pipe:
        r = pipe.predict(busi["images"][400])
        assert r.mask.shape == (256, 256) and r.mask.dtype == np.uint8


def test_checkpoint_without_arch(tmp_path):
    weights, _ = shipped_model("cnn_breastmnist")
    with pytest.raises(ConversionError, match="state_dict.*--arch"):
        _convert(weights, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_wrong_arch_args(tmp_path):
    weights, _ = shipped_model("cnn_breastmnist")
    with pytest.raises(ConversionError, match="do not fit"):
        _convert(weights, tmp_path / "x", arch="cnn", arch_args={"width": 8})
    with pytest.raises(ConversionError, match="unknown architecture"):
        _convert(weights, tmp_path / "x", arch="resnet9000")
    _no_partial(tmp_path)


def test_unknown_file_type(tmp_path):
    src = tmp_path / "model.bin"
    src.write_bytes(b"GARBAGE" * 10)
    with pytest.raises(ConversionError, match="unknown model file type"):
        _convert(src, tmp_path / "x")


@pytest.mark.parametrize("shape,needle", [
    ((1, 1, 28), "not four integers"), ((1, 3, 28, 28), "fails on a probe|channel"), ((1, 1, 0, 28), "out of range"),
    ("1x1x28x28", "not four integers"),
])
def test_wrong_input_shape(tmp_path, shape, needle):
    weights, card = shipped_model("cnn_breastmnist")
    with pytest.raises(EdgemedError, match=needle):
        _convert(weights, tmp_path / "x", arch="cnn", arch_args=card["arch_args"], input_shape=shape,
                 preprocess=None)
    assert not (tmp_path / "x").exists()
    _no_partial(tmp_path)


def test_label_count_must_match_outputs(tmp_path):
    weights, card = shipped_model("cnn_breastmnist")
    with pytest.raises(InputError, match="names 3 classes but the model outputs 2"):
        _convert(weights, tmp_path / "x", arch="cnn", arch_args=card["arch_args"], labels=("a", "b", "c"))
    assert not (tmp_path / "x").exists()
    _no_partial(tmp_path)


def test_parity_failure_leaves_no_bundle_and_keeps_the_old_one(tmp_path, monkeypatch):
    weights, card = shipped_model("cnn_breastmnist")
    good = convert_state_dict(tmp_path)
    before = (good / "edgemed.json").read_bytes()

    import edgemed.converters.convert as conv

    real = conv.Reference.__call__

    def drifting(self, x):  # fault injection: an exporter that produced a subtly different model
        return real(self, x) + 0.01

    monkeypatch.setattr(conv.Reference, "__call__", drifting)
    with pytest.raises(ConversionError, match="differs from the source model"):
        _convert(weights, good, arch="cnn", arch_args=card["arch_args"], force=True)
    assert (good / "edgemed.json").read_bytes() == before
    _no_partial(tmp_path)


def test_existing_output_needs_force(tmp_path):
    good = convert_state_dict(tmp_path)
    weights, card = shipped_model("cnn_breastmnist")
    with pytest.raises(EdgemedError, match="--force"):
        _convert(weights, good, arch="cnn", arch_args=card["arch_args"])


def test_bad_preprocess_spec_refused_before_work(tmp_path):
    weights, card = shipped_model("cnn_breastmnist")
    with pytest.raises(InputError, match="unknown op"):
        _convert(weights, tmp_path / "x", arch="cnn", arch_args=card["arch_args"], preprocess=[{"op": "blur"}])
