"""Building each (backend, precision) artifact and passing it through the drift gate.

One function per artifact kind keeps the loaders (build) apart from the runners (measure),
as Polygraphy does; the gate (:mod:`edgemed.gate`) and the fallback ladder are shared.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgemed.bundle import file_record
from edgemed.datasets import ImageSet
from edgemed.drift import compare
from edgemed.gate import Budget, judge
from edgemed.manifest import Artifact, BuildRecord, DriftRecord, QuantizedLayers
from edgemed.preprocess import Preprocessor
from edgemed.runtimes import create_engine

from .reference import engine_outputs


@dataclass
class Context:
    """What every builder needs: the FP32 model, the data, the reference, the budget."""

    bundle_dir: Path
    scratch: Path
    fp32_onnx: Path
    pre: Preprocessor
    input_name: str
    calibration: ImageSet
    evaluation: np.ndarray
    reference: np.ndarray
    task: str
    output_kind: str
    budget: Budget
    labels: list[str]
    calib_method: str = "minmax"
    static_batch: int | None = None
    dla_core: int | None = None
    log: Callable[[str], None] = print
    versions: dict = field(default_factory=dict)


def halves(n: int) -> tuple[slice, slice]:
    """(tuning, gate) halves of the held-out images: even and odd positions.

    Fallback and accuracy control tune on one half and the verdict is taken on the other, so the
    gate never grades the images the fallback optimised for.
    """
    return slice(0, n, 2), slice(1, n, 2)


def judge_engine(ctx: Context, engine: Any, part: str = "gate") -> DriftRecord:
    """Run an engine on one half of the held-out images and judge its drift against the budget."""
    sel = halves(len(ctx.evaluation))[0 if part == "tuning" else 1]
    outputs = engine_outputs(engine, ctx.evaluation[sel], engine.inputs[0].name, engine.outputs[0].name)
    comparison = compare(ctx.reference[sel], outputs, ctx.task, ctx.output_kind, ctx.labels)
    return judge(comparison, ctx.budget, f"{part} half of the held-out images")


def measure(ctx: Context, backend: str, path: Path, precision: str, part: str = "gate", **options: Any
            ) -> DriftRecord:
    with create_engine(backend, path, device="cpu", precision=precision, **options) as engine:
        return judge_engine(ctx, engine, part)


def prepared_for_quantization(ctx: Context) -> Path:
    """ORT's quant_pre_process output, made once per conversion (ORT INT8 and TensorRT INT8 share it)."""
    from .ort_quantize import preprocess_for_quantization

    path = ctx.scratch / "prepared.onnx"
    return path if path.is_file() else preprocess_for_quantization(ctx.fp32_onnx, path)


def _artifact(ctx: Context, name: str, backend: str, precision: str, drift: DriftRecord, build: BuildRecord,
              weights: str | None = None) -> Artifact:
    rec = file_record(ctx.bundle_dir, name)
    return Artifact(file=rec.file, sha256=rec.sha256, bytes=rec.bytes, backend=backend, precision=precision,
                    drift=drift, build=build, built_with=ctx.versions,
                    weights=file_record(ctx.bundle_dir, weights) if weights else None)


def _since(t0: float) -> float:
    return round(time.perf_counter() - t0, 3)


def build_onnxruntime(ctx: Context, precision: str) -> Artifact:
    from . import ort_quantize

    t0 = time.perf_counter()
    name = f"model.{precision}.onnx"
    target = ctx.bundle_dir / name
    if precision == "fp16":
        settings = ort_quantize.convert_fp16(ctx.fp32_onnx, target)
        drift = measure(ctx, "onnxruntime", target, precision)
        build = BuildRecord(seconds=_since(t0), tool="onnxruntime.transformers.float16", settings=settings)
        return _artifact(ctx, name, "onnxruntime", precision, drift, build)

    from .fallback import exclusion_ladder, output_layers, rank_nodes

    prepared = prepared_for_quantization(ctx)
    settings = ort_quantize.quantize_int8(prepared, target, ctx.calibration, ctx.pre, ctx.input_name, ctx.calib_method)
    drift = measure(ctx, "onnxruntime", target, precision)
    attempts: list[dict] = [{"excluded": [], **_short(drift)}]
    excluded: list[str] = []
    sqnr: list[tuple[str, float]] = []
    if not drift.passed:
        ctx.log(f"  onnxruntime int8 misses the budget ({'; '.join(drift.missed)}); ranking layers")
        ranked = rank_nodes(prepared, target, ctx.calibration.subset(8), ctx.pre, ctx.input_name, ctx.scratch)
        sqnr = [(n, round(s, 2)) for n, s, _ in ranked[:12]]
        for excluded in exclusion_ladder(ranked, output_layers(prepared)):
            ort_quantize.quantize_int8(prepared, target, ctx.calibration, ctx.pre, ctx.input_name, ctx.calib_method,
                                       exclude=excluded)
            tuning = measure(ctx, "onnxruntime", target, precision, part="tuning")
            attempts.append({"excluded": excluded, "tuning": _short(tuning)})
            ctx.log(f"  kept {len(excluded)} node(s) in float (tuning half): {_verdict(tuning)}")
            if tuning.passed:
                break
        drift = measure(ctx, "onnxruntime", target, precision)  # the verdict, on the other half
        attempts[-1]["gate"] = _short(drift)
    build = BuildRecord(seconds=_since(t0), tool=f"onnxruntime.quantization {ctx.versions.get('onnxruntime', '')}",
                        settings=settings, excluded_nodes=list(excluded), layer_sqnr_db=sqnr, attempts=attempts,
                        quantized_layers=quantized_layers_onnx(target))
    return _artifact(ctx, name, "onnxruntime", precision, drift, build)


