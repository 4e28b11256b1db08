"""The FP32 reference: what the source model itself answers on the probe inputs.

For torch sources that is PyTorch; for ONNX sources it is ONNX's own reference evaluator
(an independent numpy implementation of the spec), so ONNX Runtime is never checked only
against itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgemed.errors import ConversionError, error_line, first_line
from edgemed.output_reader import OutputReader

from .sources import SourceModel


def _torch_callable(module: Any):
    import torch

    if isinstance(module, torch.export.ExportedProgram):
        return module.module()
    return module


def reference_outputs(source: SourceModel, probes: np.ndarray, reader: OutputReader, names: list[str],
                      onnx_path: str | None = None, input_name: str = "input") -> tuple[Any, str]:
    """The source's outputs on the probes, one probe at a time (batch 1 always works), read by ``reader``
    (``names``: the model's outputs in order), and what produced them."""
    if source.is_onnx:
        from onnx.reference import ReferenceEvaluator

        try:
            evaluator = ReferenceEvaluator(str(onnx_path or source.path))
            outs = [reader.one(dict(zip(names, evaluator.run(None, {input_name: p[None]})))) for p in probes]
        except Exception as exc:  # noqa: BLE001 - evaluator lacks some ops
            raise ConversionError(f"ONNX reference evaluator cannot run this model ({first_line(exc, 200)})",
                                  "export from PyTorch instead so the reference comes from the source") from exc
        return reader.collect(outs), "onnx.reference.ReferenceEvaluator"
    import torch

    fn = _torch_callable(source.module)
    outs = []
    with torch.no_grad():
        for p in probes:
            try:
                out = fn(torch.from_numpy(p[None].copy()))
            except Exception as exc:  # noqa: BLE001
                raise ConversionError(f"the model fails on a probe of shape {p[None].shape} ({error_line(exc, 200)})",
                                      "check --input-shape and the preprocessing spec") from exc
            if isinstance(out, dict):
                out = list(out.values())
            if not isinstance(out, (tuple, list)):
                out = [out]
            outs.append(reader.one({n: o.detach().float().numpy() for n, o in zip(names, out)}))
    return reader.collect(outs), f"torch {torch.__version__}"


def engine_outputs(engine: Any, probes: np.ndarray, input_name: str, reader: OutputReader) -> Any:
    return reader.run(engine, input_name, probes)
