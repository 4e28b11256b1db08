"""Speed and memory targets, kept out of the unit tests because a shared, loaded machine decides them as much as
the code does. Run them on a quiet machine:

    .venv/bin/python -m pytest benchmarks/suites/test_targets.py
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import SHARED


@pytest.fixture(scope="module")
def busi():
    with np.load(SHARED / "busi_256.npz") as d:
        return {k: d[k] for k in d.files}


def test_shipped_unet_streams_30_fps_without_deadline_misses(tmp_path, busi):
    """The shipped U-Net is sized for point-of-care on a 2-core machine (end to end, batch 1), measured the way
    scanner software runs it: a process of its own."""
    from tests.conftest import convert_shipped

    bundle = convert_shipped("unet_busi", tmp_path / "unet", targets=("onnx",), precisions=("fp32",))
    subprocess.run([sys.executable, "-m", "edgemed.cli", "bench", str(bundle), "--scenario", "point-of-care",
                    "--fps", "30", "--duration", "5", "--runs", "20", "--warmup", "5", "--no-history", "--json",
                    str(tmp_path / "poc.json")], check=True, capture_output=True, text=True, timeout=600)
    (art,) = json.loads((tmp_path / "poc.json").read_text())["artifacts"]
    result = art["point_of_care"]
    assert result["frames"] == 150 and result["dropped"] == 0 and result["deadline_misses"] == 0, result


def test_int8_fallback_at_1024x1024_runs_under_4_gib(tmp_path, busi):
    """A mammogram-class frame through the whole INT8 fallback ladder under a hard 4 GiB address-space limit."""
    from tests.test_convert_memory import convert_under_limit

    convert_under_limit(tmp_path, busi, (1024, 1024), base=4, calib=64, limit_gib=4)
