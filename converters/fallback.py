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
PASS_THROUGH = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "BatchNormalization"}


def rank_nodes(prepared_fp32: Path, qdq: Path, images: ImageSet, pre: Preprocessor, input_name: str,
               workdir: Path) -> list[tuple[str, float, list[str]]]:
    """(layer node name, SQNR dB, node names to keep in float with it), worst (lowest SQNR) first."""
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
    members: dict[str, list[str]] = {}
    for tensor, err in errors.items():
        node = producer.get(tensor)
        chain = []
        # A Conv's output is often fused with its activation (Conv-Relu), so the quantized tensor is
        # the activation's output: walk back to the layer and keep the whole group together.
        while node is not None and node.op_type in PASS_THROUGH and node.input and node.input[0] in producer:
            chain.append(node.name)
            node = producer[node.input[0]]
        if node is None or node.op_type not in QUANTIZABLE or not node.name:
            continue
        # qdq_err: the noise this tensor's own quantization adds (local), rather than the error
        # accumulated from upstream layers (xmodel_err), which would blame the last layers.
        sqnr = float(err.get("qdq_err", err.get("xmodel_err", float("inf"))))
        ranked[node.name] = min(sqnr, ranked.get(node.name, float("inf")))
        members.setdefault(node.name, [node.name])
        members[node.name] += [n for n in chain if n and n not in members[node.name]]
    order = sorted(ranked.items(), key=lambda kv: kv[1])
    return [(name, sqnr, members[name]) for name, sqnr in order]


def output_layers(prepared_fp32: Path) -> list[str]:
    """Nodes that produce the graph's outputs, walked back through activations to the last layer.

    Their output quantization clips logits to the calibration range; an image whose logits fall
    outside it is clipped the same way whatever else is kept in float, so the head goes first.
    """
    import onnx

    graph = onnx.load(str(prepared_fp32)).graph
    producer = {out: node for node in graph.node for out in node.output}
    names = []
    for out in graph.output:
        node = producer.get(out.name)
        group = []
        while node is not None:
            group.append(node.name)
            if node.op_type in QUANTIZABLE or not node.input or node.input[0] not in producer:
                break
            node = producer[node.input[0]]
        if node is not None and node.op_type in QUANTIZABLE:
            names += [n for n in group if n]
    return names


def exclusion_ladder(ranked: list[tuple[str, float, list[str]]], head: list[str] | None = None) -> list[list[str]]:
    """Node names to keep in float, growing: the output head alone, then the head plus the worst
    1, 2, 4, ... layers by SQNR (each with its fused activation), up to half the layers."""
    head = list(head or [])
    ladder = [head] if head else []
    rest = [r for r in ranked if r[0] not in head]
    k = 1
    while k <= max(1, len(ranked) // 2):
        ladder.append(head + [n for _, _, group in rest[:k] for n in group if n not in head])
        k *= 2
    return ladder
