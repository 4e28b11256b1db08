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
    assert "3 kept, 0 broken" in proc.stdout


CYCLE_CHECK = """
import graphlib, sys
import grimp
packages = set(sys.argv[1:])
graph = grimp.build_graph("edgemed", cache_dir=None)
assert "edgemed.converters.convert" in graph.modules, "grimp walked another copy of edgemed"
modules = {m for m in graph.modules if m not in packages}
edges = {m: {d for d in graph.find_modules_directly_imported_by(m) if d in modules} for m in modules}
try:
    graphlib.TopologicalSorter(edges).prepare()
except graphlib.CycleError as exc:
    sys.exit("import cycle: " + " -> ".join(exc.args[1]))
print(len(modules), "modules, no cycle")
"""


def test_no_import_cycle_between_modules(tmp_path):
    """No file reaches a file that reaches back, not even through an import inside a function (issue 19: datasets
    and signal_sets, preprocess and signal_preprocess, bundle, certification and signing did). Packages' own
    ``__init__`` are left out: a module importing its package (for ``__version__``) is not a cycle of code. Run in
    a child process on the installed layout, as import-linter is (grimp builds the graph of both)."""
    pytest.importorskip("grimp")
    site = tmp_path / "site"
    _installed_layout(site)
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    proc = subprocess.run([sys.executable, "-c", CYCLE_CHECK, *packages], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "no cycle" in proc.stdout


def test_every_installed_module_imports():
    """A module moved out of the package (the studies now run as files) must take no installed importer with it."""
    import importlib
    import pkgutil

    broken = []
    for package in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]:
        for module in pkgutil.iter_modules(importlib.import_module(package).__path__, package + "."):
            if module.ispkg or module.name.endswith("__main__"):
                continue
            try:
                importlib.import_module(module.name)
            except ImportError as exc:
                broken.append(f"{module.name}: {exc}")
    assert not broken, broken
