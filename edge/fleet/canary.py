"""A new version proves itself on this device before it serves a patient.

Three checks, all with the gate's own rules (no second drift rule lives here):

1. *Self-verification*, as ``edgemed verify``: the artifact that will serve gives, on this device, the
   answers it gave at conversion on the bundle's reference probes (:func:`edgemed.gate.verify.verify_artifact`).
2. *The device's own reference frames* (stored in the device folder, e.g. a phantom scanned at install)
   through that artifact, judged against the new bundle's FP32 artifact on the same frames by the rule the
   artifact was gated with (:func:`edgemed.gate.verdict.recheck`). A handful of frames rarely *certifies* a budget
   such as 99.9% agreement: "uncertified" is reported and accepted, "failed" (the budget is surely missed)
   refuses the version. Outputs must be finite.
3. *How much the answers changed* from the previous version on the same frames: reported (agreement,
   lesion agreement, Dice with their bounds), not judged: a new model is expected to change some answers,
   and the person deploying it decides how many is acceptable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import load
from ..datasets import ImageSet
from ..errors import EdgemedError
from ..gate.drift import compare, population_margins
from ..gate.probes import engine_outputs
from ..gate.verdict import describe_estimate, estimates, recheck, summary
from ..gate.verify import verify_artifact

CHANGE_METRICS = ("agreement", "lesion_agreement", "case_dice", "recall", "precision")
MAX_FRAMES = 256


@dataclass
class CanaryReport:
    version: str
    passed: bool = False
    reason: str | None = None
    lines: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def refuse(self, reason: str) -> CanaryReport:
        self.passed, self.reason = False, reason
        self.lines.append(f"REFUSED: {reason}")
        return self


def read_frames(path: Path | None) -> list[np.ndarray]:
    """The device's stored reference frames (a folder of images or an .npz), at most MAX_FRAMES."""
    if path is None or not Path(path).exists():
        return []
    frames = [frame for _, frame in ImageSet.open(path).subset(MAX_FRAMES)]
    return frames


def _tensors(pipe, frames: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([pipe.prepare(f).tensor for f in frames])


def _finite(outputs) -> bool:
    if isinstance(outputs, np.ndarray):
        return bool(np.isfinite(outputs).all())
    return all(np.isfinite(d.boxes).all() and np.isfinite(d.scores).all() for d in outputs)


def run_canary(slot: Path, version: str, frames: list[np.ndarray], previous: Path | None = None,
               device: str = "cpu", backend: str | None = None, precision: str | None = None) -> CanaryReport:
    """Judge the bundle in ``slot`` on this device, on the artifact ``load`` selects with the same device,
    backend and precision as the runtime will use; never raises for a failing check (the report says why)."""
    report = CanaryReport(version)
    try:
        pipe = load(slot, device=device, backend=backend, precision=precision)
    except EdgemedError as exc:
        return report.refuse(f"it does not load on this device ({exc})")
    with pipe:
        art = pipe.artifact
        report.lines.append(f"serves {art.file} ({art.key}, {art.verdict} at conversion)")
        own = verify_artifact(pipe)
        report.figures["self_verification"] = own.verdict
        report.lines.append(f"self-verification on the bundle's reference probes: {summary(own)}")
        if not own.passed:
            return report.refuse(f"self-verification failed: {summary(own)}")
        if not frames:
            report.lines.append("no reference frames stored on this device (pass --canary DATA once): "
                                "checked on the bundle's own probes only")
            report.passed = True
            return report
        try:
            x = _tensors(pipe, frames)
            outputs = engine_outputs(pipe, {"inputs": x})
            fp32_art = next((a for a in pipe.bundle.artifacts if a.key == "onnxruntime/fp32"), None)
            if fp32_art is None or fp32_art.key == art.key:
                reference = outputs
            else:
                with load(slot, backend="onnxruntime", precision="fp32", accept=_accept(fp32_art)) as fp32:
                    reference = engine_outputs(fp32, {"inputs": x})
        except EdgemedError as exc:
            return report.refuse(f"the device's reference frames do not run through it ({exc})")
        if not _finite(outputs):
            return report.refuse(f"non-finite outputs on the device's {len(frames)} reference frames")
        if reference is outputs:
            report.lines.append(f"on this device's {len(frames)} reference frames: the serving artifact is the FP32 "
                                "reference itself (outputs finite; nothing to compare it with)")
            if previous is not None:
                report.lines.append(_change(previous, pipe, frames, outputs, device, report, backend, precision))
            report.passed = True
            return report
        comparison = compare(reference, outputs, pipe.task, pipe.output_kind, pipe.labels)
        population = population_margins(reference, pipe.task, pipe.output_kind) if pipe.task_rules.has_margins else None
        where = f"this device's {len(frames)} reference frames"
        judged = recheck(art.drift, comparison, pipe.task, where, population)
        report.figures["device_frames"] = judged.verdict
        report.lines.append(f"against the new FP32 reference on {where}: {summary(judged)}")
        if judged.verdict == "failed":
            return report.refuse(f"on {where} against its FP32 reference: {summary(judged)}")
        if judged.verdict == "uncertified":
            report.lines.append(f"  ({len(frames)} frames cannot certify the budget {judged.budget}; none of it is "
                                "surely missed, which is what refuses)")
        if previous is not None:
            report.lines.append(_change(previous, pipe, frames, outputs, device, report, backend, precision))
    report.passed = True
    return report


def _accept(artifact) -> str | None:
    return None if artifact.verdict == "passed" else artifact.verdict


def _open_previous(previous: Path, device: str, backend: str | None, precision: str | None):
    """The previous version as the runtime served it: with the same choice if it has such an artifact."""
    try:
        return load(previous, device=device, backend=backend, precision=precision)
    except EdgemedError:
        return load(previous, device=device)


def _change(previous: Path, pipe, frames: list[np.ndarray], outputs, device: str, report: CanaryReport,
            backend: str | None = None, precision: str | None = None) -> str:
    """How the previous version's answers on the same frames compare with the new one's (reported only)."""
    try:
        with _open_previous(previous, device, backend, precision) as old:
            if (old.task, old.output_kind, old.labels) != (pipe.task, pipe.output_kind, pipe.labels) or \
                    not old.bundle.manifest.input.same_tensor(pipe.bundle.manifest.input):
                return "answers changed: not comparable (the task, input, output kind or labels changed)"
            before = engine_outputs(old, {"inputs": _tensors(old, frames)})
            change = compare(before, outputs, pipe.task, pipe.output_kind, pipe.labels)
    except EdgemedError as exc:
        return f"answers changed: not comparable ({exc.problem})"
    figures = estimates(change)
    parts = [describe_estimate(k, figures[k]) for k in CHANGE_METRICS if k in figures]
    report.figures["change_from_previous"] = {k: figures[k].value for k in CHANGE_METRICS if k in figures}
    return f"answers changed from the previous version on the same {len(frames)} frames: {'; '.join(parts)}"
