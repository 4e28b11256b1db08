"""Classification: one label per input (images and ECG beats), probabilities over the bundle's labels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, OptionError
from ..manifest import PairedTest, Postprocess
from ..measures import truth
from ..measures.clinical import paired_test, stacked_scores
from ..measures.comparison import Comparison, output_mismatch
from ..measures.margins import Margins, decision_scores, margin_shifts, spaced_population
from ..postprocess import class_probabilities
from ..task_names import TASK_FACTS
from .base import (
    SHOWN,
    ReportFrame,
    ServedTensor,
    activation_of,
    checked_labels,
    compare_cases,
    interval_text,
    timings_ms,
)


@dataclass
class ClassificationResult:
    label: str
    index: int
    probabilities: np.ndarray
    labels: list[str]
    timings: dict[str, float] = field(default_factory=dict)
    # bundles converted with --explain: the map, made when first read (edgemed.explain.saliency says why)
    explanation: Any = field(default=None, repr=False, compare=False)

    @property
    def saliency(self) -> np.ndarray | None:
        """(H, W) float32 in [0, 1] at the frame's own size: where the model looked for the predicted class (a
        class activation map); None for a bundle converted without ``--explain``."""
        return None if self.explanation is None else self.explanation()

    def to_json(self) -> dict:
        return {
            "task": Classification.name,
            "label": self.label,
            "index": int(self.index),
            "probabilities": {name: round(float(p), 6) for name, p in zip(self.labels, self.probabilities)},
            "timings_ms": timings_ms(self.timings),
        }


class Classification:
    name = "classification"
    plural = "classifiers"  # what people call models of this task, in messages
    # MLPerf's "high accuracy" bar (99.9% of FP32's answers), and every class must keep FP32's calls: overall
    # agreement hides the classes that matter (a model keeps 99.9% by getting N beats right while flipping S beats;
    # a chest X-ray INT8 kept 99.55% of 1,783 verdict images while flipping 3.9% of the class FP32 calls normal, and
    # flipped 1.6% of a test set holding that class 1.4 times as often). So of the cases FP32 calls S, at least 99%
    # must stay S, and so for every class (the worst class is the one judged); that term holds for any class mix.
    default_budget = "agreement>=0.999,class_agreement>=0.99"
    drift_metrics = ("agreement", "class_agreement", "max_prob_diff", "max_abs_diff", "mean_abs_diff")
    ragged_outputs = False
    spatial = False
    has_margins = True
    ensemble_refusal = ""
    option_group = None
    other_input_kinds = ("signal",)  # beat classifiers
    takes_features = True
    explainable = TASK_FACTS[name].explainable
    several_outputs = False
    conversion_steps = None
    output_format = "class probabilities"
    binary_case_scores = True
    case_figure = "agree"
    shipped_samples, shipped_calibration, shipped_verdict = "breastmnist", "calibration/breastmnist_train.npz", None
    shipped_truth = "breastmnist/labels.csv"

    def finish(self, outputs, pipe, prepared) -> ClassificationResult:
        result = self.combined_result(outputs[pipe.output_name], pipe.output_kind, prepared.geometry, pipe.labels)
        if pipe.explainer is not None:
            result.explanation = pipe.explainer.pending(outputs, result.index, prepared.geometry)
        return result

    def combine(self, outputs, kinds, weights, combine) -> tuple[np.ndarray, str]:
        from . import combine as comb

        return comb.classification([o[0] for o in outputs], kinds, weights, combine)[None], "probabilities"

    def combined_result(self, output, kind: str, geometry, labels: list[str]) -> ClassificationResult:
        """The result of one (1, C) output row (an engine's, an ensemble's combination, a served answer)."""
        probs = class_probabilities(output[0], kind)
        index = int(probs.argmax())
        return ClassificationResult(labels[index], index, probs, labels)

    def served_outputs(self, labels: Sequence[str]) -> list[ServedTensor]:
        return [ServedTensor("PROBABILITIES", "TYPE_FP32", (len(labels),)), ServedTensor("LABEL", "TYPE_STRING", (1,))]

    def served_arrays(self, results: Sequence[ClassificationResult]) -> dict[str, np.ndarray]:
        return {"PROBABILITIES": np.stack([r.probabilities for r in results]).astype(np.float32),
                "LABEL": np.array([[r.label.encode()] for r in results], dtype=object)}

    def from_served(self, arrays: Mapping[str, np.ndarray], labels: list[str]) -> ClassificationResult:
        return self.combined_result(arrays["PROBABILITIES"], "probabilities", None, labels)

    def summary(self, record: Mapping[str, Any]) -> str:
        probs = ", ".join(f"{k} {v:.3f}" for k, v in record["probabilities"].items())
        return f"{record['label']} ({probs})"

    def figures(self, result: ClassificationResult, labels: list[str]) -> dict[str, str]:
        return {"label": result.label, **{f"p({k})": f"{float(v):.4f}" for k, v in zip(labels, result.probabilities)}}

    def sr_groups(self, frame: ReportFrame, result: ClassificationResult, labels: list[str]) -> list:
        import highdicom as hd
        from highdicom.sr import CodedConcept
        from pydicom.sr.codedict import codes

        findings = [hd.sr.QualitativeEvaluation(name=codes.DCM.Finding, value=frame.concept(result.label))]
        measures = [hd.sr.Measurement(
            name=CodedConcept(value=f"p-{i}", scheme_designator=frame.scheme, meaning=f"Probability of {name}"[:64]),
            value=float(p), unit=codes.UCUM.NoUnits) for i, (name, p) in enumerate(zip(labels, result.probabilities))]
        return [hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=frame.tracking(f"frame {frame.number}"), qualitative_evaluations=findings,
            measurements=measures, source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(
                frame.source)])]

    def truth_report(self, truth: list, results: Sequence[ClassificationResult], labels: list[str],
                     postprocess: Postprocess) -> dict:
        from ..measures.metrics import classification_report

        return classification_report(np.array(truth), np.stack([r.probabilities for r in results]), labels)

    def truth_summary(self, report) -> str:
        return f"acc {interval_text(report['accuracy_interval'])}"

    def truth_per_case(self, truth, results, labels) -> np.ndarray:
        calls = np.argmax(np.stack([r.probabilities for r in results]), axis=1)
        return (calls == np.asarray(truth, int)).astype(np.float64)

    def same_answer(self, a: ClassificationResult, b: ClassificationResult) -> bool:
        return np.array_equal(a.probabilities, b.probabilities)

    def worst_vs_fp32(self, per_case, results, labels) -> list[tuple[int, str]]:
        out = []
        for i in np.lexsort((-per_case["abs_diff"], per_case["agree"]))[:SHOWN]:  # changed calls, then largest shifts
            i, r = int(i), results[int(i)]
            if per_case["agree"][i] and per_case["abs_diff"][i] == 0:
                break
            verb = "kept" if per_case["agree"][i] else "changed to"
            shift = per_case["abs_diff"][i]
            out.append((i, f"FP32 calls {labels[int(per_case['fp32_class'][i])]}; this artifact {verb} {r.label} "
                           f"(p {float(np.max(r.probabilities)):.3f}; mean |output change| {shift:.4f})"))
        return out

    def worst_vs_truth(self, truth, results, labels) -> list[tuple[int, str]]:
        wrong = [(float(np.max(r.probabilities)), i) for i, (r, t) in enumerate(zip(results, truth)) if r.index != t]
        return [(i, f"called {results[i].label} (p {p:.3f}), truth {labels[int(truth[i])]}")
                for p, i in sorted(wrong, reverse=True)[:SHOWN]]  # the most confident mistakes first

    def explained_score(self, output: np.ndarray, kind: str, labels: list[str]):
        index = int(np.argmax(class_probabilities(output[0], kind)))

        def value(out: np.ndarray) -> float:
            return float(class_probabilities(out[0], kind)[index])

        return value, f"probability of {labels[index]!r}"

    def output_labels(self, reference: np.ndarray, labels: tuple[str, ...] | None) -> list[str]:
        if reference.ndim != 2:
            raise OptionError(f"a classifier should output (N, classes), this model outputs {reference.shape}",
                              "use --task segmentation for per-pixel outputs")
        return checked_labels(labels, [str(i) for i in range(max(2, reference.shape[1]))])

    def postprocess(self, reference: np.ndarray, detection=None) -> Postprocess:
        return Postprocess(activation=activation_of(reference), decision="argmax")

    def truth_in_input(self, truth: list, geometry: list) -> list:
        return truth

    def render(self, image: np.ndarray, result: ClassificationResult, labels: list[str]) -> np.ndarray:
        """The frame itself in RGB: a label is text, which the SR and the page carry."""
        from ..io.overlay import display_gray

        base = display_gray(image)
        return np.repeat(base[:, :, None], 3, axis=2) if base.ndim == 2 else base[:, :, :3]

    def load_truth(self, path: Path, images: Any, label_names: list[str], implicit: bool) -> list | None:
        if path.suffix.lower() == ".npz":
            found = truth.npz_values(path, images, "labels")
            if found is None:
                return None if implicit else truth.not_truth(path, "labels")
            return truth.class_indices(found[1], path, label_names)
        if path.is_dir():
            raise InputError(f"{path}: a folder of masks is for segmentation", "give a CSV file,label for classes")
        if path.suffix.lower() == ".csv":
            return truth.csv_classes(path, images, label_names)
        return truth.not_truth(path, "labels")

    def start_comparison(self, kind: str, label_names: list[str] | None) -> ClassComparison:
        return ClassComparison(kind, label_names)

    def compare(self, reference, candidate, kind: str, label_names: list[str] | None) -> Comparison:
        """Stacked outputs (N, C) in one go, or per-case outputs one by one."""
        if isinstance(reference, np.ndarray) and isinstance(candidate, np.ndarray):
            if reference.shape != candidate.shape:
                raise output_mismatch(reference.shape, candidate.shape)
            comparison = self.start_comparison(kind, label_names)
            comparison.add(reference, candidate)
            return comparison.finish()
        return compare_cases(self.start_comparison(kind, label_names), reference, candidate)

    def case_margins(self, output: np.ndarray, kind: str) -> dict[str, Margins]:
        """Each case's top-1 margin, stratified by FP32's class."""
        scores = decision_scores(output, kind)
        s = np.sort(scores, axis=1)
        return {"agreement": Margins(s[:, -1] - s[:, -2], scores.argmax(axis=1))}

    def population_margins(self, reference, kind: str) -> dict[str, Margins]:
        return spaced_population(self.case_margins(np.asarray(reference), kind))

    def clinical_tests(self, truth, fp32, cand, kind: str, labels: list[str], margin: float) -> dict[str, PairedTest]:
        """Accuracy, and each class's sensitivity (and specificity beyond two classes), paired case by case."""
        truth, fp32, cand = np.asarray(truth, int), stacked_scores(fp32), stacked_scores(cand)
        pf = np.array([int(np.argmax(class_probabilities(o, kind))) for o in fp32])
        pc = np.array([int(np.argmax(class_probabilities(o, kind))) for o in cand])
        tests = {"accuracy": paired_test(pf == truth, pc == truth, margin, "accuracy")}
        for k, name in enumerate(labels):
            pos, neg = truth == k, truth != k
            if pos.any():
                tests[f"sensitivity[{name}]"] = paired_test(pf[pos] == k, pc[pos] == k, margin,
                                                            f"sensitivity of {name}")
            if neg.any() and len(labels) > 2:  # with two classes, one class's specificity is the other's sensitivity
                tests[f"specificity[{name}]"] = paired_test(pf[neg] != k, pc[neg] != k, margin,
                                                            f"specificity of {name}")
        return tests


