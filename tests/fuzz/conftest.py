"""Fixtures the fuzz tests share (an ECG beat bundle, loaded pipelines) and the end-of-run case count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import edgemed

from . import harness


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    lines = harness.summary_lines()
    if lines:
        terminalreporter.section("fuzz cases per entry point")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def ecg_bundle(tmp_path_factory) -> Path:
    """The shipped 1-D CNN beat classifier, FP32 ONNX Runtime only (what a signal entry point needs)."""
    from edgemed.converters.convert import convert
    from edgemed.samples import assets_dir, calibration_set

    card = json.loads((assets_dir() / "ecg_cnn.json").read_text())
    return convert(assets_dir() / "ecg_cnn.pt", tmp_path_factory.mktemp("fuzz-bundles") / "ecg_cnn",
                   task="classification", input_kind="signal", input_shape=tuple(card["input_shape"]),
                   arch=card["arch"], arch_args=card["arch_args"], labels=tuple(card["labels"]),
                   preprocess=tuple(card["preprocess"]), calib=calibration_set("classification", "signal"),
                   targets=("onnx",), precisions=("fp32",))


@pytest.fixture(scope="session")
def cnn_pipe(cnn_bundle):
    with edgemed.load(cnn_bundle) as pipe:
        yield pipe


@pytest.fixture(scope="session")
def unet_pipe(unet_bundle):
    with edgemed.load(unet_bundle) as pipe:
        yield pipe


@pytest.fixture(scope="session")
def ecg_pipe(ecg_bundle):
    with edgemed.load(ecg_bundle) as pipe:
        yield pipe
