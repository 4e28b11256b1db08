"""PyTorch → ONNX export: the dynamo exporter first, the TorchScript-based one as a named fallback.

The result always has a dynamic batch axis where the model allows it, passes ``onnx.checker``
and shape inference, and is saved as one self-contained file (no external-data side file).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgemed.errors import ConversionError, error_line, first_line

INPUT_NAME = "input"
OUTPUT_NAME = "output"
OPSET = 18


@dataclass
class ExportRecord:
    exporter: str
    dynamic_batch: bool
    notes: list[str] = field(default_factory=list)


def _dynamo(module: Any, examples: tuple, dynamic: bool, outputs: list[str], inputs: list[str]):
    import torch

    batch = torch.export.Dim("batch", min=1, max=1024)  # one batch axis shared by every input
    shapes = tuple({0: batch} for _ in examples) if dynamic else None
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # e.g. "torchvision is not installed" registry chatter
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, examples, dynamo=True, input_names=inputs,
                                        output_names=outputs, dynamic_shapes=shapes, opset_version=OPSET,
                                        verbose=False, optimize=True)
    finally:
        quiet.setLevel(level)
    return program.model_proto


def _torchscript(module: Any, examples: tuple, dynamic: bool, outputs: list[str], inputs: list[str]):
    import onnx
    import torch

    buffer = io.BytesIO()
    axes = {name: {0: "batch"} for name in [*inputs, *outputs]} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, examples, buffer, dynamo=False, input_names=inputs,
                          output_names=outputs, dynamic_axes=axes, opset_version=OPSET)
    return onnx.load_from_string(buffer.getvalue())


def examples(input_shape: list[int], extra: Sequence[tuple[str, int]] = ()) -> tuple:
    """Zero tensors of the declared input shape and of each feature input's (batch, K)."""
    import torch

    return (torch.zeros(input_shape, dtype=torch.float32),
            *(torch.zeros((input_shape[0], k), dtype=torch.float32) for _, k in extra))


def check_runs(module: Any, input_shape: list[int], extra: Sequence[tuple[str, int]] = ()) -> int:
    """Run the model once, eagerly, on a tensor of the declared shape (and the feature inputs'): a model that
    cannot take it fails here with its own message in one line, not deep inside an exporter after pages of tracer
    logs."""
    import torch

    fn = module.module() if isinstance(module, torch.export.ExportedProgram) else module
    try:
        with torch.no_grad():
            out = fn(*examples(input_shape, extra))
    except Exception as exc:  # noqa: BLE001 - any failure of the user's model on this shape
        shape = "x".join(map(str, input_shape)) + "".join(f" and a {input_shape[0]}x{k} {n!r}" for n, k in extra)
        raise ConversionError(f"the model fails on a {shape} input: {error_line(exc)}",
                              "check --input-shape (channels and size) and --features against what the model was "
                              "trained on") from exc
    return len(out) if isinstance(out, (tuple, list, dict)) else 1


def output_names(count: int) -> list[str]:
    """``output`` for one output; ``output``, ``output_1``, ... for several."""
    return [OUTPUT_NAME] + [f"{OUTPUT_NAME}_{i}" for i in range(1, count)]


@contextlib.contextmanager
def _quiet_torch_logs():
    """torch.export logs each failed trace attempt at ERROR level; edgemed reports the outcome itself."""
    logger = logging.getLogger("torch")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def export_torch(module: Any, input_shape: list[int], target: Path,
                 names: Callable[[int], list[str]] = output_names, extra: Sequence[tuple[str, int]] = ()
                 ) -> ExportRecord:
    """Export a torch module (or ExportedProgram) to ``target``, its outputs named by ``names`` (given
    how many there are: a detector's boxes and scores), its inputs ``input`` and each of ``extra`` (name, K: the
    feature inputs, in the module's argument order); raises ConversionError if all routes fail."""
    import onnx
    import torch

    outputs = names(check_runs(module, input_shape, extra))
    example = examples(input_shape, extra)
    inputs = [INPUT_NAME, *(n for n, _ in extra)]
    notes: list[str] = []
    is_script = isinstance(module, torch.jit.ScriptModule)
    is_program = isinstance(module, torch.export.ExportedProgram)
    attempts = []
    if not is_script:
        attempts += [("dynamo", _dynamo, True), ("dynamo", _dynamo, False)]
    if not is_program:
        attempts += [("torchscript", _torchscript, True)]
    if is_script:
        notes.append("TorchScript input: exported with the TorchScript-based exporter (dynamo cannot trace it)")
    proto = None
    for name, fn, dynamic in attempts:
        try:
            with _quiet_torch_logs():
                proto = fn(module, example, dynamic, outputs, inputs)
            record = ExportRecord(name, dynamic, notes)
            break
        except Exception as exc:  # noqa: BLE001 - exporters raise many types; each failure is reported
            notes.append(f"{name} exporter ({'dynamic' if dynamic else 'static'} batch) failed: {first_line(exc, 240)}")
    if proto is None:
        raise ConversionError("every ONNX exporter failed: " + " | ".join(notes),
                              "check the model runs on a tensor of --input-shape, or export ONNX yourself")
    if record.exporter != "dynamo" and not is_script:
        notes.append("fell back to the TorchScript-based exporter")
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0] if proto.graph.input else None
    if record.dynamic_batch and batch_dim is not None and batch_dim.HasField("dim_value"):
        # the exporter may specialise a dynamic batch it cannot keep (seen: dynamo with a bidirectional LSTM)
        # without failing: the graph, not the request, says what the artifact takes
        record.dynamic_batch = False
        notes.append(f"the {record.exporter} exporter fixed the batch axis at {batch_dim.dim_value}")
    if not record.dynamic_batch:
        notes.append("batch axis is static: the model could not be exported with a dynamic batch")
    proto = finalize(proto)
    onnx.save_model(proto, str(target), save_as_external_data=False)
    return record


def finalize(proto: Any) -> Any:
    """Check the graph and attach inferred shapes; raises ConversionError on an invalid model."""
    import onnx

    try:
        onnx.checker.check_model(proto, full_check=False)
        proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises ValidationError / InferenceError
        raise ConversionError(f"the ONNX model is invalid ({first_line(exc, 240)})",
                              "fix the model or re-export it with a supported opset") from exc
    return proto


def graph_io(proto: Any) -> tuple[list[tuple[str, list]], list[tuple[str, list]]]:
    """(name, dims) of graph inputs and outputs; symbolic dims are strings."""
    initializers = {i.name for i in proto.graph.initializer}

    def dims(value_info: Any) -> list:
        shape = value_info.type.tensor_type.shape
        return [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in shape.dim]

    ins = [(v.name, dims(v)) for v in proto.graph.input if v.name not in initializers]
    outs = [(v.name, dims(v)) for v in proto.graph.output]
    return ins, outs
