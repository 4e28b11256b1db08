"""What the exported graph says about the model, checked before anything is built from it.

Three mistakes convert used to take silently, each caught here from the ONNX graph itself:

- a model with several outputs (only the first was ever used): the user names one with ``--output``;
- a model frozen in training mode (a TorchScript trace taken before ``.eval()``): BatchNormalization
  with ``training_mode=1`` normalises each frame with the batch's own statistics, and Dropout in
  training mode zeroes random activations, so every answer depends on the rest of the batch or on
  chance;
- a model that already ends in Softmax or Sigmoid: its outputs are probabilities, and applying the
  softmax again flattens every answer towards uniform (0.249/0.371/0.381 became 0.306/0.345/0.349).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgemed.errors import ConversionError, OptionError

# Ops that pass values through unchanged in meaning, between a terminal activation and the output.
_TRANSPARENT = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Cast"}


@dataclass(frozen=True)
class GraphFacts:
    output: str | None  # the output the bundle uses (None: a detector reads them all)
    terminal: str | None  # "Softmax" / "Sigmoid" when the output comes straight from one


def check_graph(onnx_path: Path, wanted_output: str | None, several: bool = False) -> GraphFacts:
    """The output to read and how the graph ends; ``several``: a detector, which reads all its outputs."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    outputs = [o.name for o in graph.output]
    if several:
        if wanted_output is not None:
            raise OptionError("--output does not apply to detectors, which read all their outputs",
                              "drop --output; name the layout with --detection-layout if it is not recognised")
        _refuse_training_mode(graph)
        return GraphFacts(None, None)
    if wanted_output is not None:
        if wanted_output not in outputs:
            raise OptionError(f"--output {wanted_output!r} is not an output of the model (it has "
                              f"{', '.join(outputs)})", "name one of them")
        output = wanted_output
    elif len(outputs) > 1:
        raise OptionError(f"the model has {len(outputs)} outputs ({', '.join(outputs)}); edgemed would use only "
                          "the first", "choose the one that holds the class scores or masks with --output NAME")
    else:
        output = outputs[0]
    _refuse_training_mode(graph)
    return GraphFacts(output, _terminal_activation(graph, output))


def _refuse_training_mode(graph) -> None:
    import onnx

    constants = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:  # exporters also write constants as Constant nodes
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
    for node in graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "BatchNormalization" and attrs.get("training_mode", 0) == 1:
            raise ConversionError(f"BatchNormalization node {node.name or node.output[0]!r} is in training mode: each "
                                  "result would depend on the rest of the batch",
                                  "call model.eval() before tracing/saving the model, then convert again")
        if node.op_type == "Dropout" and len(node.input) >= 3 and node.input[2] in constants \
                and bool(np.asarray(constants[node.input[2]]).item()):
            raise ConversionError(f"Dropout node {node.name or node.output[0]!r} is in training mode: results would "
                                  "be random", "call model.eval() before tracing/saving the model, then convert again")


def _terminal_activation(graph, output: str) -> str | None:
    producer = {out: node for node in graph.node for out in node.output}
    node = producer.get(output)
    while node is not None and node.op_type in _TRANSPARENT and node.input:
        node = producer.get(node.input[0])
    if node is not None and node.op_type in ("Softmax", "Sigmoid"):
        return node.op_type
    return None


class OutputEvidence:
    """What the outputs on real probes say about their kind, gathered case by case: are they non-negative and
    summing to 1 over the class axis on every probe, and within [0, 1]?"""

    def __init__(self) -> None:
        self.cases, self.sums_to_one, self.in_unit = 0, True, True

    def add(self, output: np.ndarray) -> None:
        x = np.asarray(output)
        self.cases += 1
        self.sums_to_one = self.sums_to_one and x.ndim > 1 and x.shape[1] > 1 and bool(
            np.all(x >= -1e-6) and np.allclose(x.sum(axis=1), 1.0, atol=1e-4))
        self.in_unit = self.in_unit and bool(np.all((x >= -1e-6) & (x <= 1 + 1e-6)))


def output_kind(facts: GraphFacts, evidence: OutputEvidence, task: str, asked: str | None) -> tuple[str, str]:
    """(kind, why): what the model's outputs are, from the graph and the outputs on real probes.

    An explicit ``--output-kind`` that contradicts the model is refused rather than obeyed: applying
    softmax to probabilities, or taking raw logits as probabilities, gives wrong numbers silently.
    """
    sums_to_one = evidence.cases > 0 and evidence.sums_to_one
    in_unit = evidence.cases > 0 and evidence.in_unit
    if facts.terminal == "Softmax" or (facts.terminal is None and sums_to_one):
        found, why = "probabilities", (f"the model ends in {facts.terminal}" if facts.terminal else
                                       "its outputs are non-negative and sum to 1 on every probe image")
    elif facts.terminal == "Sigmoid" and in_unit:
        found, why = "probabilities", "the model ends in Sigmoid"
    else:
        found, why = "logits", "no terminal Softmax/Sigmoid, and the outputs are not probabilities"
    if asked is not None and asked != found:
        raise OptionError(f"--output-kind {asked} contradicts the model: {why}",
                          f"drop --output-kind (edgemed detects it) or pass --output-kind {found}")
    return found, why
