"""The backends edgemed builds for and runs on, each declared once, as data.

Everything that names a backend reads it from :data:`BACKENDS`: the manifest's vocabulary (``Backend``),
``load``'s and the CLI's choices, the runtime registry (which engine class, which package must import), the
converters (which builder, ``--to`` word, what to install), device profiles (which device word its engine gets),
the Triton export (which native backend serves the artifact) and the SBOM (which package to name). Adding a
backend is one entry here plus its runner in ``runtimes/`` and its builder in ``converters/``.

Engines and builders are named as ``"module:attribute"`` text, resolved only when used, so this module stays
at the bottom of the package: importing it imports no backend, torch or onnx.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from .errors import OptionError

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class TritonNative:
    """How Triton's own backend serves this artifact: the file name it looks for and the config line naming it."""

    file: str
    config_line: str


@dataclass(frozen=True)
class BackendInfo:
    name: str  # the word in manifests, ``load(backend=)``, ``--backend`` and device profiles
    target: str  # the word ``edgemed convert --to`` takes
    package: str  # the Python package that must import to build or run it
    engine: str  # its runner, ``module:Class`` (an edgemed.runtimes.base.Engine)
    builder: str  # its loader, ``module:function`` (ctx, precision) -> Built, in edgemed.converters
    install: str  # the fix when ``package`` does not import where an engine is opened
    build_install: str  # the fix when it does not import where convert builds
    version: str  # the package's attribute (or zero-argument function) giving its version, for reports and SBOMs
    device_attr: str | None  # the device profile's field naming this engine's device word ...
    fixed_device: str = "cpu"  # ... or, where None, the one device it always runs on
    precisions: tuple[str, ...] = PRECISIONS
    triton: TritonNative | None = None  # None: no native Triton form (the Python-backend export serves it)

    def engine_device(self, profile: Any) -> str:
        """The device word this backend's engine is created with on a device profile."""
        return getattr(profile, self.device_attr) if self.device_attr else self.fixed_device

    def installed(self) -> bool:
        return importlib.util.find_spec(self.package) is not None

    def engine_class(self) -> type:
        return _resolve(self.engine)

    def build_function(self) -> Callable[..., Any]:
        return _resolve(self.builder)

    def installed_version(self) -> str | None:
        """The installed package's version, or None where it does not import."""
        try:
            module = importlib.import_module(self.package)
        except ImportError:
            return None
        value = getattr(module, self.version)
        return str(value() if callable(value) else value)


def _resolve(ref: str) -> Any:
    module, attribute = ref.split(":")
    return getattr(importlib.import_module(module), attribute)


BACKENDS: dict[str, BackendInfo] = {b.name: b for b in (
    BackendInfo(
        name="onnxruntime", target="onnx", package="onnxruntime",
        engine="edgemed.runtimes.onnxruntime:OnnxRuntimeEngine",
        builder="edgemed.converters.artifacts:build_onnxruntime",
        install="pip install onnxruntime", build_install="pip install onnxruntime",
        version="__version__", device_attr="ort_device",
        triton=TritonNative("model.onnx", 'platform: "onnxruntime_onnx"')),
    BackendInfo(
        name="openvino", target="openvino", package="openvino",
        engine="edgemed.runtimes.openvino:OpenVinoEngine",
        builder="edgemed.converters.artifacts:build_openvino",
        install="pip install 'edgemed[openvino]'", build_install="pip install 'edgemed[openvino]'",
        version="get_version", device_attr="ov_device",
        triton=TritonNative("model.xml", 'backend: "openvino"')),
    BackendInfo(
        name="tensorrt", target="tensorrt", package="tensorrt",
        engine="edgemed.runtimes.tensorrt:TensorRtEngine",
        builder="edgemed.converters.artifacts:build_tensorrt",
        install="pip install tensorrt (on the Jetson/GPU machine; TensorRT engines run only where they were built)",
        build_install="TensorRT engines are built on the target: run this convert on the Jetson/GPU machine where "
                      "the tensorrt package imports",
        version="__version__", device_attr=None, fixed_device="cuda"),
)}

BACKEND_NAMES: tuple[str, ...] = tuple(BACKENDS)
TARGETS: tuple[str, ...] = tuple(b.target for b in BACKENDS.values())
TRITON_NATIVE: tuple[str, ...] = tuple(name for name, b in BACKENDS.items() if b.triton is not None)
# ``export triton --backend``: "python" runs the edgemed pipeline in Triton's Python backend; the others put the
# artifact on Triton's own backend (edgemed.serve.triton_native)
TRITON_EXPORTS: tuple[str, ...] = ("python", *TRITON_NATIVE)

# The manifest's and device profiles' vocabulary, derived from the table (msgspec validates against it).
Backend = Literal[BACKEND_NAMES]  # type: ignore[valid-type]
Precision = Literal[PRECISIONS]  # type: ignore[valid-type]


def backend(name: object) -> BackendInfo:
    """The declaration of a backend by name; an unknown name is refused naming the known ones."""
    info = BACKENDS.get(name) if isinstance(name, str) else None
    if info is None:
        raise OptionError(f"unknown backend {name!r}", f"use one of {', '.join(BACKEND_NAMES)}")
    return info


def by_target(target: str) -> BackendInfo:
    """The backend a ``convert --to`` word builds for."""
    for info in BACKENDS.values():
        if info.target == target:
            return info
    raise OptionError(f"--to {target}: not a target", f"use one of {', '.join(TARGETS)}")
