"""Opening the engine of a backend named in :data:`edgemed.backends.BACKENDS`; each backend imports lazily."""

from __future__ import annotations

from pathlib import Path

from edgemed.backends import BACKENDS
from edgemed.errors import BackendUnavailable

from .base import Engine


def available_backends() -> dict[str, bool]:
    return {name: info.installed() for name, info in BACKENDS.items()}


def create_engine(backend: str, model_path: str | Path, device: str = "cpu", threads: int | None = None,
                  precision: str = "fp32", **options) -> Engine:
    """An engine of ``backend`` on ``model_path``; ``options`` are that backend's own settings."""
    info = BACKENDS.get(backend)
    if info is None:
        raise BackendUnavailable(f"unknown backend {backend!r}", f"use one of {', '.join(BACKENDS)}")
    if not info.installed():
        raise BackendUnavailable(f"backend {backend!r} needs the {info.package!r} package, which is not installed",
                                 info.install)
    return info.engine_class()(model_path, device=device, threads=threads, precision=precision, **options)
