"""``edgemed convert``: source model → verified bundle, written atomically, in four stages.

    export  → the source as one FP32 ONNX file, checked by ONNX
    parity  → the FP32 ONNX must reproduce the source on real probe images (the first artifact)
    build   → every other (backend, precision) artifact, each judged by the drift gate
    write   → reference, report and manifest, then the temporary directory is renamed into place

Options are checked before anything is loaded; the bundle is assembled in a temporary
directory, so a failure at any point leaves no bundle behind.
"""

from __future__ import annotations

import datetime as _dt
import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgemed import __version__
from edgemed.bundle import MANIFEST, REFERENCE, REPORT, atomic_directory, file_record, write_json
from edgemed.datasets import ImageSet
from edgemed.drift import compare, population_margins
from edgemed.errors import ConversionError, OptionError, first_line
from edgemed.gate import judge_parity, parity_tolerance, summary
from edgemed.manifest import (
    SCHEMA_VERSION,
    Artifact,
    BuildRecord,
    InputSpec,
    Manifest,
    ModelCard,
    OutputSpec,
    Postprocess,
    Provenance,
)
from edgemed.preprocess import Preprocessor, default_spec
from edgemed.samples import samples_dir
from edgemed.table import format_table

from .artifacts import BUILDERS, Cases, Context, Dropped, Labelled
from .calibration import MIN_INT8_CALIBRATION, PROBE_COUNT, DataPlan, plan, preprocess_stream, stack
from .export_onnx import INPUT_NAME, export_torch, finalize, graph_io
from .graph_checks import GraphFacts, check_graph, output_kind
from .options import ConvertOptions, check_backends
from .ort_quantize import scratch_dir
from .reference import engine_outputs, reference_outputs
from .sources import SourceModel, load_source

MODEL_FILE = "model.onnx"
SAMPLES = "samples.npz"
MAX_POPULATION = 2000  # FP32 margins the flip-rate estimate draws on
SAMPLE_FRAMES = 32  # held-out frames stored in the bundle, so bench has real frames of this model's kind


def sample_images() -> Path:
    """The real ultrasound sample images shipped with edgemed (the default probe set)."""
    return samples_dir("busi")


def tool_versions() -> dict:
    versions = {"edgemed": __version__, "python": platform.python_version(), "numpy": np.__version__}
    for name in ("torch", "onnx", "onnxruntime", "onnxscript"):
        try:
            versions[name] = str(__import__(name).__version__)
        except ImportError:
            pass
    return versions


@dataclass
class Exported:
    """The FP32 ONNX model and what the export learned about it."""

    path: Path
    shape: tuple[int, ...]
    input_name: str
    output_name: str
    output_index: int  # position of output_name among the model's outputs
    terminal: GraphFacts
    dynamic_batch: bool
    record: dict  # exporter, notes, seconds (for the report)


@dataclass
class Reading:
    """How convert reads the model's inputs and outputs, each with the reason it was chosen (logged and reported)."""

    spec: list[dict]
    spec_reason: str
    labels: list[str]
    kind: str
    kind_reason: str


def convert(model: str | Path, out: str | Path, *, log: Callable[[str], None] = lambda s: None, **fields: Any
            ) -> Path:
    """Python API: ``convert("unet.pt", "bundle", task="segmentation", input_shape=(1, 1, 128, 128),
    arch="unet", targets=("onnx", "openvino"), precisions=("fp32", "int8"), calib="images/")``.
    The keyword fields are those of :class:`ConvertOptions`, as typed values."""
    return run(ConvertOptions(model=Path(model), out=Path(out), **fields), log)


