"""Accuracy-aware fallback for ONNX Runtime INT8: find the layers quantization hurts most.

Uses ONNX Runtime's own debugging tool (``qdq_loss_debug``): both the float and the QDQ model
are made to output every intermediate tensor, run on a few calibration images, and each
tensor's quantization noise is measured as SQNR (dB). The nodes producing the noisiest
tensors are the first candidates to keep in float.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    aug_float, aug_qdq = workdir / "float_debug.onnx", workdir / "qdq_debug.onnx"
    modify_model_output_intermediate_tensors(str(prepared_fp32), str(aug_float))
    modify_model_output_intermediate_tensors(str(qdq), str(aug_qdq))
    float_acts = collect_activations(str(aug_float), make_reader(images, pre, input_name))
    qdq_acts = collect_activations(str(aug_qdq), make_reader(images, pre, input_name))
    matching = create_activation_matching(qdq_acts, float_acts)

    graph = onnx.load(str(prepared_fp32)).graph
    producer = {out: node for node in graph.node for out in node.output}
    qdq_producer = {out: node for node in onnx.load(str(qdq)).graph.node for out in node.output}
    ranked: dict[str, float] = {}
    members: dict[str, list[str]] = {}
    for tensor, match in matching.items():
        if "pre_qdq" not in match or "post_qdq" not in match:
            continue
        node = producer.get(tensor)
        # The noise this tensor's own quantization adds (local), rather than the error accumulated from
        # upstream layers, which would blame the last layers. When the quantizer fused a Relu/Clip into
        # the layer before it (the QDQ graph has no such node, and the quantized range starts at the
        # activation's floor), the tensor before quantization is the layer's pre-activation output: the
        # activation is applied to it first, or the "noise" would be the whole negative half (the shipped
        # U-Net's layers all scored 1.8-3.2 dB that way, against 38.8 dB for the model's output).
        activation = _fused_activation(node, qdq_producer.get(tensor), graph)
        sqnr = _sqnr([activation(x) for x in match["pre_qdq"]], match["post_qdq"])
        chain = []
        # A Conv's output is often fused with its activation (Conv-Relu), so the quantized tensor is
        # the activation's output: walk back to the layer and keep the whole group together.
        while node is not None and node.op_type in PASS_THROUGH and node.input and node.input[0] in producer:
            chain.append(node.name)
            node = producer[node.input[0]]
        if node is None or node.op_type not in QUANTIZABLE or not node.name:
            continue
        ranked[node.name] = min(sqnr, ranked.get(node.name, float("inf")))
        members.setdefault(node.name, [node.name])
        members[node.name] += [n for n in chain if n and n not in members[node.name]]
    order = sorted(ranked.items(), key=lambda kv: kv[1])
    return [(name, sqnr, members[name]) for name, sqnr in order]


def _fused_activation(float_node, qdq_node, graph):
    """The activation the quantizer folded into this tensor's quantization, as a numpy function."""
    import onnx

    if float_node is None or float_node.op_type not in ("Relu", "Clip"):
        return lambda x: x
    if qdq_node is not None and qdq_node.op_type == float_node.op_type:
        return lambda x: x  # not fused: the QDQ graph still computes it
    if float_node.op_type == "Relu":
        return lambda x: np.maximum(x, 0)
    constants = {i.name: float(onnx.numpy_helper.to_array(i)) for i in graph.initializer if not i.dims}
    lo = constants.get(float_node.input[1]) if len(float_node.input) > 1 else None
    hi = constants.get(float_node.input[2]) if len(float_node.input) > 2 else None
    return lambda x: np.clip(x, lo, hi)


def _sqnr(reference: list[np.ndarray], quantized: list[np.ndarray]) -> float:
    """Signal-to-quantization-noise ratio in dB (as onnxruntime's qdq_loss_debug defines it)."""
    ref = np.concatenate([np.ravel(r) for r in reference]).astype(np.float64)
    got = np.concatenate([np.ravel(q) for q in quantized]).astype(np.float64)
    eps = np.finfo(np.float64).eps
    return float(20 * np.log10(max(np.linalg.norm(ref), eps) / max(np.linalg.norm(ref - got), eps)))


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


def input_layers(prepared_fp32: Path) -> list[str]:
    """The first compute layers, fed by the graph input: they see the raw image range, the widest any
    activation has, and keeping the first convolution in float is a known fix for CNN classifiers."""
    import onnx

    graph = onnx.load(str(prepared_fp32)).graph
    inputs = {i.name for i in graph.input} - {i.name for i in graph.initializer}
    return [n.name for n in graph.node if n.op_type in QUANTIZABLE and n.name and n.input and n.input[0] in inputs]


def exclusion_ladder(ranked: list[tuple[str, float, list[str]]], head: list[str] | None = None,
                     first: list[str] | None = None) -> list[list[str]]:
    """Node names to keep in float, growing: the output head alone, the head and the first layer, then
    those plus the worst 1, 2, 4, ... layers by SQNR (each with its fused activation), up to half the layers."""
    base = list(head or [])
    ladder = [list(base)] if base else []
    extra = [n for n in first or [] if n not in base]
    if extra:
        base += extra
        ladder.append(list(base))
    rest = [r for r in ranked if r[0] not in base]
    k = 1
    while k <= max(1, len(ranked) // 2):
        ladder.append(base + [n for _, _, group in rest[:k] for n in group if n not in base])
        k *= 2
    return ladder
