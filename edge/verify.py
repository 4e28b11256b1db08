"""``edgemed verify``: does this device reproduce what the gate measured?

A bundle carries its reference probes and, per artifact, the outputs that artifact gave on them
at conversion. On the device each artifact must give the same answers and outputs within its own
conversion-time distance from FP32 (:func:`edgemed.gate.judge_reproduction`); then the verdict
the gate took on hundreds of cases at conversion holds here too. Bundles written before
per-artifact outputs were stored are checked against the FP32 outputs by the artifact's own rule.
"""

from __future__ import annotations

import numpy as np

from .drift import compare
from .gate import judge_reproduction, recheck
from .manifest import DriftRecord


def verify_artifact(pipe) -> DriftRecord:
    reference = pipe.bundle.reference()
    outputs = np.concatenate([pipe.engine.infer({pipe.input_name: x[None]})[pipe.output_name]
                              for x in reference["inputs"]])
    own = reference.get(f"artifact:{pipe.artifact.file}")
    where = f"the bundle's {len(reference['inputs'])} reference probes"
    if own is not None:
        return judge_reproduction(compare(own, outputs, pipe.task, pipe.output_kind, pipe.labels), pipe.artifact.drift,
                                  where)
    return recheck(pipe.artifact.drift, compare(reference["outputs"], outputs, pipe.task, pipe.output_kind,
                                                pipe.labels), pipe.task, where)
