"""``edgemed convert``: source model → verified bundle, written atomically.

The order matters: options are checked before anything is loaded; the bundle is assembled in a
temporary directory; the FP32 ONNX model must match the source on real probe images before the
directory is renamed into place. A failure at any point leaves no bundle behind.
"""

from __future__ import annotations

import datetime as _dt
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgemed._version import BUNDLE_SCHEMA_VERSION, __version__
from edgemed.bundle import MANIFEST, REFERENCE, REPORT, artifact_bytes, atomic_directory, file_entry, write_json
from edgemed.datasets import ImageSet
from edgemed.drift import DEFAULT_BUDGETS, drift_figures, parse_budget
from edgemed.errors import ConversionError, InputError
from edgemed.preprocess import Preprocessor, default_spec
from edgemed.samples import samples_dir
from edgemed.table import format_table

from . import options
from .artifacts import BUILDERS, Context
from .calibration import MIN_INT8_CALIBRATION, PROBE_COUNT, split_images, stack
from .export_onnx import INPUT_NAME, export_torch, finalize, graph_io
from .ort_quantize import CALIB_METHODS, scratch_dir
from .reference import engine_outputs, reference_outputs
from .sources import SourceModel, load_source

# FP32 ONNX must reproduce the source: |diff| <= ATOL + RTOL * max|reference| on every probe output.
PARITY_ATOL = 1e-4
PARITY_RTOL = 1e-5
MODEL_FILE = "model.onnx"


def sample_images() -> Path:
    """The real ultrasound sample images shipped with edgemed (the default probe set)."""
    return samples_dir("busi")