class ClassComparison:
    """Candidate vs FP32 classifier outputs, case by case."""

    def __init__(self, kind: str = "logits", label_names: list[str] | None = None) -> None:
        self.kind, self.label_names = kind, label_names
        self.reference: list[np.ndarray] = []
        self.candidate: list[np.ndarray] = []

    def add(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        r, c = np.asarray(reference, np.float32), np.asarray(candidate, np.float32)
        if r.shape != c.shape:
            raise output_mismatch(r.shape, c.shape)
        self.reference.append(r.reshape(-1, r.shape[-1]) if r.ndim > 1 else r[None])
        self.candidate.append(c.reshape(-1, c.shape[-1]) if c.ndim > 1 else c[None])

    def finish(self) -> Comparison:
        reference = np.concatenate(self.reference) if self.reference else np.zeros((0, 2), np.float32)
        candidate = np.concatenate(self.candidate) if self.candidate else np.zeros((0, 2), np.float32)
        kind, label_names = self.kind, self.label_names
        n = int(reference.shape[0])
        diff = np.abs(reference - candidate).reshape(n, -1) if n else np.zeros((0, 1))
        values = {"max_abs_diff": float(diff.max()) if diff.size else 0.0,
                  "mean_abs_diff": float(diff.mean()) if diff.size else 0.0}
        ref_class = decision_scores(reference, kind).argmax(axis=1) if n else np.zeros(0, np.int64)
        cand_class = decision_scores(candidate, kind).argmax(axis=1) if n else np.zeros(0, np.int64)
        agree = ref_class == cand_class
        values["agreement"] = float(agree.mean()) if n else 1.0
        figures = {}
        for c in np.unique(ref_class):
            name = label_names[c] if label_names and c < len(label_names) else str(c)
            figures[f"class_agreement[{name}]"] = float(agree[ref_class == c].mean())
        values["class_agreement"] = min(figures.values(), default=1.0)
        values["max_prob_diff"] = float(max(
            (np.abs(class_probabilities(r, kind) - class_probabilities(c, kind)).max()
             for r, c in zip(reference, candidate)), default=0.0))
        return Comparison("classification", n, values, figures=figures,
                          per_case={"abs_diff": diff.mean(axis=1), "agree": agree, "fp32_class": ref_class},
                          shifts={"agreement": margin_shifts(reference, candidate, kind) if n else np.zeros(0)},
                          class_names=list(label_names) if label_names else None)
