"""An ensemble baked into one ONNX graph: every member and every flip in a single ONNX Runtime session.

The unbaked ensemble (:mod:`edgemed.ensemble.runtime`) runs members x views engine calls per frame and combines in
numpy. Baked, the frame's views are stacked on the batch axis (a flip is a ``Slice`` with step -1), each member's
FP32 graph runs once on the stack (its names prefixed, ``onnx.compose.add_prefix``), its outputs are split back per
view, segmentation maps flipped back, read as probabilities where the combination says so (``Softmax``; a 1-channel
sigmoid map becomes [1-p, p]) and summed with the same per-(member, view) weights (:mod:`edgemed.tasks.combine`).
One session, one call, no per-view copies in Python: what nnU-Net's users pay 40x for, at the cost of the members'
FP32 weights in one file. Whether it is faster on this device is measured when the ensemble is made, and recorded
(:mod:`edgemed.converters.ensemble_build`); the runtime serves it only where it won and every member would serve its
FP32 ONNX artifact anyway (the graph is made of exactly those), so the verdicts it rests on are the members' own.

Bakeable: mean-logits or mean-probabilities (a vote's argmax counting stays in numpy), members of one input tensor
(same preprocessing, NCHW, a dynamic batch axis) with an ONNX Runtime FP32 artifact. Anything else is said in one
line and the ensemble runs unbaked.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgemed.ensemble.files import BAKED_FILE, BAKED_OUTPUT
from edgemed.tasks import task_named

__all__ = ["BAKED_FILE", "BAKED_OUTPUT", "bake", "why_not"]
_FLIP_AXES = {"none": (), "hflip": (3,), "vflip": (2,), "hvflip": (2, 3)}  # NCHW
_INT64_MIN = np.iinfo(np.int64).min


def why_not(members: Sequence[Any], combine: str) -> str | None:
    """Why these member bundles cannot be baked, or None."""
    if combine not in ("mean-logits", "mean-probabilities"):
        return f"--combine {combine} counts votes in numpy"
    first = members[0].manifest
    for b in members:
        m = b.manifest
        art = m.artifact("onnxruntime", "fp32")
        if art is None:
            return f"{b.path.name} has no ONNX Runtime FP32 artifact"
        if m.features or m.explain is not None:
            return f"{b.path.name} has inputs or outputs beside the main ones"
        if m.input.layout != "NCHW" or not m.input.dynamic_batch:
            batch = "a dynamic" if m.input.dynamic_batch else "a fixed"
            return (f"{b.path.name}'s input is {m.input.layout} with {batch} batch axis (baking stacks the views on a "
                    "dynamic NCHW batch)")
        if not m.input.same_tensor(first.input) or m.preprocess != first.preprocess:
            return f"{b.path.name} preprocesses the frame differently from {members[0].path.name}"
        if m.output.kind not in ("logits", "probabilities"):
            return f"{b.path.name} outputs {m.output.kind}"
    return None


def bake(members: Sequence[Any], weights: Sequence[float], views: Sequence[str], task: str, combine: str,
         target: Path) -> None:
    """Write the baked graph: input named as the members' own, output ``combined`` ((N, C) or (N, C, h, w), logits
    for mean-logits, probabilities otherwise). ``weights``: per (member, view), member-major, as the runtime's."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes: list = []
    inits: list = []

    def const(name: str, value: Any, dtype=np.int64) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def flip(x: str, view: str, out: str, spatial_from: int) -> str:
        """``x`` flipped on the view's axes (2 = height, 3 = width for NCHW; counted from ``spatial_from``)."""
        axes = [spatial_from + a - 2 for a in _FLIP_AXES[view]]
        if not axes:
            return x
        k = len(axes)
        ends = [_INT64_MIN] * k  # a negative step runs to the front: every element, reversed
        nodes.append(helper.make_node("Slice", [x, const(f"{out}_starts", [-1] * k), const(f"{out}_ends", ends),
                                                const(f"{out}_axes", axes), const(f"{out}_steps", [-1] * k)], [out]))
        return out

    first = onnx.load(str(members[0].file(members[0].manifest.artifact("onnxruntime", "fp32").file)))
    x_info = next(i for i in first.graph.input if i.name == members[0].manifest.input.name)
    stacked = [flip(x_info.name, v, f"ens.view_{v}", 2) for v in views]  # the members' own input name
    nodes.append(helper.make_node("Concat", stacked, ["ens.views"], axis=0) if len(stacked) > 1
                 else helper.make_node("Identity", stacked, ["ens.views"]))
    terms = []
    opset = 0
    for i, b in enumerate(members):
        m = b.manifest
        model = onnx.load(str(b.file(m.artifact("onnxruntime", "fp32").file)))
        opset = max(opset, next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")))
        prefix = f"m{i}_"
        model = onnx.compose.add_prefix(model, prefix)
        graph = model.graph
        nodes.append(helper.make_node("Identity", ["ens.views"], [prefix + m.input.name]))
        nodes.extend(graph.node)
        inits.extend(graph.initializer)
        out = prefix + m.output.names[0]
        rest = [int(d) for d in m.output.shape[1:]]
        own = f"ens.m{i}."  # this module's own tensor names: never one of a member's, which all start with m{i}_
        nodes.append(helper.make_node("Reshape", [out, const(f"{own}per_view_shape", [len(views), -1, *rest])],
                                      [f"{own}per_view"]))
        for j, view in enumerate(views):
            y = f"{own}v{j}"
            nodes.append(helper.make_node("Gather", [f"{own}per_view", const(f"{y}_index", j)], [y], axis=0))
            if task_named(task).spatial:  # maps: a flipped view is flipped back
                y = flip(y, view, f"{y}_back", 2)
            if combine == "mean-probabilities" and m.output.kind == "logits":
                y = _probabilities(nodes, y, rest[0], f"{own}v{j}_p", const)
            w = f"{own}v{j}_w"
            nodes.append(helper.make_node("Mul", [y, const(f"{w}_value", weights[i * len(views) + j], np.float32)],
                                          [w]))
            terms.append(w)
    nodes.append(helper.make_node("Sum", terms, [BAKED_OUTPUT]))
    out_shape = ["batch", *members[0].manifest.output.shape[1:]]
    if combine == "mean-probabilities" and members[0].manifest.output.shape[1] == 1:
        out_shape[1] = 2  # a 1-channel sigmoid map read as [1-p, p]
    graph = helper.make_graph(nodes, "edgemed_ensemble", [x_info],
                              [helper.make_tensor_value_info(BAKED_OUTPUT, TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=first.ir_version,
                              producer_name="edgemed ensemble")
    onnx.checker.check_model(model)
    onnx.save_model(model, str(target), save_as_external_data=False)


def _probabilities(nodes: list, y: str, channels: int, out: str, const) -> str:
    """Class probabilities along axis 1, as :func:`edgemed.postprocess.class_probabilities` reads logits: softmax,
    or for one channel the sigmoid as [1-p, p]."""
    from onnx import helper

    if channels > 1:
        nodes.append(helper.make_node("Softmax", [y], [out], axis=1))
        return out
    nodes.append(helper.make_node("Sigmoid", [y], [f"{out}_p"]))
    nodes.append(helper.make_node("Sub", [const(f"{out}_one", 1.0, np.float32), f"{out}_p"], [f"{out}_q"]))
    nodes.append(helper.make_node("Concat", [f"{out}_q", f"{out}_p"], [out], axis=1))
    return out
