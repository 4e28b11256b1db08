"""TensorRT engine runner (written against TensorRT 10's documented API; UNVERIFIED here).

Loads a serialized engine from the engine cache, or builds one from the bundle's ONNX on this
device and caches it; runs with ``execute_async_v3`` on a CUDA stream with pinned host
buffers. The build options are always the ones recorded in the artifact (batch profile,
precision flags, DLA core, workspace): the engine that runs is the configuration the drift
gate measured, never a default. Nothing here is imported unless a TensorRT engine is requested.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from edgemed.errors import BackendUnavailable, BundleError, OptionError
from edgemed.hashing import sha256_file
from edgemed.manifest import TensorRtOptions

from .base import Engine, TensorInfo
from .engine_cache import EngineCache, TargetInfo, cache_key


class TensorRtEngine(Engine):
    backend = "tensorrt"

    def __init__(self, model_path: str | Path, device: str = "cuda", threads: int | None = None,
                 precision: str = "fp32", options: TensorRtOptions | None = None, cache: EngineCache | None = None
                 ) -> None:
        if options is None or options.precision != precision:
            raise OptionError(f"a TensorRT engine needs the build options its artifact was gated with "
                              f"(got {options!r} for {precision})", "load it through edgemed.load, which passes them")
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise BackendUnavailable("tensorrt is not installed", "install TensorRT (JetPack on Jetson)") from exc
        from .cuda_memory import CudaBuffers

        self.device, self.precision, self.threads = device, precision, threads
        self.model_path = Path(model_path)
        onnx_sha = sha256_file(model_path)
        target = TargetInfo.detect()
        cache = cache or EngineCache()
        key = cache_key(onnx_sha, target, options)
        try:
            plan = cache.lookup(key, target, onnx_sha)
        except BundleError:
            plan = None  # built for another target or corrupt: rebuild below
        if plan is None:
            from .tensorrt_builder import build_engine

            plan = build_engine(self.model_path, options, timing_cache=cache.root / "timing.cache")
            cache.store(key, plan, target, onnx_sha, options)
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise BundleError("TensorRT could not deserialize the cached engine", "delete the engine cache entry")
        self.context = self.engine.create_execution_context()
        self._trt = trt
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        shape = lambda n: tuple(d if d >= 0 else "batch" for d in self.engine.get_tensor_shape(n))  # noqa: E731
        self.inputs = [TensorInfo(n, shape(n)) for n in names if is_input[n]]
        self.outputs = [TensorInfo(n, shape(n)) for n in names if not is_input[n]]
        self.buffers = CudaBuffers()
        self._lock = threading.Lock()  # one execution context: serialise calls
        self.target = target
        self.options = options

    def _run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            for info in self.inputs:
                array = np.ascontiguousarray(feed[info.name], dtype=np.float32)
                self.context.set_input_shape(info.name, array.shape)
                self.context.set_tensor_address(info.name, self.buffers.allocate(info.name, array.shape, np.float32))
                self.buffers.to_device(info.name, array)
            for info in self.outputs:
                shape = tuple(self.context.get_tensor_shape(info.name))
                self.context.set_tensor_address(info.name, self.buffers.allocate(info.name, shape, np.float32))
            if not self.context.execute_async_v3(self.buffers.stream_handle):
                raise BackendUnavailable("TensorRT execution failed", "see the TensorRT log")
            for info in self.outputs:
                self.buffers.to_host(info.name)
            self.buffers.synchronize()
            return {info.name: self.buffers.host[info.name].copy() for info in self.outputs}

    def close(self) -> None:
        if getattr(self, "buffers", None):
            self.buffers.free()
        self.context = self.engine = None

    def describe(self) -> dict:
        return {**super().describe(), "tensorrt": self.target.tensorrt, "gpu": self.target.gpu,
                "compute_capability": self.target.compute_capability}

