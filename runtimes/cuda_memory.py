"""Device buffers, pinned host buffers and a stream, through pycuda or cuda-python (UNVERIFIED here).

The one place that knows which CUDA binding is installed. pycuda is preferred (the design
card); cuda-python (``cuda.bindings.runtime``) is used where pycuda does not build.
"""

from __future__ import annotations

import numpy as np

from edgemed.errors import BackendUnavailable


def _binding():
    try:
        import pycuda.autoinit  # noqa: F401 - creates the primary context
        import pycuda.driver as cuda

        return "pycuda", cuda
    except ImportError:
        pass
    try:
        from cuda.bindings import runtime as cudart

        return "cuda-python", cudart
    except ImportError as exc:
        raise BackendUnavailable("TensorRT needs pycuda or cuda-python for device memory",
                                 "pip install pycuda (or cuda-python) on the target") from exc


def _check(result):
    err, *rest = result
    if int(err) != 0:
        raise BackendUnavailable(f"CUDA call failed with error {int(err)}", "check the GPU and driver")
    return rest[0] if len(rest) == 1 else rest


def device_properties() -> tuple[str, int, int]:
    """(GPU name, compute capability major, minor) of device 0."""
    kind, api = _binding()
    if kind == "pycuda":
        dev = api.Device(0)
        major, minor = dev.compute_capability()
        return dev.name(), major, minor
    props = _check(api.cudaGetDeviceProperties(0))
    return props.name.decode().rstrip("\x00"), props.major, props.minor


class CudaBuffers:
    """A stream plus, per tensor, a pinned host array and a device allocation of the same size."""

    def __init__(self) -> None:
        self.kind, self.api = _binding()
        self.stream = self.api.Stream() if self.kind == "pycuda" else _check(self.api.cudaStreamCreate())
        self.host: dict[str, np.ndarray] = {}
        self.device: dict[str, object] = {}

    @property
    def stream_handle(self) -> int:
        return self.stream.handle if self.kind == "pycuda" else int(self.stream)

    def allocate(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> int:
        """(Re)allocate buffers for a tensor; returns the device pointer."""
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if name in self.host and self.host[name].nbytes == nbytes:
            self.host[name] = self.host[name].reshape(shape)
            return int(self.device[name])
        if self.kind == "pycuda":
            self.host[name] = self.api.pagelocked_empty(shape, dtype)
            self.device[name] = self.api.mem_alloc(max(1, nbytes))
        else:
            self.host[name] = np.empty(shape, dtype)  # cuda-python: pageable host memory, still async-safe
            self.device[name] = _check(self.api.cudaMalloc(max(1, nbytes)))
        return int(self.device[name])

    def to_device(self, name: str, array: np.ndarray) -> None:
        np.copyto(self.host[name], array)
        if self.kind == "pycuda":
            self.api.memcpy_htod_async(self.device[name], self.host[name], self.stream)
        else:
            _check(self.api.cudaMemcpyAsync(self.device[name], self.host[name].ctypes.data, self.host[name].nbytes,
                                            self.api.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))

    def to_host(self, name: str) -> None:
        if self.kind == "pycuda":
            self.api.memcpy_dtoh_async(self.host[name], self.device[name], self.stream)
        else:
            _check(self.api.cudaMemcpyAsync(self.host[name].ctypes.data, self.device[name], self.host[name].nbytes,
                                            self.api.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))

    def synchronize(self) -> None:
        if self.kind == "pycuda":
            self.stream.synchronize()
        else:
            _check(self.api.cudaStreamSynchronize(self.stream))

    def free(self) -> None:
        if self.kind != "pycuda":
            for ptr in self.device.values():
                self.api.cudaFree(ptr)
        self.host.clear()
        self.device.clear()
