"""Building each (backend, precision) artifact and passing it through the drift gate.

One function per artifact kind keeps the loaders (build) apart from the runners (measure,
:mod:`edgemed.converters.measure`), as Polygraphy does; the gate (:mod:`edgemed.gate.verdict`) and the fallback
ladder are shared. The fallback aims at the bound the verdict will be held to: each attempt is measured on
the tuning cases, and the verdict's bounds are predicted at the verdict set's size
(:func:`edgemed.gate.verdict.predict`); it stops at the first attempt predicted to be certified, else keeps the one
predicted best. Where even a candidate with no flip could not be certified on the verdict cases given, it aims
at what a site's certification on ``SITE_CASES`` cases could prove (``edgemed certify``). The verdict is
taken once, on the verdict cases, with bounds. An "INT8" artifact with no INT8 layer left is not kept: it
would be FP32 under a false name.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgemed.bundle import file_record
from edgemed.datasets import ImageSet
from edgemed.gate.verdict import Prediction
from edgemed.manifest import Artifact, BuildRecord, QuantizedLayers
from edgemed.preprocess import Preprocessor
from edgemed.tasks import task_named

from .calibration import case_input, input_names
from .measure import Gauge, Measured, open_candidate

SITE_CASES = 10_000  # what the fallback aims at when the verdict set is too small to certify anything


@dataclass
class Context:
    """What every builder needs: the FP32 model, the calibration images, the gauge that measures candidates."""

    bundle_dir: Path
    scratch: Path
    fp32_onnx: Path
    pre: Preprocessor
    input_name: str
    calibration: ImageSet
    gauge: Gauge
    calib_method: str = "minmax"
    static_batch: int | None = None
    dla_core: int | None = None
    log: Callable[[str], None] = print
    versions: dict = field(default_factory=dict)
    dropped: list[dict] = field(default_factory=list)  # artifacts not kept, with the reason
    aim_cases: int | None = None  # the verdict size the fallback predicts at (set on the first attempt)

    @property
    def budget(self):
        return self.gauge.budget


@dataclass
class Built:
    """An artifact and its own outputs on the bundle's reference probes (from the session that measured it)."""

    artifact: Artifact
    probes: Any


class Dropped(Exception):
    """An artifact that must not be kept (e.g. INT8 with no INT8 layer left)."""


def attempt(ctx: Context, backend: str, path: Path, precision: str, **options: Any) -> tuple[Prediction, dict]:
    """One fallback attempt on the tuning cases: the verdict predicted at the size the fallback aims at."""
    with open_candidate(backend, path, precision, **options) as engine:
        comparison = ctx.gauge.tuning_comparison(engine)
    if ctx.aim_cases is None:
        prediction, _ = ctx.gauge.prediction(comparison, len(ctx.gauge.verdict))
        ctx.aim_cases = len(ctx.gauge.verdict)
        if not prediction.reachable:
            ctx.aim_cases = SITE_CASES
            ctx.log(f"  {prediction.note}: the fallback aims at what {SITE_CASES} site cases could certify "
                    "(edgemed certify); give --eval with more images to certify at conversion")
    return ctx.gauge.prediction(comparison, ctx.aim_cases)


def measure(ctx: Context, backend: str, path: Path, precision: str, **options: Any) -> Measured:
    with open_candidate(backend, path, precision, **options) as engine:
        return ctx.gauge.measure(engine, precision)


def prepared_for_quantization(ctx: Context) -> Path:
    """ORT's quant_pre_process output, made once per conversion (ORT INT8 and TensorRT INT8 share it)."""
    from .ort_quantize import preprocess_for_quantization

    path = ctx.scratch / "prepared.onnx"
    return path if path.is_file() else preprocess_for_quantization(ctx.fp32_onnx, path)


def _built(ctx: Context, name: str, backend: str, precision: str, measured: Measured, build: BuildRecord,
           weights: str | None = None) -> Built:
    rec = file_record(ctx.bundle_dir, name)
    artifact = Artifact(file=rec.file, sha256=rec.sha256, bytes=rec.bytes, backend=backend, precision=precision,
                        drift=measured.drift, clinical=measured.clinical, build=build, built_with=ctx.versions,
                        weights=file_record(ctx.bundle_dir, weights) if weights else None)
    return Built(artifact, measured.probes)


def _since(t0: float) -> float:
    return round(time.perf_counter() - t0, 3)


def _no_int8_left(ctx: Context, layers: QuantizedLayers, files: list[Path], key: str, attempts: list[dict]) -> None:
    if layers.int8 == 0:
        for f in files:
            f.unlink(missing_ok=True)
        reason = f"no layer is left in INT8 ({layers.int8}/{layers.of}): it would be FP32 under the name int8"
        ctx.dropped.append({"artifact": key, "reason": reason, "attempts": attempts})
        raise Dropped(reason)


