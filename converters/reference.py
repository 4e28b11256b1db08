"""The two references a conversion holds to: the source model itself, and the FP32 ONNX model that stands for it.

:class:`SourceRunner` is what the source answers: PyTorch for torch sources, ONNX's own reference
evaluator (an independent numpy implementation of the spec) for ONNX sources, so ONNX Runtime is never
checked only against itself. It is run once per verdict case, for the parity check of the FP32 export.

:class:`Reference` is the FP32 ONNX model in ONNX Runtime, opened once for the whole conversion. Once
parity holds (every case within round-off of the source, no decision changed), it serves everything else:
the output names, the FP32 outputs every candidate is compared with, the margins of the population, the
labelled cases and the probe outputs. Candidates are judged against it, as ``edgemed certify`` judges them on
a site's data later, where no PyTorch is installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgemed.errors import ConversionError, error_line, first_line
from edgemed.output_reader import OutputReader

from .cases import CaseInput, as_feed
from .sources import SourceModel


def _torch_callable(module: Any):
    import torch

    if isinstance(module, torch.export.ExportedProgram):
        return module.module()
    return module


class SourceRunner:
    """One case (a (1, ...) input) through the source model, read by ``reader``; ``names`` are the model's
    outputs in order."""

    def __init__(self, source: SourceModel, reader: OutputReader, names: list[str], onnx_path: Path | None = None,
                 input_names: list[str] = ("input",)) -> None:
        self.reader, self.names, self.input_names = reader, names, list(input_names)
        if source.is_onnx:
            from onnx.reference import ReferenceEvaluator

            try:
                self._evaluator = ReferenceEvaluator(str(onnx_path or source.path))
            except Exception as exc:  # noqa: BLE001 - the evaluator lacks some ops
                raise _no_evaluator(exc) from exc
            self.by = "onnx.reference.ReferenceEvaluator"
            self._fn = None
        else:
            import torch

            self._fn = _torch_callable(source.module)
            self.by = f"torch {torch.__version__}"

    def __call__(self, x: CaseInput) -> Any:
        if self._fn is None:
            try:
                outs = self._evaluator.run(None, as_feed(self.input_names, x))
            except Exception as exc:  # noqa: BLE001
                raise _no_evaluator(exc) from exc
            return self.reader.one(dict(zip(self.names, outs)))
        import torch

        arrays = (x,) if isinstance(x, np.ndarray) else x  # the module takes its inputs in the graph's order
        with torch.no_grad():
            try:
                out = self._fn(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays))
            except Exception as exc:  # noqa: BLE001
                raise ConversionError(f"the model fails on a probe of shape {arrays[0].shape} ({error_line(exc, 200)})",
                                      "check --input-shape and the preprocessing spec") from exc
        if isinstance(out, dict):
            out = list(out.values())
        if not isinstance(out, (tuple, list)):
            out = [out]
        return self.reader.one({n: o.detach().float().numpy() for n, o in zip(self.names, out)})


def _no_evaluator(exc: Exception) -> ConversionError:
    return ConversionError(f"ONNX reference evaluator cannot run this model ({first_line(exc, 200)})",
                           "export from PyTorch instead so the reference comes from the source")


class Reference:
    """The FP32 ONNX model in ONNX Runtime, opened once per conversion: one case in, its output (as the gate reads
    it) out."""

    def __init__(self, path: Path, input_names: list[str], reader: OutputReader) -> None:
        from edgemed.runtimes.onnxruntime import OnnxRuntimeEngine

        self.path, self.input_names, self.reader = path, list(input_names), reader
        self.engine = OnnxRuntimeEngine(path, device="cpu")
        self.output_names = [o.name for o in self.engine.outputs]
        self.by = "the FP32 ONNX model in ONNX Runtime (at parity with the source)"

    def __call__(self, x: CaseInput) -> Any:
        return self.reader.one(self.engine.infer(as_feed(self.input_names, x)))

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> Reference:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def engine_outputs(engine: Any, probes: np.ndarray, input_name: str, reader: OutputReader) -> Any:
    return reader.run(engine, input_name, probes)
