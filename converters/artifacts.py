"""Building each (backend, precision) artifact and passing it through the drift gate.

One function per artifact kind keeps the loaders (build) apart from the runners (measure),
as Polygraphy does; the gate (:mod:`edgemed.gate`) and the fallback ladder are shared. The
fallback tunes on its own images (point estimates, :func:`edgemed.gate.meets`); the verdict
is taken once, on the verdict images, with bounds. An "INT8" artifact with no INT8 layer left
is not kept: it would be FP32 under a false name.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgemed.bundle import file_record
from edgemed.clinical import judge_clinical
from edgemed.datasets import ImageSet
from edgemed.drift import compare
from edgemed.gate import Budget, Population, judge, meets, point_values
from edgemed.manifest import Artifact, BuildRecord, ClinicalRecord, DriftRecord, QuantizedLayers
from edgemed.output_reader import OutputReader
from edgemed.preprocess import Preprocessor
from edgemed.runtimes import create_engine

from .reference import engine_outputs


@dataclass
class Cases:
    """Preprocessed inputs and the FP32 reference's outputs on them."""

    inputs: np.ndarray
    reference: Any  # stacked outputs, or a list of Detections


@dataclass
class Labelled:
    """Labelled validation cases (--val/--val-labels): inputs, ground truth, the FP32 artifact's outputs."""

    inputs: np.ndarray
    truth: list
    fp32: Any
    margin: float
    source: str


@dataclass
class Context:
    """What every builder needs: the FP32 model, the data, the reference, the budget."""

    bundle_dir: Path
    scratch: Path
    fp32_onnx: Path
    pre: Preprocessor
    input_name: str
    reader: OutputReader  # how engine outputs are read for the gate (primary output, or detections)
    calibration: ImageSet
    tuning: Cases
    verdict: Cases
    population: Population  # FP32 decision margins over every image
    task: str
    output_kind: str
    budget: Budget
    labels: list[str]
    labelled: Labelled | None = None
    calib_method: str = "minmax"
    static_batch: int | None = None
    dla_core: int | None = None
    log: Callable[[str], None] = print
    versions: dict = field(default_factory=dict)
    dropped: list[dict] = field(default_factory=list)  # artifacts not kept, with the reason


class Dropped(Exception):
    """An artifact that must not be kept (e.g. INT8 with no INT8 layer left)."""


def _outputs(ctx: Context, engine: Any, inputs: np.ndarray) -> Any:
    return engine_outputs(engine, inputs, engine.inputs[0].name, ctx.reader)


def tuning_meets(ctx: Context, backend: str, path: Path, precision: str, **options: Any) -> tuple[bool, dict]:
    """Does the candidate meet the budget's point values on the tuning images (the fallback's stopping rule)?"""
    with create_engine(backend, path, device="cpu", precision=precision, **options) as engine:
        comparison = compare(ctx.tuning.reference, _outputs(ctx, engine, ctx.tuning.inputs), ctx.task,
                             ctx.output_kind, ctx.labels)
    ok = meets(comparison, ctx.budget, ctx.population)
    return ok, {k: round(v, 6) for k, v in point_values(comparison, ctx.population).items()} | {"meets_budget": ok}


def verdict(ctx: Context, engine: Any) -> tuple[DriftRecord, ClinicalRecord | None]:
    """The gate on the verdict images (bounds included) and, with labelled data, against ground truth."""
    comparison = compare(ctx.verdict.reference, _outputs(ctx, engine, ctx.verdict.inputs), ctx.task,
                         ctx.output_kind, ctx.labels)
    drift = judge(comparison, ctx.budget, f"{comparison.cases} verdict images", ctx.population)
    clinical = None
    if ctx.labelled is not None:
        cand = _outputs(ctx, engine, ctx.labelled.inputs)
        clinical = judge_clinical(ctx.labelled.truth, ctx.labelled.fp32, cand, ctx.task, ctx.output_kind, ctx.labels,
                                  ctx.labelled.margin, ctx.labelled.source)
    return drift, clinical


def measure(ctx: Context, backend: str, path: Path, precision: str, **options: Any
            ) -> tuple[DriftRecord, ClinicalRecord | None]:
    with create_engine(backend, path, device="cpu", precision=precision, **options) as engine:
        return verdict(ctx, engine)


def prepared_for_quantization(ctx: Context) -> Path:
    """ORT's quant_pre_process output, made once per conversion (ORT INT8 and TensorRT INT8 share it)."""
    from .ort_quantize import preprocess_for_quantization

    path = ctx.scratch / "prepared.onnx"
    return path if path.is_file() else preprocess_for_quantization(ctx.fp32_onnx, path)


