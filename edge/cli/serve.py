"""``edgemed serve`` and ``edgemed export triton``: bundles and ensembles on NVIDIA Triton (KServe v2)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click

from ..backends import TRITON_EXPORTS
from .options import accept_option

# Measured side by side (benchmarks/studies/triton_load.py, 2 cores, HTTP binary, max batch 8): a 2 ms delay made a lone
# request wait it out (28x28 CNN p50 3.30 ms vs 1.11 ms with no delay; 128x128 U-Net 11.3 vs 10.5 ms), and bought
# nothing under load (8 in flight: 1,252 vs 1,149-1,237 requests/s; U-Net at 4: 118.6 vs 118.4/s). With no delay
# Triton still batches what queued while the instance was busy.
QUEUE_DELAY_US = 0


def _repository_options(f):
    f = click.option("--max-batch", default=8, show_default=True, type=click.IntRange(0, 1024),
                     help="Triton's max_batch_size; 0 turns batching off.")(f)
    f = click.option("--max-queue-delay-us", default=QUEUE_DELAY_US, show_default=True, type=click.IntRange(0),
                     help="How long Triton's dynamic batcher waits to fill a batch (0: a lone request goes at once; "
                          "requests that queue while the model runs still batch).")(f)
    f = click.option("--instances", default=1, show_default=True, type=click.IntRange(1, 64),
                     help="Model instances (each its own process and engine).")(f)
    f = click.option("--callers", default=1, show_default=True, type=click.IntRange(1, 64),
                     help="Split the cores between this many concurrent executions per engine, no busy-waiting "
                          "(load(callers=N)); 1: the engine takes every core (fastest for one instance).")(f)
    f = accept_option("Serve an artifact with this verdict (never by default).")(f)
    f = click.option("--pubkey", type=click.Path(path_type=Path),
                     help="Check each bundle's signature with this public key before serving it.")(f)
    return f


@click.group()
def export() -> None:
    """Export bundles for other serving systems."""


@export.command("triton")
@click.argument("bundles", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path), help="Model repository to write.")
@click.option("--backend", type=click.Choice(TRITON_EXPORTS), default="python",
              show_default=True,
              help="python: one Python-backend model running the edgemed pipeline (needs edgemed in Triton's Python; "
                   "verified here). onnxruntime/openvino: the certified artifact on Triton's native backend inside an "
                   "ensemble whose pre/post steps need only numpy, so a stock Triton image runs it (the steps are "
                   "verified here, the native engine step is not: this Triton lacks those backends).")
@click.option("--storage-uri", default="pvc://edgemed/models", show_default=True,
              help="Where the KServe InferenceService will find the repository.")
@click.option("--pack-env", "env_python", metavar="PYTHON", default=None,
              help="With --backend python: give each model an execution environment (edgemed and its runtime "
                   "libraries, pip-installed for that Python, e.g. 3.12 for Triton 25.x images) so a stock image runs "
                   "it (Triton's EXECUTION_ENV_PATH).")
@click.option("--env-home", default="/usr/bin", show_default=True,
              help="Where the image's Python interpreter lives (the environment's pyvenv.cfg home).")
@click.option("--env-platform", "env_platforms", multiple=True,
              help="Wheel platform tags for the image (default: x86-64 manylinux; aarch64 images need their own).")
@click.option("--force", is_flag=True, help="Replace an existing repository.")
@_repository_options
def export_triton(bundles: tuple[Path, ...], out: Path, backend: str, storage_uri: str, env_python: str | None,
                  env_home: str, env_platforms: tuple[str, ...], force: bool, max_batch: int,
                  max_queue_delay_us: int, instances: int, callers: int, accept: str | None,
                  pubkey: Path | None) -> None:
    """A Triton model repository (config.pbtxt + model per bundle) and a KServe InferenceService manifest."""
    from ..serve.triton_repository import DEFAULT_PLATFORMS, export_repository

    names = export_repository(list(bundles), out, max_batch, max_queue_delay_us, instances, accept, pubkey,
                              storage_uri, force, backend, env_python, env_home, env_platforms or DEFAULT_PLATFORMS,
                              callers)
    form = "Python backend" if backend == "python" else f"ensembles: numpy steps around Triton's {backend} backend"
    if env_python:
        form += f", each with its environment for Python {env_python}"
    click.echo(f"{out}: {', '.join(names)} ({form}); KServe manifest: {out / 'inferenceservice.yaml'}")


@click.command()
@click.argument("bundles", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0 for every interface).")
@click.option("--http-port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--grpc-port", default=8001, show_default=True, type=click.IntRange(1, 65535))
@click.option("--metrics-port", default=8002, show_default=True, type=click.IntRange(1, 65535))
@click.option("--device", default="cpu", show_default=True, help="cpu (the only device Triton runs here).")
@_repository_options
def serve(bundles: tuple[Path, ...], host: str, http_port: int, grpc_port: int, metrics_port: int, device: str,
          max_batch: int, max_queue_delay_us: int, instances: int, callers: int, accept: str | None,
          pubkey: Path | None) -> None:
    """Serve bundles and ensembles on Triton (KServe v2 over HTTP and gRPC, Prometheus metrics) until interrupted."""
    from ..errors import OptionError
    from ..serve.triton_repository import export_repository
    from ..serve.triton_server import check_numpy, start

    if device != "cpu":
        raise OptionError(f"--device {device}: edgemed serve runs Triton on CPU here", "use --device cpu")
    check_numpy()  # before any work: numpy 2 beside the wheel would serve empty answers
    with tempfile.TemporaryDirectory(prefix="edgemed-serve-") as tmp:
        repo = Path(tmp) / "models"
        names = export_repository(list(bundles), repo, max_batch, max_queue_delay_us, instances, accept, pubkey,
                                  callers=callers)
        server = start(repo, host, http_port, grpc_port, metrics_port)
        try:  # Ctrl-C / SIGTERM arrive as KeyboardInterrupt (the CLI's handler): the server is stopped on the way out
            click.echo(f"serving {', '.join(names)}: KServe v2 HTTP {server.http}, gRPC {server.grpc}, "
                       f"metrics {server.metrics}/metrics", err=False)
            while server.process.poll() is None:
                for name in server.revive():
                    click.echo(f"edgemed: warning: {name}'s instance process died; reloaded it", err=True)
                time.sleep(0.5)
            raise click.ClickException(f"Triton stopped (exit {server.process.returncode}): "
                                       f"{server.log().strip().splitlines()[-1:]}")
        finally:
            server.stop()