def run(opts: ConvertOptions, log: Callable[[str], None] = lambda s: None) -> Path:
    """The orchestrator: check, export, parity, build, write."""
    started = time.perf_counter()
    check_backends(opts.targets)
    if not opts.model.is_file():
        raise OptionError(f"{opts.model}: no such model file", "check the path")
    if opts.out.exists() and not opts.force:
        raise OptionError(f"{opts.out} already exists", "pass --force to replace it, or choose another -o")
    data = open_data(opts)
    if "int8" in opts.precisions and len(data.plan.calibration) < MIN_INT8_CALIBRATION:
        raise OptionError(f"INT8 needs at least {MIN_INT8_CALIBRATION} calibration images, got "
                          f"{len(data.plan.calibration)}", "pass --calib with a folder or .npz of real images")
    source = load_source(opts.model, arch=opts.arch, arch_args=opts.arch_args, allow_pickle=opts.allow_pickle)
    if opts.input_shape is None and not source.is_onnx:
        raise OptionError("--input-shape is required for PyTorch models", "write e.g. --input-shape 1x1x256x256")
    if opts.arch is not None:
        from edgemed.zoo import check_input_shape

        check_input_shape(source.module, opts.input_shape, opts.arch)
    log(f"source: {source.kind} {opts.model.name} (sha256 {source.sha256[:12]})")

    with atomic_directory(opts.out, force=opts.force) as tmp, scratch_dir() as scratch:
        exported = export(source, opts, tmp / MODEL_FILE, log)
        spec, spec_reason = preprocessing(opts, exported.shape)
        pre = Preprocessor(spec, exported.shape)
        data.plan = plan(data.images, opts.calib_count, data.evaluation, 4 * math.prod(exported.shape[1:]))
        log(f"data: {data.plan.describe()}")
        verdict_in, tuning_in = stack(data.plan.verdict, pre), stack(data.plan.tuning, pre)
        reference, reference_by = reference_outputs(source, verdict_in, exported.path, exported.input_name,
                                                    exported.output_index)
        kind, kind_reason = output_kind(exported.terminal, reference, opts.task, opts.output_kind)
        reading = Reading(spec, spec_reason, check_outputs(opts.task, reference, opts.labels), kind, kind_reason)
        log(f"preprocessing: {spec_reason}")
        log(f"outputs read as {kind}: {kind_reason}")
        fp32 = parity(exported, verdict_in, reference, reference_by, opts, reading, log)
        tuning = Cases(tuning_in, reference_outputs(source, tuning_in, exported.path, exported.input_name,
                                                    exported.output_index)[0])
        ctx = Context(bundle_dir=tmp, scratch=Path(scratch), fp32_onnx=exported.path, pre=pre,
                      input_name=exported.input_name, calibration=data.plan.calibration, tuning=tuning,
                      verdict=Cases(verdict_in, reference),
                      population=population(exported, pre, data.plan, tuning, reference, opts.task, kind),
                      task=opts.task, output_kind=kind, budget=opts.drift_budget, labels=reading.labels,
                      labelled=labelled(opts, exported, pre, reading), calib_method=opts.calib_method,
                      static_batch=1 if opts.static_shapes else None, dla_core=opts.dla_core, log=log,
                      versions=tool_versions())
        artifacts = [fp32] + build_artifacts(ctx, opts)
        write(tmp, opts, source, exported, reading, artifacts, ctx, data, time.perf_counter() - started, log)
    log(f"bundle written: {opts.out}")
    return opts.out


@dataclass
class Data:
    images: ImageSet
    evaluation: ImageSet | None
    plan: DataPlan


def open_data(opts: ConvertOptions) -> Data:
    """The images given (or the shipped samples), split for calibration, tuning and the verdict."""
    images = ImageSet.open(opts.calib if opts.calib is not None else sample_images(), key=opts.calib_key)
    evaluation = ImageSet.open(opts.eval, key=opts.eval_key) if opts.eval is not None else None
    return Data(images, evaluation, plan(images, opts.calib_count, evaluation))


def population(exported: Exported, pre: Preprocessor, data: DataPlan, tuning: Cases, verdict_reference: np.ndarray,
               task: str, kind: str) -> dict[str, np.ndarray]:
    """FP32 decision margins over every image convert has (calibration, tuning and verdict images), up to
    MAX_POPULATION: the population the gate's flip-rate estimate is taken over."""
    from edgemed.runtimes.onnxruntime import OnnxRuntimeEngine

    with OnnxRuntimeEngine(exported.path, device="cpu") as engine:
        calibration = [engine.infer({exported.input_name: x})[exported.output_name]
                       for x in preprocess_stream(data.calibration.subset(MAX_POPULATION), pre)]
    outputs = np.concatenate([*calibration, tuning.reference, verdict_reference]) if data.overlap is False else \
        verdict_reference
    if len(outputs) > MAX_POPULATION:
        outputs = outputs[np.linspace(0, len(outputs) - 1, MAX_POPULATION).round().astype(int)]
    return population_margins(outputs, task, kind)


