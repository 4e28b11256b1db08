"""Building each (backend, precision) artifact and passing it through the drift gate.

One function per artifact kind keeps the loaders (build) apart from the runners (measure),
as Polygraphy does; the gate and the fallback ladder are shared.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgemed.bundle import file_entry
from edgemed.datasets import ImageSet
from edgemed.drift import Bound, drift_figures, judge
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
    bounds: list[Bound]
    calib_method: str = "minmax"
    static_batch: int | None = None
    dla_core: int | None = None
    log: Any = print
    versions: dict = field(default_factory=dict)


def halves(n: int) -> tuple[slice, slice]:
    """(tuning, gate) halves of the held-out images: even and odd positions.

    Fallback and accuracy control tune on one half and the verdict is taken on the other, so the
    gate never grades the images the fallback optimised for.
    """
    return slice(0, n, 2), slice(1, n, 2)


def judge_engine(ctx: Context, engine: Any, part: str = "gate") -> dict:
    """Run an engine on one half of the held-out images and judge its drift against the budget."""
    sel = halves(len(ctx.evaluation))[0 if part == "tuning" else 1]
    outputs = engine_outputs(engine, ctx.evaluation[sel], engine.inputs[0].name, engine.outputs[0].name)
    figures = drift_figures(ctx.reference[sel], outputs, ctx.task, ctx.output_kind)
    figures["evaluated_on"] = f"{part} half of the held-out images"
    passed, missed = judge(figures, ctx.bounds)
    figures.update(passed=passed, missed=missed, budget=",".join(map(str, ctx.bounds)))
    return figures


def measure(ctx: Context, backend: str, path: Path, precision: str, part: str = "gate") -> dict:
    with create_engine(backend, path, device="cpu", precision=precision) as engine:
        return judge_engine(ctx, engine, part)


def prepared_for_quantization(ctx: Context) -> Path:
    """ORT's quant_pre_process output, made once per conversion (ORT INT8 and TensorRT INT8 share it)."""
    from .ort_quantize import preprocess_for_quantization

    path = ctx.scratch / "prepared.onnx"
    return path if path.is_file() else preprocess_for_quantization(ctx.fp32_onnx, path)


def _entry(ctx: Context, name: str, backend: str, precision: str, figures: dict, build: dict, seconds: float,
           weights: str | None = None) -> dict:
    entry = file_entry(ctx.bundle_dir, name, backend=backend, precision=precision, drift=figures,
                       build={**build, "seconds": round(seconds, 3)}, built_with=ctx.versions)
    if weights:
        entry["weights"] = file_entry(ctx.bundle_dir, weights)
    return entry


def build_onnxruntime(ctx: Context, precision: str) -> dict:
    from . import ort_quantize

    t0 = time.perf_counter()
    name = f"model.{precision}.onnx"
    target = ctx.bundle_dir / name
    if precision == "fp16":
        build = ort_quantize.convert_fp16(ctx.fp32_onnx, target)
        figures = measure(ctx, "onnxruntime", target, precision)
        return _entry(ctx, name, "onnxruntime", precision, figures, build, time.perf_counter() - t0)

    from .fallback import exclusion_ladder, output_layers, rank_nodes

    prepared = prepared_for_quantization(ctx)
    build = ort_quantize.quantize_int8(prepared, target, ctx.calibration, ctx.pre, ctx.input_name, ctx.calib_method)
    figures = measure(ctx, "onnxruntime", target, precision)
    attempts = [{"excluded": [], **_short(figures)}]
    if not figures["passed"]:
        ctx.log(f"  onnxruntime int8 misses the budget ({'; '.join(figures['missed'])}); ranking layers")
        ranked = rank_nodes(prepared, target, ctx.calibration.subset(8), ctx.pre, ctx.input_name, ctx.scratch)
        build["layer_sqnr_db"] = [[n, round(s, 2)] for n, s, _ in ranked[:12]]
        for excluded in exclusion_ladder(ranked, output_layers(prepared)):
            trial = ort_quantize.quantize_int8(prepared, target, ctx.calibration, ctx.pre, ctx.input_name,
                                               ctx.calib_method, exclude=excluded)
            tuning = measure(ctx, "onnxruntime", target, precision, part="tuning")
            attempts.append({"excluded": excluded, "tuning": _short(tuning)})
            ctx.log(f"  kept {len(excluded)} node(s) in float (tuning half): {_verdict(tuning)}")
            build = {**build, **trial}
            if tuning["passed"]:
                break
        figures = measure(ctx, "onnxruntime", target, precision)  # the verdict, on the other half
        attempts[-1]["gate"] = _short(figures)
    build["attempts"] = attempts
    build["quantized_layers"] = quantized_layers_onnx(target)
    return _entry(ctx, name, "onnxruntime", precision, figures, build, time.perf_counter() - t0)


