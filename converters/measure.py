"""Measuring a candidate artifact: one engine session, every case streamed from disk, one verdict.

The runners of Polygraphy's split (build elsewhere, run here): each candidate is opened once, and that one
session answers the tuning cases (the fallback's prediction), the verdict cases (the gate, with bounds), the
labelled cases (against ground truth) and the bundle's reference probes (what ``verify`` holds a device to).
Cases come from :class:`~edgemed.converters.cases.CaseStore` one at a time, so memory stays flat however
many cases the user gives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgemed.gate.drift import start_comparison
from edgemed.gate.verdict import Budget, Population, Prediction, judge_artifact, predict
from edgemed.manifest import ClinicalRecord, DriftRecord
from edgemed.measures.clinical import clinical_record
from edgemed.measures.comparison import Comparison
from edgemed.output_reader import OutputReader
from edgemed.runtimes import create_engine
from edgemed.tasks import task_named

from .cases import CaseStore, as_feed

PROBE_COUNT = 8  # verdict cases stored in the bundle as reference probes


@dataclass
class Labelled:
    """Labelled validation cases (--val/--val-labels): inputs and FP32 outputs on disk, ground truth, the margin."""

    cases: CaseStore
    truth: list
    margin: float
    source: str


def labelled_cases(images, labels, task: str, class_names, pre, reference: Callable, folder, margin: float,
                   source) -> Labelled:
    """Labelled validation cases for the clinical gate, for convert and certify alike: each image preprocessed
    once, its tensor and the FP32 reference's output kept on disk, detector ground truth mapped onto the model's
    input (where the detections are compared; IoU is the same in both)."""
    from edgemed.datasets import load_labels
    from edgemed.errors import OptionError

    truth = load_labels(labels, images, task, class_names)
    if truth is None:
        raise OptionError(f"--val {source}: no labels found", "pass --val-labels (CSV file,label, a mask folder, or "
                          "an .npz with labels/masks)")
    store = CaseStore(folder, "labelled")
    geometry = []
    for name, image in images:
        prepared = pre(image)
        store.add(name, prepared.tensor)
        store.add_output(reference(prepared.tensor))
        geometry.append(getattr(prepared, "geometry", None))
    truth = task_named(task).truth_in_input(truth, geometry)
    return Labelled(store, truth, margin, f"{len(images)} labelled {images.unit} from {source}")


@dataclass
class Measured:
    """What one session of a candidate said: its verdict, its clinical record, its outputs on the probes."""

    drift: DriftRecord
    clinical: ClinicalRecord | None
    probes: Any


@dataclass
class Gauge:
    """Everything a candidate is measured against: the cases with the FP32 reference's outputs, how outputs
    are read and compared, the budget, the population's margins."""

    tuning: CaseStore
    verdict: CaseStore
    reader: OutputReader
    task: str
    output_kind: str
    labels: list[str]
    budget: Budget
    population: Population
    tolerance: float  # FP32 round-off allowed for parity
    labelled: Labelled | None = None
    reference_by: str = ""
    unit: str = "cases"  # what a case is called in the record (images, beats)
    notes: list[str] = field(default_factory=list)
    saliency: Any = None  # --explain: FP32's maps on the verdict cases (converters.explain.SaliencyReference)
    input_names: list[str] = field(default_factory=list)  # the main input first, then feature inputs (cases' order)

    def run(self, engine: Any) -> Callable[[Any], Any]:
        names = self.input_names or [engine.inputs[0].name]
        return lambda x: self.reader.one(engine.infer(as_feed(names, x)))

    def compare(self, store: CaseStore, run: Callable[[np.ndarray], Any], keep: int = 0,
                kept: list | None = None) -> Comparison:
        comparison = start_comparison(self.task, self.output_kind, self.labels)
        for i, (reference, x) in enumerate(zip(store.outputs(), store.inputs())):
            out = run(x)
            if i < keep and kept is not None:
                kept.append(out)
            comparison.add(reference, out)
        return comparison.finish()

    def tuning_comparison(self, engine: Any) -> Comparison:
        return self.compare(self.tuning, self.run(engine))

    def prediction(self, comparison: Comparison, cases: int) -> tuple[Prediction, dict]:
        """The verdict a candidate would get on ``cases`` verdict cases, predicted from its tuning comparison."""
        prediction = predict(comparison, self.budget, self.population, cases)
        figures = {k: round(v, 6) for k, v in prediction.bounds.items()}
        figures |= {f"tuning {k}": round(v, 6) for k, v in comparison.values.items()
                    if k in ("agreement", "class_agreement", "lesion_agreement", "case_dice", "box_iou")}
        return prediction, figures | {"meets_budget": prediction.meets}

    def measure(self, engine: Any, precision: str) -> Measured:
        """The verdict on every verdict case (FP32 artifacts: parity first), ground truth, and the probe outputs."""
        run = self.run(engine)
        probes: list = []
        comparison = self.compare(self.verdict, run, keep=PROBE_COUNT, kept=probes)
        drift = judge_artifact(comparison, self.budget, precision, self.tolerance, self.population,
                               f"{comparison.cases} verdict {self.unit}",
                               self.reference_by, device=engine.device, computed_in=engine.computed_in)
        if self.saliency is not None:  # did the candidate move where the model looks? (edgemed.gate.saliency_drift)
            from edgemed.gate.saliency_drift import with_saliency

            drift = with_saliency(drift, self.saliency.judge(engine, self.verdict))
        clinical = None
        if self.labelled is not None:
            outputs = _outputs(self.labelled.cases.inputs(), run)
            truth = self.labelled.truth
            tests = task_named(self.task).clinical_tests(truth, self.labelled.cases.outputs(), outputs,
                                                         self.output_kind, self.labels, self.labelled.margin)
            clinical = clinical_record(tests, self.labelled.margin, len(truth), self.labelled.source)
        return Measured(drift, clinical, self.reader.collect(probes) if probes else probes)


    def scorer(self, metric: str) -> Callable[[Iterable[tuple[int, dict]]], float]:
        """For NNCF's accuracy control: tuning cases given as (index, raw outputs by name), scored by ``metric``
        against the FP32 reference's outputs on the same cases, streaming (FP32 scores 1.0)."""
        def score(cases: Iterable[tuple[int, dict]]) -> float:
            comparison = start_comparison(self.task, self.output_kind, self.labels)
            for index, outputs in cases:
                comparison.add(self.tuning.output(index), self.reader.one(outputs))
            return comparison.finish().values[metric]

        return score


def _outputs(inputs: Iterator[np.ndarray], run: Callable[[np.ndarray], Any]) -> Iterator[Any]:
    for x in inputs:
        yield run(x)


def open_candidate(backend: str, path: Any, precision: str, **options: Any):
    """The candidate's one engine (CPU: where convert runs and measures)."""
    return create_engine(backend, path, device="cpu", precision=precision, **options)
