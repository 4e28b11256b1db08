"""TensorRT engine cache: keys, invalidation and builder options, with no TensorRT import.

An engine is only valid for the TensorRT version, GPU model and compute capability it was
built with (and, of course, the exact ONNX bytes and precision). The cache keys on all of
them, and a stored engine whose recorded build environment differs from the running one is
refused with a message saying what changed, then rebuilt from the bundle's ONNX.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgemed.atomic import write_atomic
from edgemed.errors import BundleError, InputError
from edgemed.paths import cache_dir

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


@dataclass(frozen=True)
class BuildOptions:
    precision: str
    min_shape: tuple[int, ...]
    opt_shape: tuple[int, ...]
    max_shape: tuple[int, ...]
    dla_core: int | None = None
    gpu_fallback: bool = True
    workspace_bytes: int = 1 << 30
    extra_flags: tuple[str, ...] = field(default_factory=tuple)

    def builder_flags(self) -> list[str]:
        """TensorRT BuilderFlag names for this precision and DLA choice."""
        if self.precision not in PRECISION_FLAGS:
            raise InputError(f"unknown TensorRT precision {self.precision!r}", "use fp32, fp16 or int8")
        flags = list(PRECISION_FLAGS[self.precision])
        if self.dla_core is not None:
            if self.precision == "fp32":
                raise InputError("DLA cores run FP16 or INT8 only", "use --precision fp16 or int8 with --dla-core")
            if self.gpu_fallback:
                flags.append("GPU_FALLBACK")
        return flags + [f for f in self.extra_flags if f not in flags]

    @classmethod
    def from_profile(cls, profile: dict, precision: str, input_shape: list, dla_core: int | None = None
                     ) -> BuildOptions:
        """Batch range and DLA defaults come from the device profile (configuration as data)."""
        trt_cfg = profile.get("tensorrt", {})
        c, h, w = (int(d) for d in input_shape[1:])
        max_batch = int(trt_cfg.get("max_batch", 1))
        opt_batch = int(trt_cfg.get("opt_batch", 1))
        if dla_core is None:
            dla_core = trt_cfg.get("dla_core")
        return cls(precision, (1, c, h, w), (opt_batch, c, h, w), (max_batch, c, h, w), dla_core,
                   bool(trt_cfg.get("gpu_fallback", True)), int(trt_cfg.get("workspace_mb", 1024)) << 20)


def cache_key(onnx_sha256: str, target: TargetInfo, options: BuildOptions) -> str:
    payload = json.dumps({"onnx": onnx_sha256, "target": asdict(target), "options": asdict(options)},
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

    def store(self, key: str, plan: bytes, target: TargetInfo, onnx_sha256: str, options: BuildOptions) -> Path:
        engine, meta_path = self.paths(key)
        meta = {"target": asdict(target), "onnx_sha256": onnx_sha256, "options": asdict(options),
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