def build_openvino(ctx: Context, precision: str) -> dict:
    from . import openvino_ir

    t0 = time.perf_counter()
    xml, bin_ = f"openvino.{precision}.xml", f"openvino.{precision}.bin"
    target = ctx.bundle_dir / xml
    if precision in ("fp32", "fp16"):
        build = openvino_ir.export_ir(ctx.fp32_onnx, target, precision, ctx.static_batch)
        figures = measure(ctx, "openvino", target, precision)
        return _entry(ctx, xml, "openvino", precision, figures, build, time.perf_counter() - t0, bin_)
    build = openvino_ir.quantize_ir(ctx.fp32_onnx, target, ctx.calibration, ctx.pre, ctx.static_batch)
    figures = measure(ctx, "openvino", target, precision)
    attempts = [{"accuracy_control": False, **_short(figures)}]
    primary = ctx.bounds[0]
    if not figures["passed"] and primary.op == ">=":
        ctx.log(f"  openvino int8 misses the budget ({'; '.join(figures['missed'])}); "
                "NNCF accuracy control keeps harmful layers in float")

        tune = halves(len(ctx.evaluation))[0]

        def score(outputs: np.ndarray) -> float:
            return float(drift_figures(ctx.reference[tune], outputs, ctx.task, ctx.output_kind)[primary.metric])

        build = openvino_ir.quantize_ir_with_accuracy_control(
            ctx.fp32_onnx, target, ctx.calibration, ctx.pre, ctx.evaluation[tune], score,
            max_drop=max(0.0, 1.0 - primary.value), static_batch=ctx.static_batch)
        figures = measure(ctx, "openvino", target, precision)
        attempts.append({"accuracy_control": True, **_short(figures)})
        ctx.log(f"  after accuracy control: {_verdict(figures)}")
    build["attempts"] = attempts
    build["quantized_layers"] = quantized_layers_openvino(target)
    if build["quantized_layers"]["fake_quantize_ops"] == 0:
        ctx.log("  note: no layer is left in INT8; this artifact is FP32 in all but name")
    return _entry(ctx, xml, "openvino", precision, figures, build, time.perf_counter() - t0, bin_)


def build_tensorrt(ctx: Context, precision: str) -> dict:
    """TensorRT (UNVERIFIED: needs the tensorrt package and a GPU). The bundle keeps the ONNX the
    engine is built from; the engine itself lives in the target's engine cache, built here on
    first measurement. INT8 uses a Q/DQ ONNX with symmetric activations, as TensorRT requires."""
    from . import ort_quantize

    t0 = time.perf_counter()
    if precision == "int8":
        name = "model.int8-qdq-symmetric.onnx"
        build = ort_quantize.quantize_int8(prepared_for_quantization(ctx), ctx.bundle_dir / name, ctx.calibration,
                                           ctx.pre, ctx.input_name, ctx.calib_method, symmetric_activations=True)
    else:
        name, build = f"model.tensorrt-{precision}.onnx", {}
        (ctx.bundle_dir / name).write_bytes(ctx.fp32_onnx.read_bytes())
    from edgemed.runtimes.engine_cache import BuildOptions
    from edgemed.runtimes.tensorrt import TensorRtEngine

    shape = tuple(int(d) for d in ctx.evaluation.shape[1:])
    options = BuildOptions(precision, (1, *shape), (1, *shape), (max(1, len(ctx.evaluation)), *shape), ctx.dla_core)
    with TensorRtEngine(ctx.bundle_dir / name, precision=precision, options=options) as engine:
        figures = judge_engine(ctx, engine)
    build.update(engine="built and cached on the target (see edgemed.runtimes.engine_cache)",
                 builder_flags=options.builder_flags(), dla_core=ctx.dla_core)
    return _entry(ctx, name, "tensorrt", precision, figures, build, time.perf_counter() - t0)


LAYER_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}


def quantized_layers_onnx(path: Path) -> dict:
    """How many compute layers of a QDQ model really take INT8 weights (an all-float "INT8" shows 0)."""
    import onnx

    graph = onnx.load(str(path)).graph
    dq_outputs = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    layers = [n for n in graph.node if n.op_type in LAYER_OPS]
    return {"int8": sum(1 for n in layers if len(n.input) > 1 and n.input[1] in dq_outputs), "of": len(layers)}


def quantized_layers_openvino(xml: Path) -> dict:
    import openvino as ov

    model = ov.Core().read_model(str(xml))
    types = [op.get_type_name() for op in model.get_ops()]
    layers = sum(t in ("Convolution", "ConvolutionBackpropData", "MatMul", "GroupConvolution") for t in types)
    fq = types.count("FakeQuantize")
    return {"int8": min(layers, fq), "of": layers, "fake_quantize_ops": fq}


BUILDERS = {"onnxruntime": build_onnxruntime, "openvino": build_openvino, "tensorrt": build_tensorrt}


def _short(figures: dict) -> dict:
    keys = ("agreement", "dice", "changed_pixels", "max_abs_diff", "passed")
    return {k: figures[k] for k in keys if k in figures}


def _verdict(figures: dict) -> str:
    main = ", ".join(f"{k} {figures[k]:.4f}" for k in ("agreement", "dice", "changed_pixels") if k in figures)
    return f"{main} -> {'passed' if figures['passed'] else 'failed'}"