class Best:
    """The attempt predicted best so far among those that still hold an INT8 layer, its files kept aside in the
    scratch directory."""

    def __init__(self, ctx: Context, files: list[Path], count: Callable[[Path], QuantizedLayers]) -> None:
        self.files, self.score, self.record, self.count = files, None, None, count
        self.saved = [ctx.scratch / f"best-{f.name}" for f in files]

    def offer(self, prediction: Prediction, record: dict) -> bool:
        """Keep the attempt if it is the best so far; False if it has no INT8 layer left (it is never kept, and
        keeping more layers in float cannot bring one back)."""
        if self.count(self.files[0]).int8 == 0:
            return False
        score = _score(prediction)
        if self.score is None or score > self.score:
            self.score, self.record = score, record
            for f, s in zip(self.files, self.saved):
                shutil.copyfile(f, s)
        return True

    def restore(self) -> dict:
        for f, s in zip(self.files, self.saved):
            shutil.copyfile(s, f)
        return self.record


def _score(prediction: Prediction) -> float:
    """How close an attempt comes to the budget: its worst predicted term, as a margin over that term's bound."""
    worst = float("inf")
    for term, got in prediction.bounds.items():
        value = float(term.split("=")[-1])
        worst = min(worst, (got - value) if ">=" in term else (value - got))
    return worst


def build_onnxruntime(ctx: Context, precision: str) -> Built:
    from . import ort_quantize

    t0 = time.perf_counter()
    name = f"model.{precision}.onnx"
    target = ctx.bundle_dir / name
    if precision == "fp16":
        settings = ort_quantize.convert_fp16(ctx.fp32_onnx, target)
        build = BuildRecord(seconds=_since(t0), tool="onnxruntime.transformers.float16", settings=settings)
        return _built(ctx, name, "onnxruntime", precision, measure(ctx, "onnxruntime", target, precision), build)

    from .fallback import exclusion_ladder, input_layers, output_layers, rank_nodes, recurrent_layers

    prepared = prepared_for_quantization(ctx)

    def quantize(exclude: list[str]) -> dict:
        return ort_quantize.quantize_int8(prepared, target, ctx.calibration, ctx.pre, ctx.input_name,
                                          ctx.calib_method, exclude=exclude)

    settings = quantize([])
    prediction, figures = attempt(ctx, "onnxruntime", target, precision)
    attempts: list[dict] = [{"excluded": [], "predicted": figures}]
    best = Best(ctx, [target], quantized_layers_onnx)
    best.offer(prediction, {"excluded": [], "settings": settings})
    sqnr: list[tuple[str, float]] = []
    if not prediction.meets:
        ctx.log(f"  onnxruntime int8 is predicted to miss the budget on {ctx.aim_cases} verdict cases "
                f"({_brief(figures)}); ranking layers by quantization noise")
        ranking = ctx.calibration.subset(_ranking_count(ctx))
        ranked = rank_nodes(prepared, target, (case_input(ctx.pre, image) for _, image in ranking),
                            input_names(ctx.pre, ctx.input_name), ctx.scratch)
        sqnr = [(n, round(s, 2)) for n, s, _ in ranked[:12]]
        for excluded in exclusion_ladder(ranked, output_layers(prepared), input_layers(prepared),
                                         recurrent_layers(prepared)):
            settings = quantize(excluded)
            prediction, figures = attempt(ctx, "onnxruntime", target, precision)
            attempts.append({"excluded": excluded, "predicted": figures})
            ctx.log(f"  kept {len(excluded)} node(s) in float: {_brief(figures)}")
            if not best.offer(prediction, {"excluded": excluded, "settings": settings}):
                ctx.log("  no layer left in INT8: the fallback stops here")
                prediction = None
                break
            if prediction.meets:
                break
    meets = prediction is not None and prediction.meets
    chosen = {"excluded": attempts[-1]["excluded"], "settings": settings} if meets or best.record is None else \
        best.restore()
    layers = quantized_layers_onnx(target)
    _no_int8_left(ctx, layers, [target], "onnxruntime/int8", attempts)
    build = BuildRecord(seconds=_since(t0), tool=f"onnxruntime.quantization {ctx.versions.get('onnxruntime', '')}",
                        settings=chosen["settings"], excluded_nodes=list(chosen["excluded"]), layer_sqnr_db=sqnr,
                        attempts=attempts, quantized_layers=layers)
    return _built(ctx, name, "onnxruntime", precision, measure(ctx, "onnxruntime", target, precision), build)


def _ranking_count(ctx: Context) -> int:
    """Images the layer ranking runs on: 8, fewer for large inputs (each image is a few full inferences)."""
    shape = ctx.gauge.verdict.input_shape or (1, 1, 1, 1)
    pixels = 1
    for d in shape[2:]:
        pixels *= int(d)
    return 8 if pixels <= 256 * 256 else 4


