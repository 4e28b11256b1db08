"""Shared fixtures: the real data in ../shared/data and bundles of the shipped models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgemed.samples import samples_dir, shipped_model

from .fuzz.harness import register_profiles

register_profiles()  # here, not in tests/fuzz: --hypothesis-profile is read before that conftest is imported

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DICOM = SHARED / "dicom"


STUDIES = ROOT / "benchmarks" / "studies"


def study(name: str):
    """A stand-alone study of ``benchmarks/studies`` (run as files, never installed), imported as
    ``python benchmarks/studies/NAME.py`` runs it: with its folder first on the path."""
    import importlib
    import sys

    if str(STUDIES) not in sys.path:
        sys.path.insert(0, str(STUDIES))
    return importlib.import_module(name)


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on loopback right now (for servers a test starts)."""
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def pytest_report_header(config):
    from .fuzz.harness import active_profile

    seeds = ("seeds fixed by each test's code (derandomize)" if active_profile() == "ci" else
             "random seeds, printed with any failure")
    return [f"shared data: {SHARED} ({'present' if SHARED.is_dir() else 'MISSING'})",
            f"fuzz (-m fuzz): hypothesis profile {active_profile()!r}, {seeds}"]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"the real data is missing at {SHARED}; the project expects ../shared/data beside it")
    return SHARED


@pytest.fixture(scope="session")
def busi(shared_data):
    with np.load(shared_data / "busi_256.npz") as d:
        return {k: d[k] for k in d.files}


@pytest.fixture(scope="session")
def breastmnist(shared_data):
    with np.load(shared_data / "breastmnist.npz") as d:
        return {k: d[k] for k in d.files}


def convert_shipped(name: str, out: Path, **overrides) -> Path:
    """A shipped model converted with its card's settings; ``overrides`` are ConvertOptions fields."""
    from edgemed.converters.convert import convert

    weights, card = shipped_model(name)
    calib = samples_dir("breastmnist" if card["task"] == "classification" else "busi")
    kwargs = dict(task=card["task"], input_shape=tuple(card["input_shape"]), arch=card["arch"],
                  arch_args=card["arch_args"], labels=tuple(card["labels"]), preprocess=tuple(card["preprocess"]),
                  calib=calib, name=name)
    kwargs.update(overrides)
    return convert(weights, out, **kwargs)


def convert_ecg_fp32(out: Path, windows: int = 48, **overrides) -> Path:
    """The shipped 1-D CNN beat classifier as one FP32 ONNX Runtime artifact, calibrated and judged on ``windows``
    evenly spaced beats of the shipped DS1 set (FP32 is judged by parity, which needs no more): what a test of a
    signal entry point needs, in a third of the time the whole 1,000-beat set takes; ``overrides`` are
    ConvertOptions fields."""
    import json

    from edgemed.converters.convert import convert
    from edgemed.samples import assets_dir, calibration_set
    from edgemed.signal_sets import SignalSet

    card = json.loads((assets_dir() / "ecg_cnn.json").read_text())
    out.parent.mkdir(parents=True, exist_ok=True)
    beats = out.parent / f"{out.name}_beats.npz"
    SignalSet.open(calibration_set("classification", "signal")).save(beats, windows)
    kwargs = dict(task="classification", input_kind="signal", input_shape=tuple(card["input_shape"]),
                  arch=card["arch"], arch_args=card["arch_args"], labels=tuple(card["labels"]),
                  preprocess=tuple(card["preprocess"]), calib=beats, targets=("onnx",), precisions=("fp32",))
    return convert(assets_dir() / "ecg_cnn.pt", out, **{**kwargs, **overrides})


@pytest.fixture(scope="session")
def rr_bundle(tmp_path_factory) -> Path:
    """ecg_rr (a beat window and its RR intervals), FP32 on both CPU backends; calibrated on 200 DS1 beats, its
    parity and verdict taken on 600 DS2 beats of every class (patients it never saw), each with the RR intervals of
    its record's annotated beats."""
    from edgemed.converters.convert import convert
    from edgemed.rr_intervals import RR_FEATURES
    from edgemed.samples import assets_dir, calibration_set, ecg_beats
    from edgemed.signal_sets import SignalSet

    card = json.loads((assets_dir() / "ecg_rr.json").read_text())
    tmp = tmp_path_factory.mktemp("rr")
    SignalSet.open(calibration_set("classification", "signal")).subset(200).save(tmp / "ds1.npz")
    SignalSet.open(ecg_beats()).subset(600).save(tmp / "ds2.npz")
    return convert(assets_dir() / "ecg_rr.pt", tmp / "bundle", task="classification", input_kind="signal",
                   input_shape=tuple(card["input_shape"]), arch=card["arch"], arch_args=card["arch_args"],
                   labels=tuple(card["labels"]), preprocess=tuple(card["preprocess"]), features=(("rr", RR_FEATURES),),
                   calib=tmp / "ds1.npz", eval=tmp / "ds2.npz", targets=("onnx", "openvino"), precisions=("fp32",))


