"""TensorRT engine building, on the target (written against TensorRT 10's documented Python API; UNVERIFIED here).

It lives with the runtimes because engines are built where they run: ``convert --to tensorrt`` on
the device builds one to gate it, and ``load`` rebuilds it from the bundle's ONNX with the very
options recorded in the artifact's build record when the engine cache misses.

TensorRT's libraries cannot be installed on the machines edgemed is developed and tested on,
so this path has never run in CI. Everything that does not need the library (cache keys,
invalidation, builder-flag choice from a device profile, the Q/DQ ONNX it consumes) lives in
:mod:`edgemed.runtimes.engine_cache` and is tested there. ``tensorrt`` is imported lazily.

INT8 uses the explicit-quantization path: the bundle's Q/DQ ONNX (``model.int8.onnx`` built with
symmetric activations) is parsed as is, because implicit calibrators are deprecated in TensorRT 10.
"""

from __future__ import annotations

from pathlib import Path

from edgemed.atomic import write_atomic
from edgemed.errors import BackendUnavailable, ConversionError
from edgemed.manifest import TensorRtOptions

from .engine_cache import builder_flags, cleared_flags


def build_engine(onnx_path: Path, options: TensorRtOptions, timing_cache: Path | None = None) -> bytes:
    """Parse ONNX, apply the options, and return the serialized engine (plan) bytes."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable("tensorrt is not installed here",
                                 "build engines on the target (Jetson/GPU) with TensorRT installed") from exc

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: networks are always explicit-batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ConversionError(f"TensorRT cannot parse {Path(onnx_path).name}: {errors[:300]}",
                              "check the ONNX opset and ops against TensorRT's support matrix")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_bytes)
    for flag in builder_flags(options):
        config.set_flag(getattr(trt.BuilderFlag, flag))
    for flag in cleared_flags(options):
        config.clear_flag(getattr(trt.BuilderFlag, flag))
    if options.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(options.dla_core)

    profile = builder.create_optimization_profile()
    name = network.get_input(0).name
    profile.set_shape(name, tuple(options.min_shape), tuple(options.opt_shape), tuple(options.max_shape))
    config.add_optimization_profile(profile)

    cache_bytes = timing_cache.read_bytes() if timing_cache and timing_cache.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ConversionError(f"TensorRT failed to build an engine for {Path(onnx_path).name}",
                              "see the TensorRT log above; try another precision or disable DLA")
    if timing_cache is not None:
        write_atomic(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(plan)