def build_openvino(ctx: Context, precision: str) -> Built:
    from . import openvino_ir

    t0 = time.perf_counter()
    xml, bin_ = f"openvino.{precision}.xml", f"openvino.{precision}.bin"
    target = ctx.bundle_dir / xml
    opts = {"static_batch": ctx.static_batch}
    if precision in ("fp32", "fp16"):
        settings = openvino_ir.export_ir(ctx.fp32_onnx, target, precision, ctx.static_batch)
        build = BuildRecord(seconds=_since(t0), tool="openvino.convert_model", settings=settings,
                            static_batch=ctx.static_batch)
        return _built(ctx, xml, "openvino", precision, measure(ctx, "openvino", target, precision, **opts), build,
                      bin_)
    # NNCF's defaults first, then the other bias corrections (openvino_ir.VARIANTS); the variant predicted best
    # then with the last, and then also the first, layer kept in float; the first predicted to be certified is
    # kept, else NNCF's accuracy control runs with the best variant, and the best attempt of all is kept.
    attempts: list[dict] = []
    scores: dict[tuple, float] = {}
    first, last = openvino_ir.end_layers(ctx.fp32_onnx)
    best = Best(ctx, [target, ctx.bundle_dir / bin_], quantized_layers_openvino)
    prediction, settings = None, {}

    def run(preset: str, bias: str, keep: list[str]) -> Prediction:
        nonlocal settings
        settings = openvino_ir.quantize_ir(ctx.fp32_onnx, target, ctx.calibration, ctx.pre, ctx.static_batch,
                                           preset, keep, bias)
        prediction, figures = attempt(ctx, "openvino", target, precision, **opts)
        attempts.append({"preset": preset, "bias_correction": bias, "kept_in_float": keep, "predicted": figures})
        ctx.log(f"  preset {preset}, {bias} bias correction, {len(keep)} layer(s) in float: {_brief(figures)}")
        if not best.offer(prediction, settings):
            return dataclasses.replace(prediction, meets=False)  # no INT8 layer left: never kept
        return prediction

    for preset, bias in openvino_ir.VARIANTS:
        prediction = run(preset, bias, [])
        scores[(preset, bias)] = _score(prediction)
        if prediction.meets:
            break  # the file on disk is this attempt's
    if not prediction.meets:
        preset, bias = max(scores, key=scores.__getitem__)
        for keep in (last, last + first):
            prediction = run(preset, bias, keep)
            if prediction.meets:
                break
    if not prediction.meets:
        ctx.log(f"  openvino int8 is predicted to miss the budget in every variant; NNCF accuracy control "
                f"(preset {preset}, {bias} bias correction) keeps harmful layers in float")
        primary = ctx.budget.primary
        settings = openvino_ir.quantize_ir_with_accuracy_control(
            ctx.fp32_onnx, target, ctx.calibration, ctx.pre, ctx.gauge.tuning, ctx.gauge.scorer(primary.metric),
            max_drop=max(0.0, 1.0 - primary.value) if primary.op == ">=" else 0.0, static_batch=ctx.static_batch,
            preset=preset, bias_correction=bias, per_case=task_named(ctx.gauge.task).ragged_outputs)
        prediction, figures = attempt(ctx, "openvino", target, precision, **opts)
        attempts.append({"accuracy_control": True, "predicted": figures})
        kept = best.offer(prediction, settings)
        if (not prediction.meets or not kept) and best.record is not None:
            settings = best.restore()
    layers = quantized_layers_openvino(target)
    _no_int8_left(ctx, layers, [target, ctx.bundle_dir / bin_], "openvino/int8", attempts)
    settings = dict(settings)
    build = BuildRecord(seconds=_since(t0), tool=str(settings.pop("tool", "nncf")), settings=settings,
                        quantized_layers=layers, attempts=attempts, static_batch=ctx.static_batch)
    return _built(ctx, xml, "openvino", precision, measure(ctx, "openvino", target, precision, **opts), build, bin_)


def build_tensorrt(ctx: Context, precision: str) -> Built:
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
    options = build_options(profile.tensorrt, precision, ctx.gauge.verdict.input_shape[1:], ctx.dla_core)
    settings: dict = {}
    if precision == "int8":
        name = "model.int8-qdq-symmetric.onnx"
        settings = ort_quantize.quantize_int8(prepared_for_quantization(ctx), ctx.bundle_dir / name, ctx.calibration,
                                              ctx.pre, ctx.input_name, ctx.calib_method, symmetric_activations=True)
    else:
        name = f"model.tensorrt-{precision}.onnx"
        (ctx.bundle_dir / name).write_bytes(ctx.fp32_onnx.read_bytes())
    measured = measure(ctx, "tensorrt", ctx.bundle_dir / name, precision, options=options)
    settings["device_profile"] = profile.name
    build = BuildRecord(seconds=_since(t0), tool="tensorrt (engine built and cached on the target)",
                        settings=settings, tensorrt=options)
    return _built(ctx, name, "tensorrt", precision, measured, build)


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


def _brief(figures: dict) -> str:
    bounds = ", ".join(f"{k} predicted {v:.4f}" for k, v in figures.items() if ">=" in k or "<=" in k)
    return f"{bounds} -> {'meets' if figures['meets_budget'] else 'misses'} the budget"
