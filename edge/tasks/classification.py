"""Classification: one label per input (images and ECG beats), probabilities over the bundle's labels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import truth
from ..clinical import paired_test, stacked_scores
from ..errors import InputError
from ..manifest import PairedTest
from ..postprocess import class_probabilities
from ..results import ClassificationResult
from .base import ServedTensor


class Classification:
    name = "classification"
    # MLPerf's "high accuracy" bar (99.9% of FP32's answers), and every class must keep FP32's calls: overall
    # agreement hides the classes that matter (a model keeps 99.9% by getting N beats right while flipping S beats;
    # a chest X-ray INT8 kept 99.55% of 1,783 verdict images while flipping 3.9% of the class FP32 calls normal, and
    # flipped 1.6% of a test set holding that class 1.4 times as often). So of the cases FP32 calls S, at least 99%
    # must stay S, and so for every class (the worst class is the one judged); that term holds for any class mix.
    default_budget = "agreement>=0.999,class_agreement>=0.99"
    one_frame_per_call = False

    def finish(self, outputs, pipe, prepared) -> ClassificationResult:
        probs = class_probabilities(outputs[pipe.output_name][0], pipe.output_kind)
        index = int(np.argmax(probs))
        explanation = None if pipe.explainer is None else pipe.explainer.pending(outputs, index, prepared.geometry)
        return ClassificationResult(pipe.labels[index], index, probs, pipe.labels, explanation=explanation)

    def served_outputs(self, labels: Sequence[str]) -> list[ServedTensor]:
        return [ServedTensor("PROBABILITIES", "TYPE_FP32", (len(labels),)), ServedTensor("LABEL", "TYPE_STRING", (1,))]

    def served_arrays(self, results: Sequence[ClassificationResult]) -> dict[str, np.ndarray]:
        return {"PROBABILITIES": np.stack([r.probabilities for r in results]).astype(np.float32),
                "LABEL": np.array([[r.label.encode()] for r in results], dtype=object)}

    def from_served(self, arrays: Mapping[str, np.ndarray], labels: list[str]) -> ClassificationResult:
        probs = np.asarray(arrays["PROBABILITIES"][0], np.float32)
        index = int(np.argmax(probs))
        return ClassificationResult(labels[index], index, probs, labels)

    def summary(self, record: Mapping[str, Any]) -> str:
        probs = ", ".join(f"{k} {v:.3f}" for k, v in record["probabilities"].items())
        return f"{record['label']} ({probs})"

    def figures(self, result: ClassificationResult, labels: list[str]) -> dict[str, str]:
        return {"label": result.label, **{f"p({k})": f"{float(v):.4f}" for k, v in zip(labels, result.probabilities)}}

    def render(self, image: np.ndarray, result: ClassificationResult, labels: list[str]) -> np.ndarray:
        """The frame itself in RGB: a label is text, which the SR and the page carry."""
        from ..overlay import display_gray

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
