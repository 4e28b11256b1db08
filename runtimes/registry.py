"""Which engine class serves which backend name; imports each backend lazily."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from edgemed.errors import BackendUnavailable

from .base import Engine

# backend name -> (python package that must import, module.Class)
_BACKENDS = {
    "onnxruntime": ("onnxruntime", "edgemed.runtimes.onnxruntime:OnnxRuntimeEngine"),
    "openvino": ("openvino", "edgemed.runtimes.openvino:OpenVinoEngine"),
    "tensorrt": ("tensorrt", "edgemed.runtimes.tensorrt:TensorRtEngine"),
}


def available_backends() -> dict[str, bool]:
    return {name: importlib.util.find_spec(pkg) is not None for name, (pkg, _) in _BACKENDS.items()}


def create_engine(backend: str, model_path: str | Path, device: str = "cpu", threads: int | None = None,
                  precision: str = "fp32", **options) -> Engine:
    """An engine of ``backend`` on ``model_path``; ``options`` are that backend's own settings."""
    if backend not in _BACKENDS:
        raise BackendUnavailable(f"unknown backend {backend!r}", f"use one of {', '.join(_BACKENDS)}")
    package, target = _BACKENDS[backend]
    if importlib.util.find_spec(package) is None:
        raise BackendUnavailable(f"backend {backend!r} needs the {package!r} package, which is not installed",
                                 f"pip install {package}")
    module_name, cls_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(model_path, device=device, threads=threads, precision=precision, **options)