def tool_versions() -> dict:
    versions = {"edgemed": __version__, "python": platform.python_version(), "numpy": np.__version__}
    for name in ("torch", "onnx", "onnxruntime", "onnxscript"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            pass
    return versions


def _onnx_source(source: SourceModel, target: Path, input_shape: list[int] | None) -> tuple[list, dict]:
    import onnx

    try:
        proto = onnx.load(str(source.path))
    except Exception as exc:  # noqa: BLE001
        raise ConversionError(f"{source.path}: not a readable ONNX model ({str(exc)[:200]})",
                              "check the file is complete") from exc
    proto = finalize(proto)
    ins, _ = graph_io(proto)
    if len(ins) != 1:
        raise ConversionError(f"{source.path}: the model has {len(ins)} inputs; edgemed takes single-image models",
                              "export a model with one image input")
    name, dims = ins[0]
    if len(dims) != 4:
        raise ConversionError(f"{source.path}: input {name!r} has shape {dims}, not NCHW",
                              "export a 4-D image input")
    if input_shape is not None:
        mismatch = [i for i in (1, 2, 3) if isinstance(dims[i], int) and dims[i] != input_shape[i]]
        if mismatch:
            raise InputError(f"--input-shape {input_shape} does not match the ONNX input {dims}",
                             "pass the model's real input shape, or omit --input-shape for ONNX files")
    shape = input_shape or [1] + [d if isinstance(d, int) else -1 for d in dims[1:]]
    if any(d < 1 for d in shape[1:]):
        raise InputError(f"{source.path}: input {name!r} has symbolic dims {dims}",
                         "pass --input-shape NxCxHxW")
    onnx.save_model(proto, str(target), save_as_external_data=False)
    return shape, {"exporter": "none (ONNX source, checked and shape-inferred)", "dynamic_batch":
                   not isinstance(dims[0], int), "input_name": name, "notes": []}


def convert(
    model: str | Path,
    out: str | Path,
    task: str,
    input_shape: str | None = None,
    arch: str | None = None,
    arch_args: str | dict | None = None,
    allow_pickle: bool = False,
    labels: str | list[str] | None = None,
    preprocess: Any = None,
    to: str | list[str] = "onnx",
    precision: str | list[str] = "fp32",
    calib: str | Path | None = None,
    calib_count: int | None = None,
    calib_key: str | None = None,
    calib_method: str = "minmax",
    drift_budget: str | None = None,
    static_shapes: bool = False,
    dla_core: int | None = None,
    output_kind: str = "logits",
    name: str | None = None,
    force: bool = False,
    log: Callable[[str], None] = lambda s: None,
) -> Path:
    started = time.perf_counter()
    if task not in ("classification", "segmentation"):
        raise InputError(f"--task {task!r} is not supported", "use classification or segmentation")
    if output_kind not in ("logits", "probabilities"):
        raise InputError(f"--output-kind {output_kind!r} is not supported", "use logits or probabilities")
    shape = options.parse_shape(input_shape) if input_shape is not None else None
    label_list = options.parse_labels(labels)
    spec = options.parse_preprocess(preprocess)
    targets = options.parse_choices(to, options.TARGETS, "--to")
    precisions = options.parse_choices(precision, options.PRECISIONS, "--precision")
    method = options.parse_choices(calib_method, CALIB_METHODS, "--calib-method")[0]
    bounds = parse_budget(drift_budget if drift_budget is not None else DEFAULT_BUDGETS[task], task)
    options.check_backends(targets)
    model = Path(model)
    if not model.is_file():
        raise InputError(f"{model}: no such model file", "check the path")
    out = Path(out)
    if out.exists() and not force:
        raise InputError(f"{out} already exists", "pass --force to replace it, or choose another -o")
    images = ImageSet.open(calib if calib is not None else sample_images(), key=calib_key)
    split = split_images(images, calib_count)
    if "int8" in precisions and len(split.calibration) < MIN_INT8_CALIBRATION:
        raise InputError(f"INT8 needs at least {MIN_INT8_CALIBRATION} calibration images, got "
                         f"{len(split.calibration)}", "pass --calib with a folder or .npz of real images")

    source = load_source(model, arch=arch, arch_args=arch_args, allow_pickle=allow_pickle)
    if shape is None and not source.is_onnx:
        raise InputError("--input-shape is required for PyTorch models", "write e.g. --input-shape 1x1x256x256")
    log(f"source: {source.kind} {model.name} (sha256 {source.sha256[:12]})")

    with atomic_directory(out, force=force) as tmp, scratch_dir() as scratch:
        onnx_path = tmp / MODEL_FILE
        t0 = time.perf_counter()
        if source.is_onnx:
            shape, export = _onnx_source(source, onnx_path, shape)
            input_name = export.pop("input_name")
        else:
            record = export_torch(source.module, shape, onnx_path)
            export = {"exporter": record.exporter, "dynamic_batch": record.dynamic_batch,
                      "notes": source.notes + record.notes}
            input_name = INPUT_NAME
        export["seconds"] = round(time.perf_counter() - t0, 3)
        log(f"exported with {export['exporter']} exporter (dynamic batch: {export['dynamic_batch']})")

        spec = spec if spec is not None else default_spec(shape)
        pre = Preprocessor(spec, shape)
        evaluation = stack(split.evaluation, pre)

        from edgemed.runtimes.onnxruntime import OnnxRuntimeEngine

        engine = OnnxRuntimeEngine(onnx_path, device="cpu")
        output_name = engine.outputs[0].name
        reference, reference_by = reference_outputs(source, evaluation, onnx_path, input_name)
        candidate = engine_outputs(engine, evaluation, input_name, output_name)
        engine.close()
        label_list = _check_outputs(task, reference, label_list)

        figures = drift_figures(reference, candidate, task, output_kind)
        tolerance = PARITY_ATOL + PARITY_RTOL * float(np.abs(reference).max())
        figures["parity_tolerance"] = tolerance
        passed = figures["max_abs_diff"] <= tolerance and (
            figures.get("agreement", 1.0) == 1.0 and figures.get("changed_pixels", 0.0) == 0.0
        )
        figures.update(passed=bool(passed), reference=reference_by, budget="parity")
        log(f"parity vs {reference_by} on {len(evaluation)} real images: max |diff| "
            f"{figures['max_abs_diff']:.2e} (tolerance {tolerance:.1e})")
        if not passed:
            raise ConversionError(
                f"ONNX Runtime output differs from the source model on real probes: max |diff| "
                f"{figures['max_abs_diff']:.3g} > {tolerance:.3g} (agreement/changed pixels in report)",
                "the export is not faithful; try another opset/exporter or report the model; no bundle written",
            )

        versions = tool_versions()
        artifacts = [file_entry(tmp, MODEL_FILE, backend="onnxruntime", precision="fp32", drift=figures,
                                build={"seconds": export["seconds"]},
                                built_with={k: versions[k] for k in ("torch", "onnx", "onnxruntime") if k in versions})]
        ctx = Context(bundle_dir=tmp, scratch=Path(scratch), fp32_onnx=onnx_path, pre=pre, input_name=input_name,
                      calibration=split.calibration, evaluation=evaluation, reference=reference, task=task,
                      output_kind=output_kind, bounds=bounds, calib_method=method,
                      static_batch=1 if static_shapes else None, dla_core=dla_core, log=log, versions=versions)
        for target in targets:
            backend = options.BACKEND_OF[target]
            for prec in precisions:
                if (backend, prec) == ("onnxruntime", "fp32"):
                    continue
                log(f"building {backend} {prec}")
                entry = BUILDERS[backend](ctx, prec)
                log(f"  {backend} {prec}: {_summary(entry['drift'])}")
                artifacts.append(entry)

        np.savez_compressed(tmp / REFERENCE, inputs=evaluation[:PROBE_COUNT], outputs=reference[:PROBE_COUNT])
        batch = "batch" if export["dynamic_batch"] and not static_shapes else shape[0]
        report = {
            "created": _now(),
            "source": {"kind": source.kind, "file": model.name, "sha256": source.sha256},
            "export": export,
            "data": {"from": str(images.path), "images": len(images), "calibration": len(split.calibration),
                     "evaluation": len(split.evaluation), "evaluation_overlaps_calibration": split.overlap,
                     "calib_method": method},
            "budget": ",".join(map(str, bounds)),
            "artifacts": [_report_row(a) for a in artifacts],
            "seconds": round(time.perf_counter() - started, 3),
        }
        write_json(tmp / REPORT, report)
        log(format_table(REPORT_HEADERS, [_table_row(r) for r in report["artifacts"]]))
        manifest = {
            "schema_version": BUNDLE_SCHEMA_VERSION,
            "model": {"name": name or model.stem, "task": task, "labels": label_list},
            "input": {"name": input_name, "shape": [batch] + list(shape[1:]), "dtype": "float32", "layout": "NCHW"},
            "output": {"names": [output_name], "kind": output_kind, "shape": ["batch"] + list(reference.shape[1:])},
            "preprocess": spec,
            "postprocess": _postprocess(task, reference),
            "artifacts": artifacts,
            "files": [file_entry(tmp, REFERENCE), file_entry(tmp, REPORT)],
            "provenance": {
                "source_sha256": source.sha256, "source_kind": source.kind,
                "calibration_sha256": split.calibration.sha256(), "calibration_count": len(split.calibration),
                "evaluation_sha256": split.evaluation.sha256(), "evaluation_count": len(split.evaluation),
                "tools": versions, "created": report["created"], "host": platform.node(),
            },
        }
        write_json(tmp / MANIFEST, manifest)
    log(f"bundle written: {out}")
    return out


REPORT_HEADERS = ["artifact", "backend", "precision", "MB", "build s", "int8 layers", "drift", "gate"]


def _summary(d: dict) -> str:
    parts = [f"{k} {d[k]:.4f}" for k in ("agreement", "dice", "changed_pixels") if k in d]
    parts.append(f"max|diff| {d['max_abs_diff']:.2e}")
    return ", ".join(parts) + (" -> passed" if d.get("passed") else f" -> FAILED ({'; '.join(d.get('missed', []))})")


def _table_row(r: dict) -> list:
    q = r.get("quantized_layers")
    return [r["file"], r["backend"], r["precision"], f"{r['bytes'] / 1e6:.2f}", r["build_seconds"],
            f"{q['int8']}/{q['of']}" if q else "-", r["drift"], "pass" if r["passed"] else "FAIL"]


def _check_outputs(task: str, reference: np.ndarray, labels: list[str] | None) -> list[str]:
    if task == "classification":
        if reference.ndim != 2:
            raise InputError(f"a classifier should output (N, classes), this model outputs {reference.shape}",
                             "use --task segmentation for per-pixel outputs")
        classes = max(2, reference.shape[1])
        default = [str(i) for i in range(classes)]
    else:
        if reference.ndim != 4:
            raise InputError(f"a segmenter should output (N, C, H, W), this model outputs {reference.shape}",
                             "use --task classification for per-image outputs")
        classes = max(2, reference.shape[1])
        default = ["background"] + [f"class{i}" for i in range(1, classes)]
    if labels is None:
        return default
    if len(labels) != classes:
        raise InputError(f"--labels names {len(labels)} classes but the model outputs {classes}",
                         f"give {classes} names, e.g. {','.join(default)}")
    return labels


def _postprocess(task: str, reference: np.ndarray) -> dict:
    if task == "classification":
        return {"activation": "sigmoid" if reference.shape[1] == 1 else "softmax", "decision": "argmax"}
    return {"activation": "sigmoid" if reference.shape[1] == 1 else "softmax", "decision": "argmax",
            "resize_to_input": "bilinear on probabilities"}


def _report_row(artifact: dict) -> dict:
    d = artifact["drift"]
    return {k: artifact[k] for k in ("file", "backend", "precision")} | {
        "bytes": artifact_bytes(artifact),
        "build_seconds": artifact.get("build", {}).get("seconds"), "passed": d["passed"],
        "drift": _summary(d).split(" -> ")[0], "excluded_layers": artifact.get("build", {}).get("excluded_nodes", []),
        "quantized_layers": artifact.get("build", {}).get("quantized_layers"),
    }


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


__all__ = ["convert", "sample_images"]
