"""TensorRT engine runner (written against TensorRT 10's documented API; UNVERIFIED here).

Loads a serialized engine from the engine cache, or builds one from the bundle's ONNX on this
device and caches it; runs with ``execute_async_v3`` on a CUDA stream with pinned host
buffers. Nothing here is imported unless a TensorRT engine is requested.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from edgemed.errors import BackendUnavailable, BundleError
from edgemed.hashing import sha256_file

from .base import Engine, TensorInfo
from .engine_cache import BuildOptions, EngineCache, TargetInfo, cache_key


class TensorRtEngine(Engine):
    backend = "tensorrt"

    def __init__(self, model_path: str | Path, device: str = "cuda", threads: int | None = None,
                 precision: str = "fp32", options: BuildOptions | None = None, cache: EngineCache | None = None
                 ) -> None:
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise BackendUnavailable("tensorrt is not installed", "install TensorRT (JetPack on Jetson)") from exc
        from .cuda_memory import CudaBuffers

        self.device, self.precision, self.threads = device, precision, threads
        self.model_path = Path(model_path)
        onnx_sha = sha256_file(model_path)
        target = TargetInfo.detect()
        if options is None:
            options = _options_from_onnx(model_path, precision)
        cache = cache or EngineCache()
        key = cache_key(onnx_sha, target, options)
        try:
            plan = cache.lookup(key, target, onnx_sha)
        except BundleError:
            plan = None  # built for another target or corrupt: rebuild below
        if plan is None:
            from edgemed.converters.tensorrt_build import build_engine

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


def _options_from_onnx(path: str | Path, precision: str) -> BuildOptions:
    """Batch 1 profile from the ONNX input dims (read with the protobuf-free onnxruntime API)."""
    import onnxruntime as ort

    info = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()[0]
    c, h, w = (int(d) for d in info.shape[1:])
    return BuildOptions(precision, (1, c, h, w), (1, c, h, w), (1, c, h, w))
