"""Accuracy-aware fallback for ONNX Runtime INT8: find the layers quantization hurts most.

Uses ONNX Runtime's own debugging tool (``qdq_loss_debug``): both the float and the QDQ model
are made to output every intermediate tensor, run on a few calibration images, and each
tensor's quantization noise is measured as SQNR (dB). The nodes producing the noisiest
tensors are the first candidates to keep in float.
"""

from __future__ import annotations

from pathlib import Path

from edgemed.datasets import ImageSet
from edgemed.preprocess import Preprocessor

from .ort_quantize import make_reader

QUANTIZABLE = {"Conv", "ConvTranspose", "MatMul", "Gemm"}


def rank_nodes(prepared_fp32: Path, qdq: Path, images: ImageSet, pre: Preprocessor, input_name: str,
               workdir: Path) -> list[tuple[str, float]]:
    """(node name, SQNR dB) for quantizable float nodes, worst (lowest SQNR) first."""
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    aug_float, aug_qdq = workdir / "float_debug.onnx", workdir / "qdq_debug.onnx"
    modify_model_output_intermediate_tensors(str(prepared_fp32), str(aug_float))
    modify_model_output_intermediate_tensors(str(qdq), str(aug_qdq))
    float_acts = collect_activations(str(aug_float), make_reader(images, pre, input_name))
    qdq_acts = collect_activations(str(aug_qdq), make_reader(images, pre, input_name))
    errors = compute_activation_error(create_activation_matching(qdq_acts, float_acts))

    graph = onnx.load(str(prepared_fp32)).graph
    producer = {out: node for node in graph.node for out in node.output}
    ranked: dict[str, float] = {}
    for tensor, err in errors.items():
        node = producer.get(tensor)
        if node is None or node.op_type not in QUANTIZABLE or not node.name:
            continue
        # qdq_err: the noise this tensor's own quantization adds (local), rather than the error
        # accumulated from upstream layers (xmodel_err), which would blame the last layers.
        sqnr = float(err.get("qdq_err", err.get("xmodel_err", float("inf"))))
        ranked[node.name] = min(sqnr, ranked.get(node.name, float("inf")))
    return sorted(ranked.items(), key=lambda kv: kv[1])


def exclusion_ladder(ranked: list[tuple[str, float]]) -> list[list[str]]:
    """Growing sets of the worst nodes to keep in float: 1, 2, 4, ... up to half the layers."""
    names = [n for n, _ in ranked]
    ladder, k = [], 1
    while k <= max(1, len(names) // 2):
        ladder.append(names[:k])
        k *= 2
    return ladder
