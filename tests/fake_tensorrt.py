"""A stand-in for TensorRT's Python API, for tests only, mocked at the API boundary.

TensorRT cannot be installed where edgemed is tested, so the code around it (which options a
build receives, how the runner drives an engine) is tested against this double. It records
every build's configuration in ``BUILDS`` and "runs" an engine by handing the ONNX bytes it
parsed to ONNX Runtime, so the drift gate sees real numbers while the build calls are checked.
It proves nothing about TensorRT itself: that path stays UNVERIFIED.
"""

from __future__ import annotations

import importlib.machinery
import json
import types

import numpy as np

BUILDS: list[dict] = []
VERSION = "10.99.0-fake"


class _Enum:
    def __init__(self, *names: str) -> None:
        for n in names:
            setattr(self, n, n)


class Logger:
    WARNING = "WARNING"

    def __init__(self, level: str) -> None:
        self.level = level


BuilderFlag = _Enum("FP16", "INT8", "GPU_FALLBACK", "STRICT_TYPES", "TF32")
MemoryPoolType = _Enum("WORKSPACE")
DeviceType = _Enum("GPU", "DLA")
TensorIOMode = _Enum("INPUT", "OUTPUT")


class _Input:
    def __init__(self, name: str) -> None:
        self.name = name


class _Network:
    def __init__(self) -> None:
        self.onnx: bytes | None = None
        self.input_name = ""

    def get_input(self, i: int) -> _Input:
        return _Input(self.input_name)


class OnnxParser:
    def __init__(self, network: _Network, logger: Logger) -> None:
        self.network = network
        self.num_errors = 0

    def parse(self, data: bytes) -> bool:
        import onnxruntime as ort

        self.network.onnx = data
        self.network.input_name = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).get_inputs()[0].name
        return True

    def get_error(self, i: int) -> str:
        return ""


class _Profile:
    def __init__(self) -> None:
        self.shapes: dict = {}

    def set_shape(self, name: str, lo: tuple, opt: tuple, hi: tuple) -> None:
        self.shapes[name] = [list(lo), list(opt), list(hi)]


class _TimingCache:
    def serialize(self) -> bytes:
        return b"fake-timing-cache"


class _Config:
    def __init__(self) -> None:
        self.flags: list[str] = []
        self.cleared: list[str] = []
        self.workspace = None
        self.default_device_type = DeviceType.GPU
        self.DLA_core = -1
        self.profiles: list[_Profile] = []

    def set_memory_pool_limit(self, pool: str, size: int) -> None:
        self.workspace = size

    def set_flag(self, flag: str) -> None:
        self.flags.append(flag)

    def clear_flag(self, flag: str) -> None:
        self.cleared.append(flag)

    def add_optimization_profile(self, profile: _Profile) -> None:
        self.profiles.append(profile)

    def create_timing_cache(self, data: bytes) -> _TimingCache:
        return _TimingCache()

    def set_timing_cache(self, cache: _TimingCache, ignore_mismatch: bool = False) -> None:
        pass

    def get_timing_cache(self) -> _TimingCache:
        return _TimingCache()


class Builder:
    def __init__(self, logger: Logger) -> None:
        pass

    def create_network(self, flags: int) -> _Network:
        return _Network()

    def create_builder_config(self) -> _Config:
        return _Config()

    def create_optimization_profile(self) -> _Profile:
        return _Profile()

    def build_serialized_network(self, network: _Network, config: _Config) -> bytes:
        record = {"flags": sorted(config.flags), "cleared": sorted(config.cleared), "workspace": config.workspace,
                  "device": config.default_device_type, "dla_core": config.DLA_core,
                  "profile": config.profiles[0].shapes[network.input_name]}
        BUILDS.append(record)
        header = json.dumps({**record, "input": network.input_name}).encode()
        return len(header).to_bytes(4, "little") + header + network.onnx


class _Engine:
    def __init__(self, plan: bytes) -> None:
        import onnxruntime as ort

        size = int.from_bytes(plan[:4], "little")
        self.meta = json.loads(plan[4:4 + size])
        self.session = ort.InferenceSession(plan[4 + size:], providers=["CPUExecutionProvider"])
        self.names = [self.meta["input"]] + [o.name for o in self.session.get_outputs()]
        self.num_io_tensors = len(self.names)

    def get_tensor_name(self, i: int) -> str:
        return self.names[i]

    def get_tensor_mode(self, name: str) -> str:
        return TensorIOMode.INPUT if name == self.meta["input"] else TensorIOMode.OUTPUT

    def get_tensor_shape(self, name: str) -> tuple:
        if name == self.meta["input"]:
            return (-1, *self.meta["profile"][2][1:])
        shape = next(o.shape for o in self.session.get_outputs() if o.name == name)
        return tuple(d if isinstance(d, int) else -1 for d in shape)

    def create_execution_context(self) -> _Context:
        return _Context(self)


class _Context:
    def __init__(self, engine: _Engine) -> None:
        self.engine = engine
        self.addresses: dict = {}
        self.input_shape: tuple = ()

    def set_input_shape(self, name: str, shape: tuple) -> bool:
        lo, _, hi = self.engine.meta["profile"]
        if not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
            raise ValueError(f"shape {shape} outside the optimization profile {lo}..{hi}")
        self.input_shape = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple:
        return (self.input_shape[0], *self.engine.get_tensor_shape(name)[1:])

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.addresses[name] = address
        return True

    def execute_async_v3(self, stream: int) -> bool:
        buffers = _Buffers.live
        x = buffers.device[self.engine.meta["input"]]
        for name, value in zip([o.name for o in self.engine.session.get_outputs()],
                               self.engine.session.run(None, {self.engine.meta["input"]: x})):
            buffers.device[name] = value
        return True


class Runtime:
    def __init__(self, logger: Logger) -> None:
        pass

    def deserialize_cuda_engine(self, plan: bytes) -> _Engine:
        return _Engine(plan)


class _Buffers:
    """Host-memory stand-in for edgemed.runtimes.cuda_memory.CudaBuffers."""

    live: _Buffers

    def __init__(self) -> None:
        self.host: dict = {}
        self.device: dict = {}
        _Buffers.live = self
        self.stream_handle = 0

    def allocate(self, name: str, shape: tuple, dtype) -> int:
        self.host[name] = np.empty(shape, dtype)
        return id(self.host[name])

    def to_device(self, name: str, array: np.ndarray) -> None:
        self.device[name] = np.array(array, copy=True)

    def to_host(self, name: str) -> None:
        np.copyto(self.host[name], self.device[name].reshape(self.host[name].shape))

    def synchronize(self) -> None:
        pass

    def free(self) -> None:
        self.host.clear()
        self.device.clear()


def install(monkeypatch) -> types.ModuleType:
    """Put this double in place of ``tensorrt`` (and host buffers in place of CUDA memory) for one test."""
    import sys

    from edgemed.runtimes import cuda_memory

    module = sys.modules[__name__]
    fake = types.ModuleType("tensorrt")
    fake.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    for name in ("Logger", "Builder", "OnnxParser", "Runtime", "BuilderFlag", "MemoryPoolType", "DeviceType",
                 "TensorIOMode"):
        setattr(fake, name, getattr(module, name))
    fake.__version__ = VERSION
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(cuda_memory, "CudaBuffers", _Buffers)
    monkeypatch.setattr(cuda_memory, "device_properties", lambda: ("Orin (fake)", 8, 7))
    BUILDS.clear()
    return fake
