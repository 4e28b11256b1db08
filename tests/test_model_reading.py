"""What convert reads from a model: its outputs' kind, which output, its mode, and its preprocessing.

Each of these was once taken silently and gave wrong answers (issue: "what a new user hit").
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from edgemed import load
from edgemed.converters.convert import convert
from edgemed.errors import ConversionError, OptionError
from edgemed.samples import samples_dir

CALIB = samples_dir("breastmnist")


def _save(module: nn.Module, path, shape=(1, 1, 28, 28)):
    torch.jit.save(torch.jit.trace(module, torch.zeros(*shape)), path)
    return path


def _classifier(head: nn.Module | None = None, classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, classes)]
    return nn.Sequential(*layers, *([head] if head is not None else [])).eval()


def _frame():
    return np.asarray(__import__("PIL").Image.open(CALIB / "breastmnist_test_000.png"))


def test_a_model_ending_in_softmax_is_not_softmaxed_again(tmp_path):
    model = _classifier(nn.Softmax(dim=1))
    out = convert(_save(model, tmp_path / "m.pt"), tmp_path / "b", task="classification", input_shape=(1, 1, 28, 28),
                  labels=("a", "b", "c"), calib=CALIB)
    with load(out) as pipe:
        assert pipe.output_kind == "probabilities"
        frame = _frame()
        with torch.no_grad():
            want = model(torch.from_numpy(pipe.prepare(frame).tensor)).numpy()[0]
        np.testing.assert_allclose(pipe.predict(frame).probabilities, want, atol=1e-5)
    report = json.loads((out / "report.json").read_text())
    assert "ends in Softmax" in report["reading"]["outputs"]


def test_a_single_sigmoid_output_gives_two_class_probabilities(tmp_path):
    model = _classifier(nn.Sigmoid(), classes=1)
    out = convert(_save(model, tmp_path / "m.pt"), tmp_path / "b", task="classification", input_shape=(1, 1, 28, 28),
                  labels=("negative", "positive"), calib=CALIB)
    with load(out) as pipe:
        frame = _frame()
        with torch.no_grad():
            p = float(model(torch.from_numpy(pipe.prepare(frame).tensor))[0, 0])
        np.testing.assert_allclose(pipe.predict(frame).probabilities, [1 - p, p], atol=1e-5)


def test_an_output_kind_that_contradicts_the_model_is_refused(tmp_path):
    src = _save(_classifier(nn.Softmax(dim=1)), tmp_path / "m.pt")
    with pytest.raises(OptionError, match="--output-kind logits contradicts the model: the model ends in Softmax"):
        convert(src, tmp_path / "b", task="classification", input_shape=(1, 1, 28, 28), labels=("a", "b", "c"),
                calib=CALIB, output_kind="logits")
    assert not (tmp_path / "b").exists()


class _TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten())
        self.aux, self.cls = nn.Linear(4 * 26 * 26, 5), nn.Linear(4 * 26 * 26, 2)

    def forward(self, x):
        h = self.body(x)
        return self.aux(h), self.cls(h)


def test_a_model_with_two_outputs_must_say_which_one(tmp_path):
    model = _TwoHeads().eval()
    src = _save(model, tmp_path / "m.pt")
    with pytest.raises(OptionError, match="the model has 2 outputs .*choose .*--output NAME"):
        convert(src, tmp_path / "b", task="classification", input_shape=(1, 1, 28, 28), calib=CALIB)
    import onnx

    names = None
    try:
        convert(src, tmp_path / "b", task="classification", input_shape=(1, 1, 28, 28), calib=CALIB, output="nope")
    except OptionError as exc:
        names = str(exc).split("it has ")[1].split(")")[0].split(", ")
    assert names and len(names) == 2
    out = convert(src, tmp_path / "b", task="classification", input_shape=(1, 1, 28, 28), calib=CALIB,
                  output=names[1], labels=("benign", "malignant"))
    with load(out) as pipe:
        frame = _frame()
        with torch.no_grad():
            want = torch.softmax(model(torch.from_numpy(pipe.prepare(frame).tensor))[1], 1).numpy()[0]
        np.testing.assert_allclose(pipe.predict(frame).probabilities, want, atol=1e-5)
    assert len(onnx.load(str(out / "model.onnx")).graph.output) == 2  # the model is kept whole


@pytest.mark.parametrize("layer,needle", [(nn.BatchNorm2d(4), "BatchNormalization"), (nn.Dropout(0.5), "Dropout")])
def test_a_model_saved_in_training_mode_is_refused(tmp_path, layer, needle):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), layer, nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 2))
    model.train()  # traced before .eval(): the trace keeps training-mode behaviour
    src = _save(model, tmp_path / "m.pt", shape=(2, 1, 28, 28))
    with pytest.raises(ConversionError, match=f"{needle} node .* is in training mode.*call model.eval()"):
        convert(src, tmp_path / "b", task="classification", input_shape=(1, 1, 28, 28), calib=CALIB)
    assert not (tmp_path / "b").exists()


def test_the_default_preprocessing_is_announced_and_does_not_rescale_each_image(tmp_path):
    """A segmenter trained on /255 inputs sees a dark frame as dark, and convert says what it recorded."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 1)).eval()
    src = _save(model, tmp_path / "seg.pt", shape=(1, 1, 64, 64))
    lines: list[str] = []
    out = convert(src, tmp_path / "b", task="segmentation", input_shape=(1, 1, 64, 64),
                  calib=samples_dir("busi"), log=lines.append)
    assert any("default was recorded" in line and "scale factor=0.0039" in line for line in lines), lines
    dark = (np.asarray(__import__("PIL").Image.open(sorted(samples_dir("busi").glob("*.png"))[0])) * 0.4
            ).astype(np.uint8)  # values 0-100
    with load(out) as pipe:
        ops = [o["op"] for o in pipe.bundle.manifest.preprocess]
        assert "minmax" not in ops and ops[-1] == "scale"
        x = pipe.prepare(dark).tensor
        assert 0 <= x.min() and x.max() <= 100 / 255 + 1e-6  # dark stays dark, as in training


def test_the_int8_fallback_ranks_layers_by_their_own_quantization_noise(tmp_path):
    """The shipped U-Net's layers once all scored 1.8-3.2 dB (a fused ReLU compared against its input);
    measured on what the quantized layer really outputs, they score tens of dB, worst first."""
    from edgemed.bundle import Bundle
    from edgemed.gate.verdict import Budget
    from edgemed.samples import calibration_set

    from .conftest import convert_shipped

    out = convert_shipped("unet_busi", tmp_path / "u", precisions=("fp32", "int8"),
                          calib=calibration_set("segmentation"),
                          budget=Budget.parse("dice>=0.9999", "segmentation"))  # strict enough to rank layers
    int8 = Bundle.open(out).manifest.artifact("onnxruntime", "int8")
    sqnr = [db for _, db in int8.build.layer_sqnr_db]
    assert sqnr and min(sqnr) > 15 and sqnr == sorted(sqnr), sqnr