def build_openvino(ctx: Context, precision: str) -> Artifact:
    from . import openvino_ir

    t0 = time.perf_counter()
    xml, bin_ = f"openvino.{precision}.xml", f"openvino.{precision}.bin"
    target = ctx.bundle_dir / xml
    opts = {"static_batch": ctx.static_batch}
    if precision in ("fp32", "fp16"):
        settings = openvino_ir.export_ir(ctx.fp32_onnx, target, precision, ctx.static_batch)
        drift = measure(ctx, "openvino", target, precision, **opts)
        build = BuildRecord(seconds=_since(t0), tool="openvino.convert_model", settings=settings,
                            static_batch=ctx.static_batch)
        return _artifact(ctx, xml, "openvino", precision, drift, build, bin_)
    settings = openvino_ir.quantize_ir(ctx.fp32_onnx, target, ctx.calibration, ctx.pre, ctx.static_batch)
    drift = measure(ctx, "openvino", target, precision, **opts)
    attempts: list[dict] = [{"accuracy_control": False, **_short(drift)}]
    primary = ctx.budget.primary
    if not drift.passed and primary.op == ">=":
        ctx.log(f"  openvino int8 misses the budget ({'; '.join(drift.missed)}); "
                "NNCF accuracy control keeps harmful layers in float")
        tune = halves(len(ctx.evaluation))[0]

        def score(outputs: np.ndarray) -> float:
            return compare(ctx.reference[tune], outputs, ctx.task, ctx.output_kind).values[primary.metric]

        settings = openvino_ir.quantize_ir_with_accuracy_control(
            ctx.fp32_onnx, target, ctx.calibration, ctx.pre, ctx.evaluation[tune], score,
            max_drop=max(0.0, 1.0 - primary.value), static_batch=ctx.static_batch)
        drift = measure(ctx, "openvino", target, precision, **opts)
        attempts.append({"accuracy_control": True, **_short(drift)})
        ctx.log(f"  after accuracy control: {_verdict(drift)}")
    layers = quantized_layers_openvino(target)
    if layers.fake_quantize_ops == 0:
        ctx.log("  note: no layer is left in INT8; this artifact is FP32 in all but name")
    build = BuildRecord(seconds=_since(t0), tool=str(settings.pop("tool", "nncf")), settings=settings,
                        quantized_layers=layers, attempts=attempts, static_batch=ctx.static_batch)
    return _artifact(ctx, xml, "openvino", precision, drift, build, bin_)


def build_tensorrt(ctx: Context, precision: str) -> Artifact:
    """TensorRT (UNVERIFIED: needs the tensorrt package and a GPU). The bundle keeps the ONNX the
    engine is built from and the exact build options; the engine itself lives in the target's
    engine cache, built here for the gate and rebuilt with the same options wherever it is loaded.
    INT8 uses a Q/DQ ONNX with symmetric activations, as TensorRT requires."""
    from edgemed.devices.detect import detect, match_profile
    from edgemed.devices.profiles import load_profiles
    from edgemed.runtimes.engine_cache import build_options

    from . import ort_quantize

    t0 = time.perf_counter()
    profiles = load_profiles()
    profile = profiles[match_profile(detect(probe_openvino=False), profiles)]
    options = build_options(profile.tensorrt, precision, ctx.evaluation.shape[1:], ctx.dla_core)
    settings: dict = {}
    if precision == "int8":
        name = "model.int8-qdq-symmetric.onnx"
        settings = ort_quantize.quantize_int8(prepared_for_quantization(ctx), ctx.bundle_dir / name, ctx.calibration,
                                              ctx.pre, ctx.input_name, ctx.calib_method, symmetric_activations=True)
    else:
        name = f"model.tensorrt-{precision}.onnx"
        (ctx.bundle_dir / name).write_bytes(ctx.fp32_onnx.read_bytes())
    drift = measure(ctx, "tensorrt", ctx.bundle_dir / name, precision, options=options)
    settings["device_profile"] = profile.name
    build = BuildRecord(seconds=_since(t0), tool="tensorrt (engine built and cached on the target)",
                        settings=settings, tensorrt=options)
    return _artifact(ctx, name, "tensorrt", precision, drift, build)


LAYER_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}


def quantized_layers_onnx(path: Path) -> QuantizedLayers:
    """How many compute layers of a QDQ model really take INT8 weights (an all-float "INT8" shows 0)."""
    import onnx

    graph = onnx.load(str(path)).graph
    dq_outputs = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    layers = [n for n in graph.node if n.op_type in LAYER_OPS]
    return QuantizedLayers(int8=sum(1 for n in layers if len(n.input) > 1 and n.input[1] in dq_outputs),
                           of=len(layers))


def quantized_layers_openvino(xml: Path) -> QuantizedLayers:
    import openvino as ov

    model = ov.Core().read_model(str(xml))
    types = [op.get_type_name() for op in model.get_ops()]
    layers = sum(t in ("Convolution", "ConvolutionBackpropData", "MatMul", "GroupConvolution") for t in types)
    fq = types.count("FakeQuantize")
    return QuantizedLayers(int8=min(layers, fq), of=layers, fake_quantize_ops=fq)


BUILDERS = {"onnxruntime": build_onnxruntime, "openvino": build_openvino, "tensorrt": build_tensorrt}


def _short(drift: DriftRecord) -> dict:
    keys = ("agreement", "dice", "changed_pixels", "max_abs_diff")
    return {k: drift.value(k) for k in keys if k in drift.metrics} | {"passed": drift.passed}


def _verdict(drift: DriftRecord) -> str:
    main = ", ".join(f"{k} {drift.value(k):.4f}" for k in ("agreement", "dice", "changed_pixels") if k in drift.metrics)
    return f"{main} -> {drift.verdict}"