def labelled(opts: ConvertOptions, exported: Exported, pre: Preprocessor, reading: Reading) -> Labelled | None:
    """Labelled validation cases for the clinical gate, with the FP32 artifact's outputs on them."""
    if opts.val is None:
        return None
    from edgemed.datasets import load_labels
    from edgemed.runtimes.onnxruntime import OnnxRuntimeEngine

    images = ImageSet.open(opts.val, key=opts.val_key)
    truth = load_labels(opts.val_labels, images, opts.task, reading.labels)
    if truth is None:
        raise OptionError(f"--val {opts.val}: no labels found", "pass --val-labels (CSV file,label, a mask folder, "
                          "or an .npz with labels/masks)")
    inputs = stack(images, pre)
    with OnnxRuntimeEngine(exported.path, device="cpu") as engine:
        fp32 = engine_outputs(engine, inputs, exported.input_name, exported.output_name)
    return Labelled(inputs, truth, fp32, opts.margin, f"{len(images)} labelled images from {opts.val}")


def export(source: SourceModel, opts: ConvertOptions, target: Path, log: Callable[[str], None]) -> Exported:
    """Stage 1: one self-contained FP32 ONNX file with a dynamic batch axis where the model allows it."""
    t0 = time.perf_counter()
    if source.is_onnx:
        shape, record, input_name = _onnx_source(source, target, opts.input_shape)
    else:
        rec = export_torch(source.module, list(opts.input_shape), target)
        shape, input_name = opts.input_shape, INPUT_NAME
        record = {"exporter": rec.exporter, "dynamic_batch": rec.dynamic_batch, "notes": source.notes + rec.notes}
    record["seconds"] = round(time.perf_counter() - t0, 3)
    log(f"exported with {record['exporter']} exporter (dynamic batch: {record['dynamic_batch']})")
    from edgemed.runtimes.onnxruntime import OnnxRuntimeEngine

    facts = check_graph(target, opts.output)
    with OnnxRuntimeEngine(target, device="cpu") as engine:
        index = [o.name for o in engine.outputs].index(facts.output)
    return Exported(target, tuple(shape), input_name, facts.output, index, facts, bool(record["dynamic_batch"]),
                    record)


def preprocessing(opts: ConvertOptions, shape: tuple[int, ...]) -> tuple[list[dict], str]:
    """The spec to record, and why: the user's, or the documented default for 8-bit images."""
    if opts.preprocess is not None:
        return list(opts.preprocess), "as given with --preprocess"
    spec = default_spec(shape)
    return spec, (f"no --preprocess given, so the default was recorded: {', '.join(_op_text(o) for o in spec)} "
                  "(8-bit pixels to [0, 1], as torchvision's ToTensor gives); pass --preprocess SPEC.json if the "
                  "model was trained on other inputs")


def _op_text(op: dict) -> str:
    params = " ".join(f"{k}={v}" for k, v in op.items() if k != "op")
    return f"{op['op']} {params}".strip()


def _onnx_source(source: SourceModel, target: Path, input_shape: tuple[int, ...] | None
                 ) -> tuple[tuple[int, ...], dict, str]:
    import onnx

    try:
        proto = onnx.load(str(source.path))
    except Exception as exc:  # noqa: BLE001
        raise ConversionError(f"{source.path}: not a readable ONNX model ({first_line(exc, 200)})",
                              "check the file is complete") from exc
    proto = finalize(proto)
    ins, _ = graph_io(proto)
    if len(ins) != 1:
        raise ConversionError(f"{source.path}: the model has {len(ins)} inputs; edgemed takes single-image models",
                              "export a model with one image input")
    name, dims = ins[0]
    if len(dims) != 4:
        raise ConversionError(f"{source.path}: input {name!r} has shape {dims}, not NCHW", "export a 4-D image input")
    if input_shape is not None:
        mismatch = [i for i in (1, 2, 3) if isinstance(dims[i], int) and dims[i] != input_shape[i]]
        if mismatch:
            raise OptionError(f"--input-shape {list(input_shape)} does not match the ONNX input {dims}",
                              "pass the model's real input shape, or omit --input-shape for ONNX files")
    shape = input_shape or tuple([1] + [d if isinstance(d, int) else -1 for d in dims[1:]])
    if any(d < 1 for d in shape[1:]):
        raise OptionError(f"{source.path}: input {name!r} has symbolic dims {dims}", "pass --input-shape NxCxHxW")
    onnx.save_model(proto, str(target), save_as_external_data=False)
    return tuple(shape), {"exporter": "none (ONNX source, checked and shape-inferred)",
                          "dynamic_batch": not isinstance(dims[0], int), "notes": []}, name