@pytest.fixture(scope="session")
def unet_bundle(tmp_path_factory) -> Path:
    return convert_shipped("unet_busi", tmp_path_factory.mktemp("bundles") / "unet_busi")


@pytest.fixture(scope="session")
def cnn_bundle(tmp_path_factory) -> Path:
    return convert_shipped("cnn_breastmnist", tmp_path_factory.mktemp("bundles") / "cnn_breastmnist")


@pytest.fixture(scope="session")
def cnn_seed1(tmp_path_factory) -> Path:
    """The shipped classifier retrained with seed 1 (tests/fixtures/ensemble), as an FP32 ONNX bundle (~4 s)."""
    from edgemed.converters.convert import convert
    from edgemed.samples import samples_dir

    fixtures = Path(__file__).parent / "fixtures" / "ensemble"
    card = json.loads((fixtures / "cnn_breastmnist_seed1.json").read_text())
    return convert(fixtures / "cnn_breastmnist_seed1.pt", tmp_path_factory.mktemp("bundles") / "cnn_seed1",
                   task=card["task"], input_shape=tuple(card["input_shape"]), arch=card["arch"],
                   arch_args=card["arch_args"], labels=tuple(card["labels"]), preprocess=tuple(card["preprocess"]),
                   calib=samples_dir("breastmnist"), name=card["name"])


@pytest.fixture(scope="session")
def cnn_pair(cnn_bundle, cnn_seed1, tmp_path_factory) -> Path:
    """Two differently trained shipped-type classifiers with hflip, as one ensemble (its combination gated)."""
    from edgemed.ensemble import make_ensemble

    return make_ensemble([cnn_bundle, cnn_seed1], tmp_path_factory.mktemp("ensembles") / "cnn_pair", tta="hflip")


@pytest.fixture(scope="session")
def torch_cnn():
    """The shipped BreastMNIST classifier as a PyTorch module (eval mode): what maps are computed by hand from."""
    import torch

    from edgemed.zoo import build

    weights, card = shipped_model("cnn_breastmnist")
    model = build(card["arch"], **card["arch_args"])
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


@pytest.fixture(scope="session")
def det_fp32(tmp_path_factory) -> Path:
    """The shipped BUSI detector as one FP32 ONNX Runtime artifact (NMS on the host), calibrated on the shipped
    240 train frames: one conversion for every test that needs a detector bundle and nothing more (each made its
    own: 10-30 s apiece)."""
    from edgemed.samples import calibration_set

    return convert_shipped("det_busi", tmp_path_factory.mktemp("bundles") / "det_fp32",
                           calib=calibration_set("detection"), targets=("onnx",), precisions=("fp32",))


@pytest.fixture(scope="session")
def cnn_cam_bundle(tmp_path_factory) -> Path:
    """The shipped classifier converted with --explain cam, as ORT and OpenVINO FP32 and INT8, calibrated and judged
    on the first 96 BreastMNIST train images (the saliency tests measure on test images)."""
    folder = tmp_path_factory.mktemp("bundles")
    with np.load(SHARED / "breastmnist.npz") as d:
        np.savez(folder / "calib.npz", images=d["train_images"][:96])
    return convert_shipped("cnn_breastmnist", folder / "cnn_cam", explain="cam", targets=("onnx", "openvino"),
                           precisions=("fp32", "int8"), calib=folder / "calib.npz")


@pytest.fixture(scope="session")
def cnn_bundle_all(tmp_path_factory) -> Path:
    """The shipped classifier as every ORT and OpenVINO artifact, calibrated on BreastMNIST train images."""
    return convert_shipped("cnn_breastmnist", tmp_path_factory.mktemp("bundles") / "cnn_all",
                           targets=("onnx", "openvino"), precisions=("fp32", "fp16", "int8"),
                           calib=SHARED / "breastmnist.npz", calib_key="train_images")
