"""The package's layers hold (.importlinter): the runtime path imports neither torch nor onnx nor the conversion
side, and nothing low in the stack imports what sits above it. Checked on an installed copy of the package,
because the editable install maps edgemed's subpackages from separate top-level folders (the design card's
layout), which import-linter's graph builder cannot walk."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept(tmp_path):
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(site), str(ROOT)], check=True, capture_output=True, text=True, timeout=600)
    proc = subprocess.run([lint, "--config", str(ROOT / ".importlinter"), "--no-cache"], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "2 kept, 0 broken" in proc.stdout