def parity(exported: Exported, evaluation: np.ndarray, reference: np.ndarray, reference_by: str,
           opts: ConvertOptions, reading: Reading, log: Callable[[str], None]) -> Artifact:
    """Stage 2: ONNX Runtime on the FP32 ONNX must reproduce the source model on every held-out image."""
    from edgemed.runtimes.onnxruntime import OnnxRuntimeEngine

    with OnnxRuntimeEngine(exported.path, device="cpu") as engine:
        candidate = engine_outputs(engine, evaluation, exported.input_name, exported.output_name)
    comparison = compare(reference, candidate, opts.task, reading.kind, reading.labels)
    drift = judge_parity(comparison, parity_tolerance(reference), reference_by, "every held-out image")
    log(f"parity vs {reference_by}: {summary(drift)}")
    if not drift.passed:
        raise ConversionError(
            f"ONNX Runtime output differs from the source model on real probes ({'; '.join(drift.missed)})",
            "the export is not faithful; try another opset/exporter or report the model; no bundle written")
    rec = file_record(exported.path.parent, exported.path.name)
    versions = tool_versions()
    build = BuildRecord(seconds=exported.record["seconds"], tool=exported.record["exporter"])
    return Artifact(file=rec.file, sha256=rec.sha256, bytes=rec.bytes, backend="onnxruntime", precision="fp32",
                    drift=drift, build=build,
                    built_with={k: versions[k] for k in ("torch", "onnx", "onnxruntime") if k in versions})


def build_artifacts(ctx: Context, opts: ConvertOptions) -> list[Artifact]:
    """Stage 3: every requested (backend, precision) other than the FP32 ONNX, each through the gate."""
    artifacts = []
    for backend in opts.backends:
        for precision in opts.precisions:
            if (backend, precision) == ("onnxruntime", "fp32"):
                continue
            ctx.log(f"building {backend} {precision}")
            try:
                artifact = BUILDERS[backend](ctx, precision)
            except Dropped as exc:
                ctx.log(f"  {backend} {precision}: not kept: {exc}")
                continue
            ctx.log(f"  {backend} {precision}: {summary(artifact.drift)}")
            if artifact.clinical is not None:
                ctx.log(f"    against ground truth: {artifact.clinical.verdict}"
                        + (f" ({'; '.join(artifact.clinical.missed)})" if artifact.clinical.missed else ""))
            artifacts.append(artifact)
    return artifacts


def write(tmp: Path, opts: ConvertOptions, source: SourceModel, exported: Exported, reading: Reading,
          artifacts: list[Artifact], ctx: Context, data: Data, seconds: float, log: Callable[[str], None]) -> None:
    """Stage 4: the reference probes, sample frames, the conversion report and, last, the manifest."""
    probes = ctx.verdict.inputs[:PROBE_COUNT]
    np.savez_compressed(tmp / REFERENCE, inputs=probes, outputs=ctx.verdict.reference[:PROBE_COUNT],
                        **{f"artifact:{a.file}": _probe_outputs(tmp, a, probes, ctx) for a in artifacts})
    np.savez_compressed(tmp / SAMPLES, **{f"frame_{i:03d}": image for i, (_, image)
                                          in enumerate(data.plan.verdict.subset(SAMPLE_FRAMES))})
    created = _now()
    report = {
        "created": created,
        "source": {"kind": source.kind, "file": opts.model.name, "sha256": source.sha256},
        "export": exported.record,
        "data": {"from": str(data.images.path), "images": len(data.images),
                 "eval": str(data.evaluation.path) if data.evaluation is not None else None,
                 "calibration": len(data.plan.calibration), "tuning": len(data.plan.tuning),
                 "verdict": len(data.plan.verdict), "verdict_overlaps_calibration": data.plan.overlap,
                 "verdict_left_out": data.plan.left_out, "plan": data.plan.describe(),
                 "verdict_names": data.plan.verdict.names,
                 "calib_method": opts.calib_method},
        "budget": str(opts.drift_budget),
        "reading": {"preprocess": reading.spec_reason, "outputs": f"{reading.kind}: {reading.kind_reason}"},
        "artifacts": [_report_row(a) for a in artifacts],
        "dropped": ctx.dropped,
        "seconds": round(seconds, 3),
    }
    write_json(tmp / REPORT, report)
    log(format_table(REPORT_HEADERS, [_table_row(a) for a in artifacts]))
    batch = "batch" if exported.dynamic_batch and not opts.static_shapes else exported.shape[0]
    reference = ctx.verdict.reference
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        model=ModelCard(name=opts.name or opts.model.stem, task=opts.task, labels=reading.labels,
                        shipped=shipped_name(source.sha256)),
        input=InputSpec(name=exported.input_name, shape=[batch, *exported.shape[1:]], dtype="float32", layout="NCHW"),
        output=OutputSpec(names=[exported.output_name], kind=reading.kind, shape=["batch", *reference.shape[1:]]),
        preprocess=reading.spec,
        postprocess=_postprocess(opts.task, reference),
        artifacts=artifacts,
        files=[file_record(tmp, REFERENCE), file_record(tmp, REPORT), file_record(tmp, SAMPLES)],
        provenance=Provenance(
            source_sha256=source.sha256, source_kind=source.kind,
            calibration_sha256=data.plan.calibration.sha256(), calibration_count=len(data.plan.calibration),
            evaluation_sha256=data.plan.verdict.sha256(), evaluation_count=len(data.plan.verdict),
            evaluation_source=str((data.evaluation or data.images).path.resolve()),
            tuning_count=len(data.plan.tuning), tools=tool_versions(), created=created, host=platform.node()),
    )
    (tmp / MANIFEST).write_bytes(manifest.to_json())