def _artifact(ctx: Context, name: str, backend: str, precision: str, gate: tuple[DriftRecord, ClinicalRecord | None],
              build: BuildRecord, weights: str | None = None) -> Artifact:
    rec = file_record(ctx.bundle_dir, name)
    drift, clinical = gate
    return Artifact(file=rec.file, sha256=rec.sha256, bytes=rec.bytes, backend=backend, precision=precision,
                    drift=drift, clinical=clinical, build=build, built_with=ctx.versions,
                    weights=file_record(ctx.bundle_dir, weights) if weights else None)


def _since(t0: float) -> float:
    return round(time.perf_counter() - t0, 3)


def _no_int8_left(ctx: Context, layers: QuantizedLayers, files: list[Path], key: str, attempts: list[dict]) -> None:
    if layers.int8 == 0:
        for f in files:
            f.unlink(missing_ok=True)
        reason = f"no layer is left in INT8 ({layers.int8}/{layers.of}): it would be FP32 under the name int8"
        ctx.dropped.append({"artifact": key, "reason": reason, "attempts": attempts})
        raise Dropped(reason)


def build_onnxruntime(ctx: Context, precision: str) -> Artifact:
    from . import ort_quantize

    t0 = time.perf_counter()
    name = f"model.{precision}.onnx"
    target = ctx.bundle_dir / name
    if precision == "fp16":
        settings = ort_quantize.convert_fp16(ctx.fp32_onnx, target)
        build = BuildRecord(seconds=_since(t0), tool="onnxruntime.transformers.float16", settings=settings)
        return _artifact(ctx, name, "onnxruntime", precision, measure(ctx, "onnxruntime", target, precision), build)

    from .fallback import exclusion_ladder, input_layers, output_layers, rank_nodes

    prepared = prepared_for_quantization(ctx)
    settings = ort_quantize.quantize_int8(prepared, target, ctx.calibration, ctx.pre, ctx.input_name, ctx.calib_method)
    ok, figures = tuning_meets(ctx, "onnxruntime", target, precision)
    attempts: list[dict] = [{"excluded": [], "tuning": figures}]
    excluded: list[str] = []
    sqnr: list[tuple[str, float]] = []
    if not ok:
        ctx.log("  onnxruntime int8 misses the budget on the tuning images; ranking layers by quantization noise")
        ranked = rank_nodes(prepared, target, ctx.calibration.subset(8), ctx.pre, ctx.input_name, ctx.scratch)
        sqnr = [(n, round(s, 2)) for n, s, _ in ranked[:12]]
        for excluded in exclusion_ladder(ranked, output_layers(prepared), input_layers(prepared)):
            ort_quantize.quantize_int8(prepared, target, ctx.calibration, ctx.pre, ctx.input_name, ctx.calib_method,
                                       exclude=excluded)
            ok, figures = tuning_meets(ctx, "onnxruntime", target, precision)
            attempts.append({"excluded": excluded, "tuning": figures})
            ctx.log(f"  kept {len(excluded)} node(s) in float: tuning {_brief(figures)}")
            if ok:
                break
    layers = quantized_layers_onnx(target)
    _no_int8_left(ctx, layers, [target], "onnxruntime/int8", attempts)
    build = BuildRecord(seconds=_since(t0), tool=f"onnxruntime.quantization {ctx.versions.get('onnxruntime', '')}",
                        settings=settings, excluded_nodes=list(excluded), layer_sqnr_db=sqnr, attempts=attempts,
                        quantized_layers=layers)
    return _artifact(ctx, name, "onnxruntime", precision, measure(ctx, "onnxruntime", target, precision), build)


