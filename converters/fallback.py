"""Accuracy-aware fallback for ONNX Runtime INT8: find the layers quantization hurts most.

Each quantized activation's noise is measured as SQNR (dB), the way ONNX Runtime's debugging tool
(``qdq_loss_debug``) defines it: the QDQ model is made to output every tensor before and after its
quantize-dequantize pair, and the layers whose tensors are noisiest are the first candidates to keep in
float. Unlike that tool's ``collect_activations``, which holds every intermediate tensor of every image
(a 584x568 U-Net's ranking grew past 24 GB and was killed), the tensors are requested a bounded group at a
time, one image at a time, and only two sums per tensor are kept: memory stays flat in image size, layer
count and image count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .cases import as_feed

QUANTIZABLE = {"Conv", "ConvTranspose", "MatMul", "Gemm"}
PASS_THROUGH = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "BatchNormalization"}
CHUNK_BYTES = 256 << 20  # the most tensor data one ranking run may return
SAVED = "_ReshapedSavedOutput"  # qdq_loss_debug's suffix for the tensors it adds as outputs


def _pairs(names: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Activation name -> (tensor before Q/DQ, tensor after), as qdq_loss_debug's activation matching pairs them."""
    from onnxruntime.quantization.qdq_loss_debug import DEQUANT_OUTPUT_SUFFIX, QUANT_INPUT_SUFFIX

    have = set(names)
    pairs = {}
    for name in have:
        if name.endswith(QUANT_INPUT_SUFFIX):
            pre = name[: -len(QUANT_INPUT_SUFFIX)]
            if pre in have:
                pairs[pre] = (name, pre)
        for suffix in (DEQUANT_OUTPUT_SUFFIX, DEQUANT_OUTPUT_SUFFIX + "_1"):
            if name.endswith(suffix):
                pre = name[: -len(suffix)]
                if pre in have and pre not in pairs:
                    pairs[pre] = (pre, name)
    return pairs


def _sizes(model) -> dict[str, int]:
    """Elements per tensor (batch 1) from ONNX shape inference; unknown sizes are left out."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    out = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim]
        out[vi.name] = int(np.prod(dims)) if dims else 1
    return out


def _chunks(pairs: dict[str, tuple[str, str]], sizes: dict[str, int], budget: int) -> list[list[str]]:
    """Activation names grouped so each group's tensors (before and after) fit ``budget`` bytes."""
    known = [v for v in sizes.values() if v > 0]
    fallback = max(known) if known else 1 << 20
    groups: list[list[str]] = [[]]
    used = 0
    for name in sorted(pairs):
        need = 2 * 4 * sizes.get(name, fallback)
        if groups[-1] and used + need > budget:
            groups.append([])
            used = 0
        groups[-1].append(name)
        used += need
    return [g for g in groups if g]


def activation_sqnr(qdq: Path, inputs: Iterable[Any], input_names: list[str], workdir: Path,
                    activation_of: Callable[[str], Callable[[np.ndarray], np.ndarray]] | None = None,
                    budget: int = CHUNK_BYTES) -> dict[str, float]:
    """SQNR (dB) of every quantized activation of a QDQ model over ``inputs``, streamed: per image, per group of
    tensors, accumulating the signal and noise energies."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization.qdq_loss_debug import modify_model_output_intermediate_tensors

    augmented = workdir / "qdq_debug.onnx"
    modify_model_output_intermediate_tensors(str(qdq), str(augmented))
    saved = [o.name[: -len(SAVED)] for o in onnx.load(str(augmented), load_external_data=False).graph.output
             if o.name.endswith(SAVED)]
    pairs = _pairs(saved)
    chunks = _chunks(pairs, _sizes(onnx.load(str(qdq))), budget)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # as qdq_loss_debug runs it
    options.enable_cpu_mem_arena = False  # give each group's tensors back before the next group
    options.enable_mem_pattern = False
    options.log_severity_level = 3
    session = ort.InferenceSession(str(augmented), sess_options=options, providers=["CPUExecutionProvider"])
    signal = dict.fromkeys(pairs, 0.0)
    noise = dict.fromkeys(pairs, 0.0)
    for x in inputs:
        for group in chunks:
            names = [n + SAVED for act in group for n in pairs[act]]
            values = session.run(names, as_feed(input_names, x))
            for i, act in enumerate(group):
                before, after = values[2 * i].astype(np.float64), values[2 * i + 1].astype(np.float64)
                if activation_of is not None:
                    before = activation_of(act)(before)
                signal[act] += float(np.dot(before, before))
                noise[act] += float(np.dot(before - after, before - after))
            del values
    eps = np.finfo(np.float64).eps
    return {a: float(10 * np.log10(max(signal[a], eps * eps) / max(noise[a], eps * eps))) for a in pairs}


def rank_nodes(prepared_fp32: Path, qdq: Path, inputs: Iterable[Any], input_names: list[str],
               workdir: Path) -> list[tuple[str, float, list[str]]]:
    """(layer node name, SQNR dB, node names to keep in float with it), worst (lowest SQNR) first."""
    import onnx

    graph = onnx.load(str(prepared_fp32)).graph
    producer = {out: node for node in graph.node for out in node.output}
    qdq_producer = {out: node for node in onnx.load(str(qdq)).graph.node for out in node.output}

    def activation_of(tensor: str):
        # The noise this tensor's own quantization adds (local), rather than the error accumulated from
        # upstream layers, which would blame the last layers. When the quantizer fused a Relu/Clip into
        # the layer before it (the QDQ graph has no such node, and the quantized range starts at the
        # activation's floor), the tensor before quantization is the layer's pre-activation output: the
        # activation is applied to it first, or the "noise" would be the whole negative half (the shipped
        # U-Net's layers all scored 1.8-3.2 dB that way, against 38.8 dB for the model's output).
        return _fused_activation(producer.get(tensor), qdq_producer.get(tensor), graph)

    sqnr_by_tensor = activation_sqnr(qdq, inputs, input_names, workdir, activation_of)
    ranked: dict[str, float] = {}
    members: dict[str, list[str]] = {}
    for tensor, sqnr in sqnr_by_tensor.items():
        node = producer.get(tensor)
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


def recurrent_layers(prepared_fp32: Path) -> list[str]:
    """LSTM nodes, which INT8 reaches by dynamic quantization (:func:`~.ort_quantize.quantize_recurrent`): a
    recurrent cell carries its error across every step of the sequence, so keeping it in float is an early rung."""
    import onnx

    return [n.name for n in onnx.load(str(prepared_fp32)).graph.node if n.op_type == "LSTM" and n.name]


def exclusion_ladder(ranked: list[tuple[str, float, list[str]]], head: list[str] | None = None,
                     first: list[str] | None = None, recurrent: list[str] | None = None) -> list[list[str]]:
    """Node names to keep in float, growing: the output head alone, then with the recurrent cells, then with the
    first layer, then those plus the worst 1, 2, 4, ... layers by SQNR (each with its fused activation), up to half
    the layers."""
    base: list[str] = []
    ladder: list[list[str]] = []
    for rung in (head or [], recurrent or [], first or []):
        extra = [n for n in rung if n not in base]
        if extra:
            base += extra
            ladder.append(list(base))
    rest = [r for r in ranked if r[0] not in base]
    k = 1
    while k <= max(1, len(ranked) // 2):
        ladder.append(base + [n for _, _, group in rest[:k] for n in group if n not in base])
        k *= 2
    return ladder
