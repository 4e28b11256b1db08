"""Bundles for the pytest-benchmark suites: the shipped models in every ORT/OpenVINO precision.

Run:  .venv/bin/python -m pytest benchmarks --benchmark-enable --benchmark-group-by=group
"""

from __future__ import annotations

import pytest

from edgemed.converters.convert import convert
from edgemed.samples import calibration_set, shipped_model


def _bundle(name: str, where):
    weights, card = shipped_model(name)
    return convert(weights, where / name, task=card["task"], input_shape=tuple(card["input_shape"]),
                   arch=card["arch"], arch_args=card["arch_args"], labels=tuple(card["labels"]),
                   preprocess=tuple(card["preprocess"]), calib=calibration_set(card["task"]),
                   targets=("onnx", "openvino"), precisions=("fp32", "int8"))


@pytest.fixture(scope="session", params=["unet_busi", "cnn_breastmnist"])
def bundle(request, tmp_path_factory):
    return _bundle(request.param, tmp_path_factory.mktemp("bench"))
