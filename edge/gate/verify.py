"""``edgemed verify``: does this device reproduce what the gate measured?

A bundle carries its reference probes and, per artifact, the outputs that artifact gave on them
at conversion. On the device each artifact must give the same answers and outputs within its own
conversion-time distance from FP32 (:func:`edgemed.gate.verdict.judge_reproduction`); then the verdict
the gate took on hundreds of cases at conversion holds here too. Bundles written before
per-artifact outputs were stored are checked against the FP32 outputs by the artifact's own rule.
"""

from __future__ import annotations

from ..manifest import DriftRecord
from .drift import compare
from .probes import engine_outputs, unpack
from .verdict import judge_reproduction, recheck


def verify_artifact(pipe) -> DriftRecord:
    reference = pipe.bundle.reference()
    cases = len(reference["inputs"])
    outputs = engine_outputs(pipe, reference)
    own = unpack(reference, f"artifact:{pipe.artifact.file}", pipe.task, cases)
    where = f"the bundle's {cases} reference probes"
    if own is not None:
        return judge_reproduction(compare(own, outputs, pipe.task, pipe.output_kind, pipe.labels), pipe.artifact.drift,
                                  where)
    fp32 = unpack(reference, "outputs", pipe.task, cases)
    return recheck(pipe.artifact.drift, compare(fp32, outputs, pipe.task, pipe.output_kind, pipe.labels), pipe.task,
                   where)
