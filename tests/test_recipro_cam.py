"""``convert --explain recipro-cam`` (issue 22): saliency for CNN classifiers of any head, baked into the graph as a
batched branch, on the shipped BreastMNIST classifier and real images.

Each deployed engine's map (ONNX Runtime FP32, OpenVINO FP32) must rank a frame's pixels as the same branch computed
in PyTorch does (the masked copies of the last convolution's feature map appended to the batch by a forward hook,
the class's softmax score per copy, min-max), mapped back onto the frame by the same geometry.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import edgemed
from edgemed.converters.recipro_cam import ReciproTarget, find_recipro_target, masks, run_with_branch
from edgemed.errors import BundleError, OptionError
from edgemed.explain.saliency import recipro_map, to_frame

from .conftest import SHARED, convert_shipped

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def recipro_bundle(tmp_path_factory):
    """FP32 on both CPU backends, calibrated and judged on 64 BreastMNIST train images (the maps are compared on test
    images and BUSI frames)."""
    folder = tmp_path_factory.mktemp("recipro")
    with np.load(SHARED / "breastmnist.npz") as d:
        np.savez(folder / "calib.npz", images=d["train_images"][:64])
    return convert_shipped("cnn_breastmnist", folder / "bundle", explain="recipro-cam", targets=("onnx", "openvino"),
                           precisions=("fp32",), calib=folder / "calib.npz")


def test_masks_are_the_kernel_around_each_location():
    m = masks(3, 4)
    assert m.shape == (12, 1, 3, 4) and m[5, 0, 1, 1] == 1.0 and m[5, 0, 0, 0] == 0.25 and m[5, 0, 1, 2] == 0.5
    assert m[0, 0, 0, 0] == 1.0 and m[0, 0, 2, 3] == 0.0  # cut at the borders
    assert [int(np.argmax(m[i, 0])) for i in range(12)] == list(range(12))


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_saliency_equals_the_branch_computed_in_pytorch(recipro_bundle, torch_cnn, breastmnist, busi, backend):
    manifest = json.loads((recipro_bundle / "edgemed.json").read_text())
    explain = manifest["explain"]
    assert explain["method"] == "recipro-cam" and explain["grid"] == [7, 7] and "head" not in explain
    k = dict(torch_cnn.named_modules())[explain["target_layer"]].out_channels
    target = ReciproTarget(explain["target_layer"], (k, 7, 7), 2)
    test = np.flatnonzero(busi["split"] == "test")
    frames = [breastmnist["test_images"][i] for i in range(4)] + [busi["images"][i] for i in test[:4]]
    with edgemed.load(recipro_bundle, backend=backend, precision="fp32") as pipe:
        for frame in frames:
            r = pipe.predict(frame)
            prepared = pipe.prepare(frame)
            logits, copies = run_with_branch(torch_cnn, target, prepared.tensor)
            assert int(np.argmax(logits[0])) == r.index
            hand = to_frame(recipro_map(copies[0], r.index, target.grid), prepared.tensor.shape[2:],
                            prepared.geometry)
            assert r.saliency.shape == frame.shape[:2] and 0.0 <= r.saliency.min() and r.saliency.max() <= 1.0
            from scipy.stats import spearmanr

            assert spearmanr(hand.ravel(), r.saliency.ravel()).statistic >= 0.99


def test_convert_records_the_sanity_check_and_gates_the_maps(recipro_bundle):
    report = json.loads((recipro_bundle / "report.json").read_text())["explain"]
    assert report["method"] == "recipro-cam" and report["masks"] == 49
    assert report["sanity"]["passed"] is True and report["sanity"]["cases"] >= 16
    manifest = json.loads((recipro_bundle / "edgemed.json").read_text())
    ov = next(a for a in manifest["artifacts"] if a["backend"] == "openvino")
    assert ov["drift"]["metrics"]["saliency_rank"]["value"] > 0.999  # FP32 on another backend: the same maps


def test_models_the_branch_cannot_serve_are_refused_in_one_line(torch_cnn):
    from torch import nn

    class NoConv(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(28 * 28, 2)

        def forward(self, x):
            return self.fc(x.flatten(1))

    class BatchFromInput(nn.Module):  # reshapes by the input's batch size: the appended copies would be mixed up
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4 * 28 * 28, 2)

        def forward(self, x):
            n = x.shape[0]
            return self.fc(self.conv(x).reshape(n, -1)[:n])

    for module, needle in ((NoConv(), "runs no Conv2d"), (BatchFromInput(), "no longer gives its own logits")):
        with pytest.raises(OptionError) as err:
            find_recipro_target(module.eval(), (1, 1, 28, 28), "state_dict")
        assert needle in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(OptionError, match="torchscript source cannot be inspected"):
        find_recipro_target(torch.jit.script(torch_cnn), (1, 1, 28, 28), "torchscript")


def test_the_explanation_record_is_checked(recipro_bundle, tmp_path):
    import shutil

    bad = tmp_path / "b"
    shutil.copytree(recipro_bundle, bad)
    original = json.loads((recipro_bundle / "edgemed.json").read_text())
    for change, needle in (({"grid": None}, "grid"), ({"grid": [6, 7]}, "does not fit the output"),
                           ({"method": "cam"}, "head")):
        broken = json.loads(json.dumps(original))
        broken["explain"].update(change)
        (bad / "edgemed.json").write_text(json.dumps(broken))
        with pytest.raises(BundleError, match=needle):
            edgemed.load(bad)


def test_a_cam_bundle_and_a_recipro_bundle_of_one_model_point_alike(recipro_bundle, cnn_cam_bundle, busi):
    """Two methods, one model: on BUSI frames with a lesion both maps' peaks fall in the same region more often than
    not (they answer the same question differently; neither is the truth)."""
    test = np.flatnonzero(busi["split"] == "test")[:12]
    agree = 0
    with edgemed.load(recipro_bundle) as rp, edgemed.load(cnn_cam_bundle, backend="onnxruntime",
                                                          precision="fp32") as cp:
        for i in test:
            a, b = rp.predict(busi["images"][i]).saliency, cp.predict(busi["images"][i]).saliency
            top_a, top_b = a >= np.quantile(a, 0.8), b >= np.quantile(b, 0.8)
            agree += (top_a & top_b).sum() / max(1, top_a.sum()) > 0.2
    assert agree >= 6, agree
