"""The combination gated: the ensemble as it serves (each member's selected artifact) against the FP32 combination
(each member's ONNX Runtime FP32 artifact, combined the same way), on the same frames, by the gate's one rule for
an artifact (:func:`edgemed.gate.verdict.judge_artifact`: parity when every served member computes in FP32, else the
task's default budget with its bounds). Each member keeps its own verdicts; this one is about the combination.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..gate.drift import compare, population_margins
from ..gate.verdict import default_budget, judge_artifact, parity_tolerance
from .manifest import EnsembleGate
from .runtime import load_ensemble

REFERENCE_BY = "each member's ONNX Runtime FP32 artifact, combined the same way"


def judge_combination(path: str | Path, frames, device: str = "cpu", evaluated_on: str = "",
                      log: Callable[[str], None] = lambda s: None, backend: str | None = None,
                      precision: str | None = None, accept: str | None = None) -> EnsembleGate:
    """``frames``: (name, image) pairs (an :class:`edgemed.datasets.ImageSet`). ``backend``/``precision``/``accept``
    choose what serves as ``edgemed.load`` does (default: the device's usual selection, which ``make_ensemble``
    records)."""
    with load_ensemble(path, device, backend, precision, accept=accept) as served, \
            load_ensemble(path, backend="onnxruntime", precision="fp32", form="members") as ref:
        cands, refs, kind = [], [], "logits"
        for _, frame in frames:
            c, kind = served.combined_output(*served.member_outputs(frame))
            r, _ = ref.combined_output(*ref.member_outputs(frame))
            cands.append(c)
            refs.append(r)
        keys = [p.artifact.key for p in served.members]
        computed = {p.engine.computed_in for p in served.members}
        precision = "fp32" if {p.artifact.precision for p in served.members} == {"fp32"} else "reduced"
    task = served.task
    comparison = compare(refs, cands, task, kind, served.labels)  # case by case, for every task
    stacked = np.stack(refs)
    drift = judge_artifact(comparison, default_budget(task), precision, parity_tolerance(stacked),
                           population_margins(refs, task, kind), evaluated_on or f"{len(refs)} frames",
                           REFERENCE_BY, device=device,
                           computed_in=computed.pop() if len(computed) == 1 else "mixed")
    log(f"combination of {', '.join(keys)} on {device}: {drift.verdict} ({drift.budget}, {drift.cases} cases)")
    return EnsembleGate(served=keys, device=device, drift=drift)
