"""An execution environment for the Python-backend export, so a stock Triton image runs it without a custom build.

Triton's Python backend runs a model's ``model.py`` in the image's own Python unless the model's
config names ``EXECUTION_ENV_PATH``: then it sources that environment's ``bin/activate`` and starts its
stub there, so the model imports what the environment holds. The stock image's Python has numpy and
nothing else; this module writes, beside each exported model, an environment with edgemed's runtime
packages (copied from this installation: pure Python) and the libraries the chosen artifact needs,
installed by pip *for the image's Python and platform* (``--python-version``, ``--platform``,
binary wheels only), so it can be built on any machine. Versions are pinned to this environment's,
where the bundle was made and judged: Pillow's resampling and the engine's kernels are part of the
answer (Pillow 13 changed the order of its resize passes).

The environment is a venv-shaped folder (``pyvenv.cfg`` pointing at the image's interpreter, an
``activate`` that finds its own folder, ``lib/pythonX.Y/site-packages``), not a relocatable
interpreter: it needs the image's Python of that version at ``home`` (``/usr/bin`` in NVIDIA's
images), which is what the stub is built for anyway.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

from ..backends import BACKENDS
from ..errors import EdgemedError, InputError

ENV_DIR = "edgemed_env"
# edgemed's packages the runtime path imports (the converters, benchmarks and zoo are the torch side); a package
# `import edgemed` reaches but this list lacks fails the served model at start (tests/test_triton_export.py)
RUNTIME_PACKAGES = ("edgemed", "edgemed.runtimes", "edgemed.devices", "edgemed.fleet", "edgemed.ensemble",
                    "edgemed.tasks", "edgemed.io", "edgemed.measures", "edgemed.gate", "edgemed.serve",
                    "edgemed.explain", "edgemed.pacs")
# The Triton wheel this project serves with pins numpy<2, and a stub built against numpy 1 answers empty tensors
# under numpy 2 (edgemed.serve.triton_server.check_numpy): the environment keeps numpy 1.
NUMPY = "numpy<2"

ACTIVATE = """# written by edgemed export triton --pack-env: sourced by Triton's Python backend before its stub starts
VIRTUAL_ENV="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
export VIRTUAL_ENV
PATH="$VIRTUAL_ENV/bin:$PATH"
export PATH
unset PYTHONHOME
"""


def _pinned(names: tuple[str, ...]) -> list[str]:
    """``name==version`` as installed here, where the bundle was made and judged (bare name if absent)."""
    out = []
    for name in names:
        try:
            out.append(f"{name}=={md.version(name)}")
        except md.PackageNotFoundError:
            out.append(name)
    return out


def requirements(backends: set[str]) -> list[str]:
    pins = _pinned(("pillow", "msgspec"))
    for backend in sorted(backends):
        if backend not in BACKENDS:
            raise InputError(f"no Python package serves {backend} artifacts", "export another artifact")
        pins += _pinned((BACKENDS[backend].package,))
    return [NUMPY, *pins]


def copy_edgemed(site: Path) -> None:
    """edgemed's runtime packages, as installed here (editable or not), into ``site``: sources and data files."""
    for package in RUNTIME_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise EdgemedError(f"cannot find the installed package {package}", "reinstall edgemed")
        source = Path(next(iter(spec.submodule_search_locations)))
        target = site.joinpath(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for item in source.iterdir():
            if item.is_file() and item.suffix in (".py", ".json"):
                shutil.copy2(item, target / item.name)
        if package == "edgemed.devices" and (source / "profiles").is_dir():
            shutil.copytree(source / "profiles", target / "profiles", dirs_exist_ok=True)


def write_environment(root: Path, backends: set[str], python: str, home: str, platforms: tuple[str, ...]) -> Path:
    """The environment folder at ``root``; pip fetches binary wheels for ``python`` on ``platforms``."""
    if not re.fullmatch(r"3\.\d{1,2}", python):
        raise InputError(f"--env-python {python!r} is not a Python version like 3.12",
                         "give the major.minor version of the Triton image's Python (3.12 in 25.x images)")
    site = root / "lib" / f"python{python}" / "site-packages"
    site.mkdir(parents=True)
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-warn-conflicts",
           "--target", str(site), "--python-version", python, "--implementation", "cp", "--only-binary=:all:",
           *[f"--platform={p}" for p in platforms], *requirements(backends)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise EdgemedError(f"pip could not fetch the environment's packages for Python {python} ({last})",
                           "check the package index is reachable (or set PIP_INDEX_URL / PIP_FIND_LINKS to a "
                           "mirror), or export with --backend onnxruntime|openvino, which needs no environment")
    shutil.rmtree(site / "bin", ignore_errors=True)  # console scripts written for this machine's interpreter
    copy_edgemed(site)
    (root / "bin").mkdir()
    (root / "bin" / "activate").write_text(ACTIVATE)
    for name in ("python", "python3", f"python{python}"):
        (root / "bin" / name).symlink_to(f"{home.rstrip('/')}/python{python}")
    (root / "pyvenv.cfg").write_text(f"home = {home}\ninclude-system-site-packages = false\nversion = {python}\n")
    return root
