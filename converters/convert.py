"""``edgemed convert``: source model → verified bundle, written atomically, in four stages.

    export  → the source as one FP32 ONNX file, checked by ONNX
    parity  → the FP32 ONNX must reproduce the source on real probe images (the first artifact)
    build   → every other (backend, precision) artifact, each judged by the drift gate
    write   → reference, report and manifest, then the temporary directory is renamed into place

Options are checked before anything is loaded; the bundle is assembled in a temporary
directory, so a failure at any point leaves no bundle behind. Memory does not grow with the data: every
set of cases is preprocessed once into scratch files (:mod:`edgemed.converters.cases`) and streamed case by
case through the source, the FP32 reference (opened once, :class:`~edgemed.converters.reference.Reference`)
and each candidate (one session each). ``report.json`` records the peak resident memory.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from edgemed import __version__
from edgemed.backends import BACKENDS
from edgemed.bundle import MANIFEST, REFERENCE, REPORT, atomic_directory, file_record, write_json
from edgemed.datasets import ImageSet
from edgemed.errors import ConversionError, InputError, OptionError, first_line
from edgemed.feature_inputs import FeatureFeeds
from edgemed.gate.drift import case_margins, start_comparison
from edgemed.gate.probes import pack, probe_input_key
from edgemed.gate.verdict import PARITY_ATOL, PARITY_RTOL, judge_parity, summary
from edgemed.input_kinds import input_kind
from edgemed.input_range import observe as observe_range
from edgemed.manifest import (
    SCHEMA_VERSION,
    Artifact,
    BuildRecord,
    DetectionPost,
    FeatureInput,
    InputSpec,
    Manifest,
    ModelCard,
    OutputSpec,
    Provenance,
)
from edgemed.measures.margins import MAX_POPULATION, Margins, spaced_population
from edgemed.output_reader import OutputReader
from edgemed.preprocess import Preprocessor, default_spec
from edgemed.preprocessors import make_preprocessor
from edgemed.rr_intervals import RR_FEATURES
from edgemed.samples import samples_dir
from edgemed.table import format_table
from edgemed.tasks import task_named

from .artifacts import Built, Context, Dropped
from .calibration import MIN_INT8_CALIBRATION, DataPlan, named_tensors, plan
from .cases import CaseStore, fill
from .explain import (
    SaliencyReference,
    find_cam_head,
)
from .export_onnx import INPUT_NAME, OUTPUT_NAME, export_torch, finalize, graph_io, output_names
from .graph_checks import GraphFacts, OutputEvidence, check_graph, output_kind
from .measure import PROBE_COUNT, Gauge, Labelled, labelled_cases
from .options import ConvertOptions, check_backends
from .ort_quantize import scratch_dir
from .reference import Reference, SourceRunner
from .sources import SourceModel, load_source

MODEL_FILE = "model.onnx"
SAMPLES = "samples.npz"
SAMPLE_FRAMES = 32  # held-out frames stored in the bundle, so bench has real frames of this model's kind
KIND_FIX = "pass a set of the model's own kind (signals: an .npz with signals, fs and units), or set --input-kind"


def sample_images(kind: str = "image") -> Path:
    """The real samples shipped with edgemed (the default probe set): ultrasound frames, or ECG beats
    (MIT-BIH DS1) for signal models."""
    shipped = input_kind(kind).shipped_calibration
    return samples_dir(shipped) if shipped is not None else samples_dir("busi")


def tool_versions() -> dict:
    versions = {"edgemed": __version__, "python": platform.python_version(), "numpy": np.__version__}
    for name in ("torch", "onnx", "onnxruntime", "onnxscript"):
        try:
            versions[name] = str(__import__(name).__version__)
        except ImportError:
            pass
    return versions


def find_explanation(method: str | None, source: SourceModel, input_shape: tuple[int, ...] | None) -> Any:
    """The plan of ``--explain METHOD`` for this source (refused in one line where its structure cannot support it):
    the one place convert reads a method's name."""
    if method == "cam":
        return find_cam_head(source.module, input_shape, source.kind)
    if method == "recipro-cam":
        from .recipro_cam import find_recipro_target

        return find_recipro_target(source.module, input_shape, source.kind)
    return None


