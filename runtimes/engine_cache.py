"""TensorRT engine cache: keys, invalidation and builder options, with no TensorRT import.

An engine is only valid for the TensorRT version, GPU model and compute capability it was
built with (and, of course, the exact ONNX bytes and precision). The cache keys on all of
them, and a stored engine whose recorded build environment differs from the running one is
refused with a message saying what changed, then rebuilt from the bundle's ONNX.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from edgemed.atomic import write_atomic
from edgemed.errors import BundleError, OptionError
from edgemed.manifest import TensorRtOptions
from edgemed.paths import cache_dir

if TYPE_CHECKING:
    from edgemed.devices.profiles import TensorRtSection

PRECISION_FLAGS = {"fp32": [], "fp16": ["FP16"], "int8": ["INT8", "FP16"]}


@dataclass(frozen=True)
class TargetInfo:
    """The build environment an engine is bound to."""

    tensorrt: str
    gpu: str
    compute_capability: str

    @classmethod
    def detect(cls) -> TargetInfo:
        import tensorrt as trt

        from .cuda_memory import device_properties

        name, major, minor = device_properties()
        return cls(trt.__version__, name, f"{major}.{minor}")


def builder_flags(options: TensorRtOptions) -> list[str]:
    """TensorRT BuilderFlag names for the recorded precision and DLA choice."""
    flags = list(PRECISION_FLAGS[options.precision])
    if options.dla_core is not None:
        if options.precision == "fp32":
            raise OptionError("DLA cores run FP16 or INT8 only", "use --precision fp16 or int8 with --dla-core")
        if options.gpu_fallback:
            flags.append("GPU_FALLBACK")
    return flags + [f for f in options.extra_flags if f not in flags]


def cleared_flags(options: TensorRtOptions) -> list[str]:
    """BuilderFlags to clear: TensorRT enables TF32 by default, so an FP32 engine would compute convolutions in TF32;
    an FP32 artifact is built to compute in FP32, as its parity verdict assumes."""
    return ["TF32"] if options.precision == "fp32" else []


def build_options(section: TensorRtSection | None, precision: str, chw: list[int] | tuple[int, ...],
                  dla_core: int | None = None) -> TensorRtOptions:
    """The options an engine is built with on this device: batch range, workspace and DLA from the device
    profile's ``tensorrt`` section (configuration as data), ``dla_core`` overriding the profile's default.
    DLA cores run FP16 and INT8 only, so FP32 engines are always built for the GPU (and recorded so).
    Checked here, before any build, so a bad combination is one clear line."""
    from edgemed.devices.profiles import TensorRtSection

    section = section or TensorRtSection()
    dla = None if precision == "fp32" else (section.dla_core if dla_core is None else dla_core)
    if dla is not None and dla >= section.dla_cores:
        raise OptionError(f"--dla-core {dla}: this device has {section.dla_cores} DLA core(s)",
                          "leave --dla-core out to build for the GPU")
    dims = [int(d) for d in chw]
    options = TensorRtOptions(precision=precision, min_shape=[1, *dims], opt_shape=[section.opt_batch, *dims],
                              max_shape=[section.max_batch, *dims], dla_core=dla, gpu_fallback=section.gpu_fallback,
                              workspace_bytes=section.workspace_mb << 20)
    builder_flags(options)
    return options


def check_runnable_here(options: TensorRtOptions, section: TensorRtSection | None, profile: str) -> None:
    """An engine gated on a DLA core can only be rebuilt where that core exists; refuse before building."""
    cores = section.dla_cores if section else 0
    if options.dla_core is not None and options.dla_core >= cores:
        from edgemed.errors import DeviceNotFound

        raise DeviceNotFound(f"the TensorRT artifact was built and gated for DLA core {options.dla_core}, but device "
                             f"profile {profile} has {cores} DLA core(s)",
                             "run it on the device it was converted for, or convert again on this one")


def cache_key(onnx_sha256: str, target: TargetInfo, options: TensorRtOptions) -> str:
    payload = json.dumps({"onnx": onnx_sha256, "target": asdict(target), "options": msgspec.to_builtins(options)},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def default_cache_dir() -> Path:
    return cache_dir() / "engines"


class EngineCache:
    """Engines on the target, one ``<key>.engine`` plus ``<key>.json`` recording how it was built."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root else default_cache_dir()

    def paths(self, key: str) -> tuple[Path, Path]:
        return self.root / f"{key}.engine", self.root / f"{key}.json"

    def lookup(self, key: str, target: TargetInfo, onnx_sha256: str) -> bytes | None:
        engine, meta_path = self.paths(key)
        if not engine.is_file() or not meta_path.is_file():
            return None
        meta = json.loads(meta_path.read_text())
        check_compatible(meta, target, onnx_sha256, engine)
        data = engine.read_bytes()
        if hashlib.sha256(data).hexdigest() != meta.get("engine_sha256"):
            raise BundleError(f"cached engine {engine} does not match its recorded SHA-256 (truncated or changed)",
                              f"delete it ({engine}) and it will be rebuilt from the bundle's ONNX")
        return data

    def store(self, key: str, plan: bytes, target: TargetInfo, onnx_sha256: str, options: TensorRtOptions) -> Path:
        engine, meta_path = self.paths(key)
        meta = {"target": asdict(target), "onnx_sha256": onnx_sha256, "options": msgspec.to_builtins(options),
                "engine_sha256": hashlib.sha256(plan).hexdigest()}
        write_atomic(engine, plan)
        write_atomic(meta_path, json.dumps(meta, indent=2))  # written last: an engine without it is ignored
        return engine


def check_compatible(meta: dict, target: TargetInfo, onnx_sha256: str, where: Path | str) -> None:
    """Refuse an engine built elsewhere, naming exactly what differs."""
    built = meta.get("target", {})
    diffs = [f"{k} {built.get(k)!r} here {getattr(target, k)!r}" for k in ("tensorrt", "gpu", "compute_capability")
             if built.get(k) != getattr(target, k)]
    if meta.get("onnx_sha256") != onnx_sha256:
        diffs.append("the bundle's ONNX changed")
    if diffs:
        raise BundleError(f"TensorRT engine {where} was built for another target ({'; '.join(diffs)})",
                          "it will be rebuilt from the bundle's ONNX on this device")