def build_openvino(ctx: Context, precision: str) -> Artifact:
    from . import openvino_ir

    t0 = time.perf_counter()
    xml, bin_ = f"openvino.{precision}.xml", f"openvino.{precision}.bin"
    target = ctx.bundle_dir / xml
    opts = {"static_batch": ctx.static_batch}
    if precision in ("fp32", "fp16"):
        settings = openvino_ir.export_ir(ctx.fp32_onnx, target, precision, ctx.static_batch)
        build = BuildRecord(seconds=_since(t0), tool="openvino.convert_model", settings=settings,
                            static_batch=ctx.static_batch)
        return _artifact(ctx, xml, "openvino", precision, measure(ctx, "openvino", target, precision, **opts), build,
                         bin_)
    # NNCF's defaults first, then other presets and bias corrections (openvino_ir.VARIANTS), each with the
    # last and then also the first layer kept in float; the first that meets the budget on the tuning
    # images is kept, else NNCF's accuracy control runs with the variant that scored best.
    attempts: list[dict] = []
    scores: dict[tuple, float] = {}
    primary = ctx.budget.primary
    first, last = openvino_ir.end_layers(ctx.fp32_onnx)
    ok = False
    for keep in ([], last, last + first):
        for preset, bias in openvino_ir.VARIANTS:
            settings = openvino_ir.quantize_ir(ctx.fp32_onnx, target, ctx.calibration, ctx.pre, ctx.static_batch,
                                               preset, keep, bias)
            ok, figures = tuning_meets(ctx, "openvino", target, precision, **opts)
            attempts.append({"preset": preset, "bias_correction": bias, "kept_in_float": keep, "tuning": figures})
            if not keep:
                scores[(preset, bias)] = figures[primary.metric] if primary.op == ">=" else -figures[primary.metric]
            ctx.log(f"  preset {preset}, {bias} bias correction, {len(keep)} layer(s) in float: tuning "
                    f"{_brief(figures)}")
            if ok:
                break  # the file on disk is this attempt's
        if ok:
            break
    if not ok:
        preset, bias = max(scores, key=scores.__getitem__)
        ctx.log(f"  openvino int8 misses the budget on the tuning images in every variant; NNCF accuracy control "
                f"(preset {preset}, {bias} bias correction) keeps harmful layers in float")

        def score(cases: list[tuple[int, dict]]) -> float:
            index = [i for i, _ in cases]
            reference = [ctx.tuning.reference[i] for i in index] if ctx.task == "detection" else \
                ctx.tuning.reference[index]
            outputs = ctx.reader.collect([ctx.reader.one(c) for _, c in cases])
            return compare(reference, outputs, ctx.task, ctx.output_kind).values[primary.metric]

        settings = openvino_ir.quantize_ir_with_accuracy_control(
            ctx.fp32_onnx, target, ctx.calibration, ctx.pre, ctx.tuning.inputs, score,
            max_drop=max(0.0, 1.0 - primary.value) if primary.op == ">=" else 0.0, static_batch=ctx.static_batch,
            preset=preset, bias_correction=bias, per_case=ctx.task == "detection")
        attempts.append({"accuracy_control": True, "tuning": tuning_meets(ctx, "openvino", target, precision,
                                                                          **opts)[1]})
    layers = quantized_layers_openvino(target)
    _no_int8_left(ctx, layers, [target, ctx.bundle_dir / bin_], "openvino/int8", attempts)
    build = BuildRecord(seconds=_since(t0), tool=str(settings.pop("tool", "nncf")), settings=settings,
                        quantized_layers=layers, attempts=attempts, static_batch=ctx.static_batch)
    return _artifact(ctx, xml, "openvino", precision, measure(ctx, "openvino", target, precision, **opts), build, bin_)


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
    options = build_options(profile.tensorrt, precision, ctx.verdict.inputs.shape[1:], ctx.dla_core)
    settings: dict = {}
    if precision == "int8":
        name = "model.int8-qdq-symmetric.onnx"
        settings = ort_quantize.quantize_int8(prepared_for_quantization(ctx), ctx.bundle_dir / name, ctx.calibration,
                                              ctx.pre, ctx.input_name, ctx.calib_method, symmetric_activations=True)
    else:
        name = f"model.tensorrt-{precision}.onnx"
        (ctx.bundle_dir / name).write_bytes(ctx.fp32_onnx.read_bytes())
    gate = measure(ctx, "tensorrt", ctx.bundle_dir / name, precision, options=options)
    settings["device_profile"] = profile.name
    build = BuildRecord(seconds=_since(t0), tool="tensorrt (engine built and cached on the target)",
                        settings=settings, tensorrt=options)
    return _artifact(ctx, name, "tensorrt", precision, gate, build)


LAYER_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm", "LSTM", "GRU", "RNN"}
INT8_KERNELS = {"DynamicQuantizeLSTM", "MatMulInteger", "DynamicQuantizeMatMul"}  # layers whose weights are int8


def quantized_layers_onnx(path: Path) -> QuantizedLayers:
    """How many compute layers of a QDQ model really take INT8 weights (an all-float "INT8" shows 0)."""
    import onnx

    graph = onnx.load(str(path)).graph
    dq_outputs = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    layers = [n for n in graph.node if n.op_type in LAYER_OPS]
    dynamic = sum(1 for n in graph.node if n.op_type in INT8_KERNELS)
    return QuantizedLayers(int8=dynamic + sum(1 for n in layers if len(n.input) > 1 and n.input[1] in dq_outputs),
                           of=len(layers) + dynamic)


def quantized_layers_openvino(xml: Path) -> QuantizedLayers:
    import openvino as ov

    model = ov.Core().read_model(str(xml))
    types = [op.get_type_name() for op in model.get_ops()]
    layers = sum(t in ("Convolution", "ConvolutionBackpropData", "MatMul", "GroupConvolution", "LSTMSequence",
                       "GRUSequence", "RNNSequence") for t in types)
    fq = types.count("FakeQuantize")
    return QuantizedLayers(int8=min(layers, fq), of=layers, fake_quantize_ops=fq)


BUILDERS = {"onnxruntime": build_onnxruntime, "openvino": build_openvino, "tensorrt": build_tensorrt}


def _brief(figures: dict) -> str:
    main = ", ".join(f"{k} {figures[k]:.4f}" for k in ("agreement", "lesion_agreement", "case_dice") if k in figures)
    return f"{main} -> {'meets' if figures['meets_budget'] else 'misses'} the budget"
