"""The package's layers hold (.importlinter): the runtime path imports neither torch nor onnx nor the conversion
side, and nothing low in the stack imports what sits above it. Checked on a copy of the package's modules laid
out as installed (pyproject's package-dir), because the editable install maps edgemed's subpackages from separate
top-level folders (the design card's layout), which import-linter's graph builder cannot walk."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]


def _installed_layout(site: Path) -> None:
    """The package's Python files where an install puts them: ``edgemed.converters`` from ``converters/``, …"""
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for package in setup["packages"]:
        source = ROOT / setup["package-dir"][package]
        target = site.joinpath(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for module in source.glob("*.py"):
            shutil.copy2(module, target / module.name)


def test_import_contracts_are_kept(tmp_path):
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    site = tmp_path / "site"
    _installed_layout(site)
    proc = subprocess.run([lint, "--config", str(ROOT / ".importlinter"), "--no-cache"], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "2 kept, 0 broken" in proc.stdout