@dataclass
class Exported:
    """The FP32 ONNX model and what the export learned about it."""

    path: Path
    shape: tuple[int, ...]
    input_name: str
    output_name: str | None  # the output read (None for detectors, which read several)
    source_outputs: list[str]  # every output of the exported graph, in order
    terminal: GraphFacts
    dynamic_batch: bool
    record: dict  # exporter, notes, seconds (for the report)
    cam: Any = None  # --explain: the method's plan (explain.CamHead or recipro_cam.ReciproTarget): an extra output


@dataclass
class Reading:
    """How convert reads the model's inputs and outputs, each with the reason it was chosen (logged and reported)."""

    spec: list[dict]
    spec_reason: str
    labels: list[str]
    kind: str
    kind_reason: str
    detection: DetectionPost | None = None


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
    data = open_data(opts, log)
    if "int8" in opts.precisions and len(data.plan.calibration) < MIN_INT8_CALIBRATION:
        unit = data.images.unit
        raise OptionError(f"INT8 needs at least {MIN_INT8_CALIBRATION} calibration {unit}, got "
                          f"{len(data.plan.calibration)}", f"pass --calib with a folder or .npz of real {unit}")
    source = load_source(opts.model, arch=opts.arch, arch_args=opts.arch_args, allow_pickle=opts.allow_pickle)
    if opts.input_shape is None and not source.is_onnx:
        raise OptionError("--input-shape is required for PyTorch models", "write e.g. --input-shape 1x1x256x256")
    if opts.arch is not None:
        from edgemed.zoo import check_input_shape

        check_input_shape(source.module, opts.input_shape, opts.arch)
    log(f"source: {source.kind} {opts.model.name} (sha256 {source.sha256[:12]})")
    cam = find_explanation(opts.explain, source, opts.input_shape)
    if cam is not None:
        log(cam.line())

    with atomic_directory(opts.out, force=opts.force) as tmp, scratch_dir() as scratch:
        scratch = Path(scratch)
        exported = export(source, opts, tmp / MODEL_FILE, log, cam)
        steps = conversion_steps(opts.task)
        detector = steps.setup(exported.path, opts, scratch, log) if steps is not None else None
        spec, spec_reason = preprocessing(opts, exported.shape)
        pre = make_preprocessor(spec, exported.shape, layout(opts))
        if opts.features:  # cases carry the feature inputs beside the main tensor (converters.calibration)
            pre.feature_feeds = FeatureFeeds(feature_inputs(opts))
        names = [exported.input_name] + [name for name, _ in opts.features]
        log(f"data: {data.plan.describe()}")
        cases = scratch / "cases"
        verdict = fill(CaseStore(cases, "verdict"), named_tensors(data.plan.verdict, pre))
        tuning = fill(CaseStore(cases, "tuning"), named_tensors(data.plan.tuning, pre))
        reader = OutputReader(exported.output_name, detector.post if detector else None)
        source_reader = OutputReader(exported.output_name, detector.raw if detector else None)
        runner = SourceRunner(source, source_reader, exported.source_outputs,
                              detector.raw_onnx if detector else exported.path, names)
        with Reference(exported.path, names, reader) as reference:
            fp32, reading, tolerance = parity(exported, verdict, runner, reference, opts, detector, spec, spec_reason,
                                              scratch, log)
            log(f"preprocessing: {spec_reason}")
            log(f"outputs read as {reading.kind}: {reading.kind_reason}")
            for x in tuning.inputs():
                tuning.add_output(reference(x))
            gauge = Gauge(tuning=tuning, verdict=verdict, reader=reader, task=opts.task, output_kind=reading.kind,
                          labels=reading.labels, budget=opts.drift_budget,
                          population=population(reference, pre, data.plan, tuning, verdict, opts.task, reading.kind),
                          tolerance=tolerance, labelled=labelled(opts, reference, pre, reading, cases),
                          reference_by=reference.by, unit=data.images.unit, input_names=names)
            if exported.cam is not None:
                gauge.saliency = SaliencyReference.build(reference.engine, verdict, exported.input_name,
                                                         exported.output_name,
                                                         exported.cam.explainer(exported.shape[2:4]))
                exported.cam.sanity = exported.cam.sanity_check(source.module, verdict.inputs())
                log(exported.cam.sanity.line())
        ctx = Context(bundle_dir=tmp, scratch=scratch, fp32_onnx=exported.path, pre=pre,
                      input_name=exported.input_name, calibration=data.plan.calibration, gauge=gauge,
                      calib_method=opts.calib_method, static_batch=1 if opts.static_shapes else None,
                      dla_core=opts.dla_core, log=log, versions=tool_versions())
        built = [Built(fp32, verdict.first_outputs(PROBE_COUNT))] + build_artifacts(ctx, opts)
        write(tmp, opts, source, exported, reading, built, ctx, data, time.perf_counter() - started, log)
    log(f"bundle written: {opts.out}")
    return opts.out


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (what convert's report records)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def layout(opts: ConvertOptions) -> str:
    return input_kind(opts.input_kind).layouts[0]


def read_outputs(opts: ConvertOptions, exported: Exported, first: Any, evidence: OutputEvidence, detector: Any,
                 spec: list[dict], spec_reason: str) -> Reading:
    """How the outputs are read: the class names, and whether they are logits, probabilities or detections
    (``first``: the source's output on the first case; ``evidence``: what every case's output showed)."""
    if detector is not None:
        post = detector.post
        where = "NMS in the graph" if post.nms == "graph" else "NMS on the host"
        return Reading(spec, spec_reason, detector.labels, "detections", f"{post.layout} layout, {where}", post)
    kind, kind_reason = output_kind(exported.terminal, evidence, opts.task, opts.output_kind)
    return Reading(spec, spec_reason, task_named(opts.task).output_labels(first, opts.labels), kind, kind_reason)


@dataclass
class Data:
    images: ImageSet
    evaluation: ImageSet | None
    plan: DataPlan


def open_data(opts: ConvertOptions, log: Callable[[str], None] = lambda s: None) -> Data:
    """The images given (or the shipped samples), split for calibration, tuning and the verdict."""
    images = ImageSet.open(opts.calib if opts.calib is not None else sample_images(opts.input_kind),
                           key=opts.calib_key)
    input_kind(opts.input_kind).check_holds(images, "--calib", KIND_FIX)
    images = keep_featured(images, opts, "--calib", log)
    evaluation = ImageSet.open(opts.eval, key=opts.eval_key) if opts.eval is not None else None
    if evaluation is not None:
        input_kind(opts.input_kind).check_holds(evaluation, "--eval", KIND_FIX)
        evaluation = keep_featured(evaluation, opts, "--eval", log)
    return Data(images, evaluation, plan(images, opts.calib_count, evaluation))


def feature_inputs(opts: ConvertOptions) -> list[FeatureInput]:
    """The manifest's records of the inputs beside the main one (RR intervals are in seconds by definition)."""
    return [FeatureInput(name=name, features=list(names), units="s" if set(names) <= set(RR_FEATURES) else None)
            for name, names in opts.features]


def keep_featured(cases: Any, opts: ConvertOptions, option: str, log: Callable[[str], None]) -> Any:
    """A set whose cases all carry the features the model reads: the features must be there by name, and a case
    where one is undefined (NaN: a record's first or last beat has no RR interval) is left out, counted in the log."""
    if not opts.features:
        return cases
    needed = [f for _, names in opts.features for f in names]
    if not hasattr(cases, "with_features"):
        raise OptionError(f"{option} {cases.path} holds images, which carry no features ({', '.join(needed)})",
                          "pass a signal set (.npz) with features and feature_names")
    try:
        kept, dropped = cases.with_features(needed)
    except InputError as exc:
        raise OptionError(f"{option} {exc.problem} (the model's --features read them)", exc.fix) from exc
    if dropped:
        log(f"data: {dropped} of {len(cases)} {cases.unit} in {option} lack a defined feature ({', '.join(needed)}): "
            "left out")
    return kept



def population(reference: Reference, pre: Preprocessor, data: DataPlan, tuning: CaseStore, verdict: CaseStore,
               task: str, kind: str) -> dict[str, Margins]:
    """FP32 decision margins over every case convert has (calibration, tuning and verdict cases), up to
    MAX_POPULATION, computed case by case: the population the gate's flip-rate estimate is taken over."""
    if not task_named(task).has_margins:
        return {}
    parts: list[dict[str, Margins]] = []
    if data.overlap is False:
        for x in (t for _, t in named_tensors(data.calibration.subset(MAX_POPULATION), pre)):
            parts.append(case_margins(reference(x), task, kind))
        parts += [case_margins(o, task, kind) for o in tuning.outputs()]
    parts += [case_margins(o, task, kind) for o in verdict.outputs()]
    joined = {name: Margins.join([p[name] for p in parts]) for name in (parts[0] if parts else {})}
    return spaced_population(joined)


def labelled(opts: ConvertOptions, reference: Reference, pre: Preprocessor, reading: Reading,
             cases: Path) -> Labelled | None:
    """Labelled validation cases for the clinical gate, with the FP32 reference's outputs on them (on disk)."""
    if opts.val is None:
        return None
    images = ImageSet.open(opts.val, key=opts.val_key)
    input_kind(opts.input_kind).check_holds(images, "--val", KIND_FIX)
    return labelled_cases(images, opts.val_labels, opts.task, reading.labels, pre, reference, cases, opts.margin,
                          opts.val)


def export(source: SourceModel, opts: ConvertOptions, target: Path, log: Callable[[str], None],
           cam: Any = None) -> Exported:
    """Stage 1: one self-contained FP32 ONNX file with a dynamic batch axis where the model allows it (with
    ``cam``: the feature map entering the pooling as a second output, :mod:`edgemed.converters.explain`)."""
    t0 = time.perf_counter()
    if source.is_onnx:
        shape, record, input_name = _onnx_source(source, target, opts.input_shape, input_kind(opts.input_kind),
                                                 opts.features)
    else:
        steps = conversion_steps(opts.task)
        names = steps.torch_output_names if steps is not None else output_names
        if cam is not None:
            with cam.exporting(source.module) as module:
                rec = export_torch(module, list(opts.input_shape), target, lambda n: [OUTPUT_NAME, cam.output])
        else:
            rec = export_torch(source.module, list(opts.input_shape), target, names,
                               [(name, len(features)) for name, features in opts.features])
        shape, input_name = opts.input_shape, INPUT_NAME
        record = {"exporter": rec.exporter, "dynamic_batch": rec.dynamic_batch, "notes": source.notes + rec.notes}
    record["seconds"] = round(time.perf_counter() - t0, 3)
    log(f"exported with {record['exporter']} exporter (dynamic batch: {record['dynamic_batch']})")
    from edgemed.runtimes.onnxruntime import OnnxRuntimeEngine

    facts = check_graph(target, opts.output or (OUTPUT_NAME if cam else None),
                        several=task_named(opts.task).several_outputs)
    with OnnxRuntimeEngine(target, device="cpu") as engine:
        names = [o.name for o in engine.outputs]
    # A detector handles one image per call (NMS runs per image): its batch axis is fixed at 1.
    dynamic = bool(record["dynamic_batch"]) and not task_named(opts.task).ragged_outputs
    return Exported(target, tuple(shape), input_name, facts.output, names, facts, dynamic, record, cam)


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


def _onnx_source(source: SourceModel, target: Path, input_shape: tuple[int, ...] | None, kind: Any,
                 features: tuple = ()) -> tuple[tuple[int, ...], dict, str]:
    import onnx

    try:
        proto = onnx.load(str(source.path))
    except Exception as exc:  # noqa: BLE001
        raise ConversionError(f"{source.path}: not a readable ONNX model ({first_line(exc, 200)})",
                              "check the file is complete") from exc
    proto = finalize(proto)
    ins, _ = graph_io(proto)
    wanted = {name: len(names) for name, names in features}
    main = [(n, d) for n, d in ins if n not in wanted]
    if len(main) != 1 or len(ins) != 1 + len(wanted):
        raise ConversionError(f"{source.path}: the model's inputs are {[n for n, _ in ins]}; edgemed takes one main "
                              "input" + (f" beside the --features inputs {list(wanted)}" if wanted else ""),
                              "name every other input in --features NAME=FEATURE,..." if len(ins) > 1 else
                              "export a model with one image input")
    for n, d in ins:
        if n in wanted and (len(d) != 2 or d[1] != wanted[n]):
            raise ConversionError(f"{source.path}: input {n!r} has shape {d}, not (N, {wanted[n]}) as --features "
                                  "names its features", "name as many features as the input has columns")
    name, dims = main[0]
    rank = kind.rank
    if len(dims) != rank:
        raise ConversionError(f"{source.path}: input {name!r} has shape {dims}, not {kind.layouts[0]}", kind.export_fix)
    if input_shape is not None:
        mismatch = [i for i in range(1, rank) if isinstance(dims[i], int) and dims[i] != input_shape[i]]
        if mismatch:
            raise OptionError(f"--input-shape {list(input_shape)} does not match the ONNX input {dims}",
                              "pass the model's real input shape, or omit --input-shape for ONNX files")
    shape = input_shape or tuple([1] + [d if isinstance(d, int) else -1 for d in dims[1:]])
    if any(d < 1 for d in shape[1:]):
        raise OptionError(f"{source.path}: input {name!r} has symbolic dims {dims}",
                          f"pass --input-shape {kind.shape_text}")
    onnx.save_model(proto, str(target), save_as_external_data=False)
    return tuple(shape), {"exporter": "none (ONNX source, checked and shape-inferred)",
                          "dynamic_batch": not isinstance(dims[0], int), "notes": []}, name


def parity(exported: Exported, verdict: CaseStore, source: SourceRunner, reference: Reference,
           opts: ConvertOptions, detector: Any, spec: list[dict], spec_reason: str, scratch: Path,
           log: Callable[[str], None]) -> tuple[Artifact, Reading, float]:
    """Stage 2: ONNX Runtime on the FP32 ONNX must reproduce the source model on every held-out case. The FP32
    reference's outputs are stored with the verdict cases (every candidate is compared with them); returns the
    FP32 ONNX artifact, how the outputs are read, and the FP32 round-off tolerance parity allows."""
    own = CaseStore(scratch / "cases", "source")
    evidence, first, scale = OutputEvidence(), None, 0.0
    for x in verdict.inputs():
        s_out, r_out = source(x), reference(x)
        own.add_output(s_out)
        verdict.add_output(r_out)
        if isinstance(s_out, np.ndarray):
            evidence.add(s_out)
            first = s_out if first is None else first
            scale = max(scale, float(np.abs(s_out).max()) if s_out.size else 0.0)
        else:
            scale = max(scale, float(np.abs(s_out.scores).max()) if len(s_out.scores) else 0.0)
    reading = read_outputs(opts, exported, first, evidence, detector, spec, spec_reason)
    comparison = start_comparison(opts.task, reading.kind, reading.labels)
    for s_out, r_out in zip(own.outputs(), verdict.outputs()):
        comparison.add(s_out, r_out)
    tolerance = PARITY_ATOL + PARITY_RTOL * scale
    drift = judge_parity(comparison.finish(), tolerance, source.by, "every held-out case")
    drift = msgspec.structs.replace(drift, device="cpu", computed_in="fp32")
    log(f"parity vs {source.by}: {summary(drift)}")
    if not drift.passed:
        raise ConversionError(
            f"ONNX Runtime output differs from the source model on real probes ({'; '.join(drift.missed)})",
            "the export is not faithful; try another opset/exporter or report the model; no bundle written")
    rec = file_record(exported.path.parent, exported.path.name)
    versions = tool_versions()
    build = BuildRecord(seconds=exported.record["seconds"], tool=exported.record["exporter"])
    return Artifact(file=rec.file, sha256=rec.sha256, bytes=rec.bytes, backend="onnxruntime", precision="fp32",
                    drift=drift, build=build,
                    built_with={k: versions[k] for k in ("torch", "onnx", "onnxruntime") if k in versions}), \
        reading, tolerance


def build_artifacts(ctx: Context, opts: ConvertOptions) -> list[Built]:
    """Stage 3: every requested (backend, precision) other than the FP32 ONNX, each through the gate."""
    built = []
    for backend in opts.backends:
        for precision in opts.precisions:
            if (backend, precision) == ("onnxruntime", "fp32"):
                continue
            ctx.log(f"building {backend} {precision}")
            try:
                one = BACKENDS[backend].build_function()(ctx, precision)
            except Dropped as exc:
                ctx.log(f"  {backend} {precision}: not kept: {exc}")
                continue
            artifact = one.artifact
            ctx.log(f"  {backend} {precision}: {summary(artifact.drift)}")
            if artifact.clinical is not None:
                ctx.log(f"    against ground truth: {artifact.clinical.verdict}"
                        + (f" ({'; '.join(artifact.clinical.missed)})" if artifact.clinical.missed else ""))
            built.append(one)
    return built


def write(tmp: Path, opts: ConvertOptions, source: SourceModel, exported: Exported, reading: Reading,
          built: list[Built], ctx: Context, data: Data, seconds: float, log: Callable[[str], None]) -> None:
    """Stage 4: the reference probes, sample frames, the conversion report and, last, the manifest."""
    artifacts = [b.artifact for b in built]
    verdict = ctx.gauge.verdict
    probes = verdict.first_inputs(PROBE_COUNT)
    first = verdict.first_outputs(1)
    stored = pack("outputs", verdict.first_outputs(PROBE_COUNT))
    for b in built:
        stored.update(pack(f"artifact:{b.artifact.file}", b.probes))
    extra = {probe_input_key(name): array
             for (name, _), array in zip(opts.features, verdict.first_extra(PROBE_COUNT))}
    np.savez_compressed(tmp / REFERENCE, inputs=probes, **extra, **stored)
    data.plan.verdict.save(tmp / SAMPLES, SAMPLE_FRAMES)  # in the set's own format
    created = _now()
    report = {
        "created": created,
        "source": {"kind": source.kind, "file": opts.model.name, "sha256": source.sha256},
        "export": exported.record,
        "data": {"from": str(data.images.path), "images": len(data.images), "unit": data.images.unit,
                 "eval": str(data.evaluation.path) if data.evaluation is not None else None,
                 "calibration": len(data.plan.calibration), "tuning": len(data.plan.tuning),
                 "verdict": len(data.plan.verdict), "verdict_overlaps_calibration": data.plan.overlap,
                 "plan": data.plan.describe(), "verdict_names": data.plan.verdict.names,
                 "calib_method": opts.calib_method},
        "budget": str(opts.drift_budget),
        "reading": {"preprocess": reading.spec_reason, "outputs": f"{reading.kind}: {reading.kind_reason}"},
        "artifacts": [_report_row(a) for a in artifacts],
        "dropped": ctx.dropped,
        "seconds": round(seconds, 3),
        "peak_rss_mb": peak_rss_mb(),
    }
    explain = None
    if exported.cam is not None:
        explain = exported.cam.write(tmp)
        report["explain"] = exported.cam.report()
    write_json(tmp / REPORT, report)
    log(format_table(REPORT_HEADERS, [_table_row(a) for a in artifacts]))
    log(f"convert: {seconds:.0f} s, peak resident memory {report['peak_rss_mb']:.0f} MB")
    batch = "batch" if exported.dynamic_batch and not opts.static_shapes else 1
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        model=ModelCard(name=opts.name or opts.model.stem, task=opts.task, labels=reading.labels,
                        input_kind=opts.input_kind, shipped=shipped_name(source.sha256)),
        input=InputSpec(name=exported.input_name, shape=[batch, *exported.shape[1:]], dtype="float32",
                        layout=layout(opts), value_range=observe_range(data.images)),
        output=output_spec(tmp / MODEL_FILE, exported, reading, first, batch),
        preprocess=reading.spec,
        postprocess=task_named(opts.task).postprocess(first, reading.detection),
        artifacts=artifacts,
        files=[file_record(tmp, REFERENCE), file_record(tmp, REPORT), file_record(tmp, SAMPLES)],
        provenance=Provenance(
            source_sha256=source.sha256, source_kind=source.kind,
            calibration_sha256=data.plan.calibration.sha256(), calibration_count=len(data.plan.calibration),
            evaluation_sha256=data.plan.verdict.sha256(), evaluation_count=len(data.plan.verdict),
            evaluation_source=str((data.evaluation or data.images).path.resolve()),
            tuning_count=len(data.plan.tuning), tools=tool_versions(), created=created, host=platform.node()),
        explain=explain,
        features=feature_inputs(opts),
    )
    (tmp / MANIFEST).write_bytes(manifest.to_json())


def output_spec(model: Path, exported: Exported, reading: Reading, reference: Any, batch: int | str) -> OutputSpec:
    """The outputs the bundle reads: the primary one, or every output of a detector (after any NMS)."""
    if reading.detection is None:
        return OutputSpec(names=[exported.output_name], kind=reading.kind, shape=[batch, *reference.shape[1:]])
    from edgemed.runtimes.onnxruntime import OnnxRuntimeEngine

    with OnnxRuntimeEngine(model, device="cpu") as engine:
        outs = engine.outputs
    shape = [d if isinstance(d, int) and d > 0 else "detections" for d in outs[0].shape]
    return OutputSpec(names=[o.name for o in outs], kind="detections", shape=shape)


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


def conversion_steps(task: str) -> Any:
    """The task's own conversion steps (a module of edgemed.converters the task names), or None where the generic
    steps convert it."""
    name = task_named(task).conversion_steps
    return None if name is None else importlib.import_module(name)
