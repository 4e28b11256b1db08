"""Start NVIDIA Triton Inference Server (the binary the ``nvidia-pytriton`` wheel carries) on a repository.

Triton itself serves: KServe v2 over HTTP and gRPC, health and readiness, model metadata and
statistics, Prometheus metrics. edgemed only lays out what the binary expects: the Python backend
with the stub built for this interpreter's version (the wheel ships one per Python), the wheel's
libraries on ``LD_LIBRARY_PATH``, and this interpreter's ``sys.path`` so the stub imports edgemed
from the same environment. The wheel pins numpy<2, so serving lives in its own environment
(``pip install 'edgemed[serve]'`` into a fresh venv).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import BackendUnavailable, EdgemedError


def triton_dist() -> tuple[Path, Path]:
    """The wheel's server folder and its library folder; a clear error where the wheel is missing."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        raise BackendUnavailable("Triton is not installed in this environment",
                                 "pip install 'edgemed[serve]' into a separate venv (it needs numpy<2)")
    root = Path(spec.origin).parent
    server = root / "tritonserver"
    libs = root.parent / "nvidia_pytriton.libs"
    if not (server / "bin" / "tritonserver").is_file():
        raise BackendUnavailable(f"{server}: no tritonserver binary in the nvidia-pytriton wheel",
                                 "reinstall nvidia-pytriton")
    return server, libs if libs.is_dir() else server / "external_libs"


@dataclass
class TritonServer:
    process: subprocess.Popen
    http: str
    grpc: str
    metrics: str
    workdir: Path
    log_path: Path

    models: tuple[str, ...] = ()
    instances: dict[str, set[str]] | None = None  # model -> its instance processes when it became ready

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def revive(self) -> list[str]:
        """Reload every model whose Python-backend instance process has died (killed, out of memory): Triton
        answers its requests with errors but keeps reporting it ready, so a load balancer would go on sending
        traffic to a model that cannot answer. Returns the models reloaded. Linux: reads /proc."""
        alive = _stubs(self.process.pid)
        if alive is None or self.instances is None:
            return []
        dead = [m for m, names in self.instances.items() if not names <= alive.get(m, set())]
        for name in dead:
            req = urllib.request.Request(f"{self.http}/v2/repository/models/{name}/load", data=b"{}", method="POST")
            try:
                urllib.request.urlopen(req, timeout=120).close()
            except OSError:
                pass  # reported by the next revive, and by readiness
        return dead

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``: never a hang, whatever state the server is in."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> TritonServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def check_numpy() -> None:
    """Refuse to start where the numpy this interpreter imports is not one the Triton wheel was built for.

    With numpy 2 installed beside the wheel (which pins numpy<2), Triton starts, reports every model
    ready, and answers every request with empty tensors ("output tensor shape does not match size of
    output"): a server that looks healthy and answers nothing. Better one line now."""
    import importlib.metadata as md

    import numpy
    from packaging.requirements import Requirement

    try:
        wanted = [Requirement(r) for r in md.requires("nvidia-pytriton") or []]
    except md.PackageNotFoundError:
        return  # triton_dist says what is missing
    for req in wanted:
        if req.name == "numpy" and (req.marker is None or req.marker.evaluate()) and \
                not req.specifier.contains(numpy.__version__, prereleases=True):
            raise BackendUnavailable(
                f"numpy {numpy.__version__} is installed here, but the Triton wheel (nvidia-pytriton "
                f"{md.version('nvidia-pytriton')}) needs numpy{req.specifier}: Triton would start and answer every "
                "request with empty tensors",
                f"serve from an environment of its own (python3 -m venv .venv-serve && .venv-serve/bin/pip install -e "
                f"'.[serve]'), or pip install 'numpy{req.specifier}' here")


def _backends(server: Path, work: Path) -> Path:
    """A backend folder with the Python backend and the stub for this interpreter."""
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = server / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise BackendUnavailable(f"the Triton wheel has no Python-backend stub for Python {version}",
                                 "run edgemed serve with a Python the wheel supports (3.8-3.13)")
    target = work / "backends"
    shutil.copytree(server / "backends", target)
    shutil.copy(stub, target / "python" / "triton_python_backend_stub")
    return target


def start(repository: Path, host: str = "127.0.0.1", http_port: int = 8000, grpc_port: int = 8001,
          metrics_port: int = 8002, ready_timeout: float = 120.0, verbose: bool = False) -> TritonServer:
    """Start Triton on ``repository`` and wait until every model is ready (or say why not, and stop it)."""
    server, libs = triton_dist()
    check_numpy()
    models = tuple(sorted(p.parent.name for p in Path(repository).glob("*/config.pbtxt")))
    work = Path(tempfile.mkdtemp(prefix="edgemed-triton-"))
    log_path = work / "tritonserver.log"
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(libs), env.get("LD_LIBRARY_PATH", "")) if p)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    cmd = [str(server / "bin" / "tritonserver"), f"--model-repository={repository}",
           f"--backend-directory={_backends(server, work)}", f"--cache-directory={server / 'caches'}",
           f"--http-address={host}", f"--http-port={http_port}", f"--grpc-address={host}", f"--grpc-port={grpc_port}",
           f"--metrics-address={host}", f"--metrics-port={metrics_port}", "--allow-metrics=true",
           "--exit-on-error=true", "--strict-readiness=true", "--log-verbose=1" if verbose else "--log-verbose=0",
           "--model-control-mode=explicit", *[f"--load-model={m}" for m in models]]
    log = open(log_path, "wb")  # noqa: SIM115 - the server writes it for its whole life
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)  # in our process group: a
    # Ctrl-C reaches it too, and whoever kills our group kills it
    srv = TritonServer(proc, f"http://{host}:{http_port}", f"{host}:{grpc_port}", f"http://{host}:{metrics_port}",
                       work, log_path, models)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = srv.log()
            srv.stop()
            raise EdgemedError(f"Triton exited while starting ({_last_error(text)})",
                               "see the model's config and that edgemed imports in this environment")
        try:
            with urllib.request.urlopen(f"{srv.http}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    srv.instances = _stubs(proc.pid)
                    return srv
        except OSError:
            pass
        time.sleep(0.3)
    text = srv.log()
    srv.stop()
    raise EdgemedError(f"Triton was not ready within {ready_timeout:g} s ({_last_error(text)})",
                       "raise the timeout, or check the server log")


def _stubs(server_pid: int) -> dict[str, set[str]] | None:
    """Model -> its live Python-backend instance processes under this server (each stub's command line names
    the model file and the instance)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    found: dict[str, set[str]] = {}
    for p in proc.iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != server_pid:
                continue
            args = (p / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if args and args[0].endswith(b"triton_python_backend_stub") and len(args) > 9:
            model = Path(args[1].decode(errors="replace")).parent.parent.name  # .../MODEL/VERSION/model.py
            found.setdefault(model, set()).add(args[9].decode(errors="replace"))  # e.g. MODEL_0_0
    return found


def _last_error(log: str) -> str:
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("E") or "error" in ln.lower()]
    return (errors or lines or ["no output"])[-1][:300]
