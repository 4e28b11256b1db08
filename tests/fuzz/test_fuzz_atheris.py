"""Coverage-guided runs (Atheris) over the DICOM reader and the manifest parser, bounded by runs and time: see
atheris_targets.py. Skipped, saying so, where atheris does not install (it ships wheels for CPython on Linux and
macOS; elsewhere Hypothesis covers the same readers in test_fuzz_predict.py and test_fuzz_bundle.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import DICOM
from .harness import PROFILES, active_profile, count

pytestmark = [pytest.mark.fuzz, pytest.mark.skipif(
    subprocess.run([sys.executable, "-c", "import atheris"], capture_output=True).returncode != 0,
    reason="atheris is not installed (pip install atheris; the dev extra has it)")]
TARGETS = Path(__file__).with_name("atheris_targets.py")
RUNS = {"dicom": 700, "manifest": 2000}  # per CI run (x the profile's multiplier); 6-12 s each here, mostly start-up


def _seeds(name: str, cnn_bundle: Path, folder: Path) -> Path:
    folder.mkdir()
    if name == "dicom":
        for p in ("CT_small.dcm", "MR_small.dcm", "liver_1frame.dcm", "ExplVR_BigEnd.dcm"):
            shutil.copy(DICOM / p, folder / p)
    else:
        shutil.copy(cnn_bundle / "edgemed.json", folder / "edgemed.json")
    return folder


@pytest.mark.parametrize("name", sorted(RUNS))
def test_coverage_guided(name, cnn_bundle, shared_data, tmp_path):
    seeds = _seeds(name, cnn_bundle, tmp_path / "seeds")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    runs = RUNS[name] * PROFILES[active_profile()]
    # seed=1: libFuzzer's mutations are reproducible run to run in CI, as Hypothesis' are (derandomize)
    cmd = [sys.executable, str(TARGETS), name, f"-runs={runs}", f"-max_total_time={runs // 50}", "-seed=1",
           "-timeout=20", "-rss_limit_mb=3072", "-max_len=400000", f"-artifact_prefix={tmp_path}/",
           str(corpus), str(seeds)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=runs // 50 + 120)
    done = re.findall(r"Done (\d+) runs", proc.stderr)
    crashes = sorted(p.name for p in tmp_path.glob("crash-*")) + sorted(p.name for p in tmp_path.glob("timeout-*"))
    assert proc.returncode == 0 and not crashes, (crashes, proc.stderr[-4000:])
    for _ in range(int(done[-1]) if done else 0):
        count(f"atheris ({name})", "run")
