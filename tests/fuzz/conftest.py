"""Fixtures the fuzz tests share (an ECG beat bundle, loaded pipelines) and the end-of-run case count."""

from __future__ import annotations

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
    from ..conftest import convert_ecg_fp32

    return convert_ecg_fp32(tmp_path_factory.mktemp("fuzz-bundles") / "ecg_cnn")


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
