"""What bench and load do with verdicts and data: never an unproven artifact, never someone else's data."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from torch import nn

from edgemed import load
from edgemed.benchmarks.run import run_bench
from edgemed.converters.convert import convert
from edgemed.errors import DeviceNotFound, NoEligibleArtifact
from edgemed.samples import samples_dir

from .conftest import SHARED
from .test_manifest import V1


@pytest.fixture(scope="module")
def users_model(tmp_path_factory, breastmnist):
    """A user's own classifier (not one of edgemed's shipped models), converted on their own images."""
    d = tmp_path_factory.mktemp("user")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 2)).eval()
    torch.jit.save(torch.jit.trace(model, torch.zeros(1, 1, 28, 28)), d / "mine.pt")
    np.savez(d / "mine.npz", images=breastmnist["train_images"][:200])
    bundle = convert(d / "mine.pt", d / "bundle", task="classification", input_shape=(1, 1, 28, 28),
                     labels=("normal", "pneumonia"), calib=d / "mine.npz")
    return bundle, d / "mine.npz"


def test_bench_without_data_uses_the_bundle_s_own_held_out_images_and_no_labels(users_model, tmp_path):
    bundle, data = users_model
    report = run_bench(bundle, runs=10, warmup=1)
    assert "held-out verdict images" in report["data"]["from"] and "hash checked" in report["data"]["from"]
    assert report["data"]["labels"] is False and "accuracy" not in report["artifacts"][0]
    assert report["data"]["images"] == 200 - 100 - 25  # all verdict images: half calibrate, a quarter of the rest tune
    moved = tmp_path / "b"
    shutil.copytree(bundle, moved)
    data.rename(tmp_path / "gone.npz")  # the user's images moved away: the frames stored in the bundle remain
    try:
        report = run_bench(moved, runs=10, warmup=1)
    finally:
        (tmp_path / "gone.npz").rename(data)
    assert "stored in the bundle" in report["data"]["from"] and report["data"]["images"] == 32


def test_bench_on_data_means_all_of_it_and_limit_says_so(cnn_bundle, breastmnist, tmp_path):
    images = np.concatenate([breastmnist["train_images"], breastmnist["test_images"]])
    labels = np.concatenate([breastmnist["train_labels"], breastmnist["test_labels"]])
    np.savez(tmp_path / "d.npz", images=images, labels=labels)
    report = run_bench(cnn_bundle, data=tmp_path / "d.npz", runs=10, warmup=1)
    acc = report["artifacts"][0]["accuracy"]
    assert report["data"]["images"] == acc["cases"] == len(images) == 702  # no silent subset
    assert acc["accuracy_interval"]["low"] < acc["accuracy"] < acc["accuracy_interval"]["high"]
    limited = run_bench(cnn_bundle, data=tmp_path / "d.npz", runs=10, warmup=1, limit=50)
    assert limited["data"]["images"] == 50 and "--limit: 50 of 702" in limited["data"]["from"]


def test_a_missing_device_is_said_before_any_data_is_read(cnn_bundle, tmp_path):
    with pytest.raises(DeviceNotFound, match="no Jetson was detected"):
        run_bench(cnn_bundle, device="jetson", data=tmp_path / "does-not-exist.npz")


def test_schema_1_passes_on_a_handful_of_cases_are_not_certificates():
    with pytest.raises(NoEligibleArtifact, match=r"onnxruntime/int8 \(uncertified\)"):
        load(V1, backend="onnxruntime", precision="int8")
    with load(V1, backend="onnxruntime", precision="int8", accept="uncertified") as pipe:
        d = pipe.describe()
        assert d["verdict"] == "uncertified" and "ACCEPTED" in d["reason"]
        assert pipe.predict(samples_dir("breastmnist") / "breastmnist_test_000.png").label


def test_accepting_needs_the_exact_artifact(cnn_bundle):
    from edgemed.errors import OptionError

    with pytest.raises(OptionError, match="needs the exact artifact"):
        load(cnn_bundle, precision="int8", accept="uncertified")


def test_a_labelled_validation_set_gates_clinically(tmp_path):
    """--val/--val-labels: accuracy and per-class sensitivity of each artifact beside FP32, paired."""
    from .conftest import convert_shipped

    out = convert_shipped("cnn_breastmnist", tmp_path / "b", targets=("onnx",), precisions=("fp32", "fp16"),
                          calib=SHARED / "breastmnist.npz", calib_key="train_images", val=SHARED / "breastmnist.npz",
                          val_key="test_images", val_labels=SHARED / "breastmnist.npz")
    from edgemed.bundle import Bundle

    fp16 = Bundle.open(out).manifest.artifact("onnxruntime", "fp16")
    tests = fp16.clinical.tests
    assert set(tests) == {"accuracy", "sensitivity[malignant]", "sensitivity[benign_or_normal]"}
    acc = tests["accuracy"]
    assert acc.cases == 156 and abs(acc.fp32 - 0.859) < 0.02 and acc.p_mcnemar is not None
    assert fp16.clinical.verdict in ("passed", "uncertified") and fp16.clinical.margin == 0.005