def _probe_outputs(tmp: Path, artifact: Artifact, probes: np.ndarray, ctx: Context) -> np.ndarray:
    """The artifact's own outputs on the probes: what ``verify`` holds a device to."""
    from edgemed.runtimes import create_engine

    options = {"options": artifact.build.tensorrt} if artifact.backend == "tensorrt" else {}
    with create_engine(artifact.backend, tmp / artifact.file, device="cpu", precision=artifact.precision,
                       **options) as engine:
        return engine_outputs(engine, probes, engine.inputs[0].name, engine.outputs[0].name)


def shipped_name(source_sha256: str) -> str | None:
    """The shipped model this conversion started from, by the weights' hash (bench may grade it on the
    shipped labelled samples; no other model ever is)."""
    from edgemed.hashing import sha256_file
    from edgemed.samples import SHIPPED_MODELS, shipped_model

    return next((name for name in SHIPPED_MODELS if sha256_file(shipped_model(name)[0]) == source_sha256), None)


REPORT_HEADERS = ["artifact", "backend", "precision", "MB", "build s", "int8 layers", "drift vs FP32", "verdict"]


def _table_row(a: Artifact) -> list:
    q = a.build.quantized_layers
    return [a.file, a.backend, a.precision, f"{a.size_bytes / 1e6:.2f}", a.build.seconds,
            f"{q.int8}/{q.of}" if q else "-", summary(a.drift).split(" -> ")[0], a.verdict]


def check_outputs(task: str, reference: np.ndarray, labels: tuple[str, ...] | None) -> list[str]:
    if task == "classification":
        if reference.ndim != 2:
            raise OptionError(f"a classifier should output (N, classes), this model outputs {reference.shape}",
                              "use --task segmentation for per-pixel outputs")
        classes = max(2, reference.shape[1])
        default = [str(i) for i in range(classes)]
    else:
        if reference.ndim != 4:
            raise OptionError(f"a segmenter should output (N, C, H, W), this model outputs {reference.shape}",
                              "use --task classification for per-image outputs")
        classes = max(2, reference.shape[1])
        default = ["background"] + [f"class{i}" for i in range(1, classes)]
    if labels is None:
        return default
    if len(labels) != classes:
        raise OptionError(f"--labels names {len(labels)} classes but the model outputs {classes}",
                          f"give {classes} names, e.g. {','.join(default)}")
    return list(labels)


def _postprocess(task: str, reference: np.ndarray) -> Postprocess:
    activation = "sigmoid" if reference.shape[1] == 1 else "softmax"
    if task == "classification":
        return Postprocess(activation=activation, decision="argmax")
    return Postprocess(activation=activation, decision="argmax", resize_to_input="bilinear on probabilities")


def _report_row(a: Artifact) -> dict:
    q = a.build.quantized_layers
    return {"file": a.file, "backend": a.backend, "precision": a.precision, "bytes": a.size_bytes,
            "build_seconds": a.build.seconds, "verdict": a.verdict, "drift": summary(a.drift),
            "clinical": (a.clinical.missed or "passed") if a.clinical else None,
            "excluded_layers": a.build.excluded_nodes,
            "quantized_layers": {"int8": q.int8, "of": q.of} if q else None}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


__all__ = ["convert", "run", "ConvertOptions", "sample_images"]
