"""Segmentation: a label per pixel, at the frame's own size."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, OptionError
from ..manifest import PairedTest, Postprocess
from ..measures import stats, truth
from ..measures.clinical import noninferiority_state
from ..measures.comparison import Comparison, output_mismatch
from ..measures.margins import (
    Margins,
    foreground_margin,
    has_lesion,
    min_lesion_px,
    presence_margin,
    spaced_population,
    without_specks,
)
from ..measures.metrics import dice
from ..postprocess import segmentation_mask, segmentation_probabilities
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
class SegmentationResult:
    mask: np.ndarray
    labels: list[str]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def areas(self) -> dict[str, int]:
        """Pixels per class at the original image size."""
        counts = np.bincount(self.mask.ravel(), minlength=len(self.labels))
        return {name: int(c) for name, c in zip(self.labels, counts)}

    def to_json(self) -> dict:
        total = int(self.mask.size)
        return {
            "task": Segmentation.name,
            "size": [int(self.mask.shape[0]), int(self.mask.shape[1])],
            "areas_px": self.areas,
            "areas_fraction": {k: round(v / total, 6) for k, v in self.areas.items()},
            "timings_ms": timings_ms(self.timings),
        }


class Segmentation:
    name = "segmentation"
    plural = "segmenters"  # what people call models of this task, in messages
    # What changes care is a lesion that appears or vanishes, and per case the masks must still overlap at
    # Dice >= 0.99: boundary pixels that move by one do not fail an artifact, a changed finding does. Lesion
    # agreement is held at 99%: segmentation data sets have hundreds of masks, not thousands, and the lesion-level
    # certificate (a case keeps its call if no pixel's margin moves further than the call is from changing) is
    # conservative; at 99.9% every quantized segmenter here stayed uncertified, FP16 included. A stricter budget is
    # one --drift-budget away.
    default_budget = "lesion_agreement>=0.99,case_dice>=0.99"
    drift_metrics = ("lesion_agreement", "case_dice", "dice", "iou", "changed_pixels", "max_abs_diff",
                     "mean_abs_diff")
    ragged_outputs = False
    spatial = True
    has_margins = True
    ensemble_refusal = ""
    option_group = None
    other_input_kinds = ()
    takes_features = True
    explainable = TASK_FACTS[name].explainable
    several_outputs = False
    conversion_steps = None
    output_format = "segmentation mask (per-pixel class)"
    binary_case_scores = False
    case_figure = "dice"
    shipped_samples, shipped_calibration, shipped_verdict = ("busi", "calibration/busi_train240.npz",
                                                              "calibration/busi_verdict540.npz")
    shipped_truth = "busi_masks"

    def finish(self, outputs, pipe, prepared) -> SegmentationResult:
        return self.combined_result(outputs[pipe.output_name], pipe.output_kind, prepared.geometry, pipe.labels)

    def combine(self, outputs, kinds, weights, combine) -> tuple[np.ndarray, str]:
        from . import combine as comb

        return comb.segmentation(outputs, kinds, weights, combine)

    def combined_result(self, output, kind: str, geometry, labels: list[str]) -> SegmentationResult:
        """The mask at the frame's size from one (1, C, h, w) map (an engine's, or an ensemble's combination)."""
        mask, _ = segmentation_mask(output, kind, geometry)
        return SegmentationResult(mask, labels)

    def served_outputs(self, labels: Sequence[str]) -> list[ServedTensor]:
        return [ServedTensor("MASK", "TYPE_UINT8", (-1, -1))]

    def served_arrays(self, results: Sequence[SegmentationResult]) -> dict[str, np.ndarray]:
        return {"MASK": np.stack([r.mask for r in results]).astype(np.uint8)}

    def from_served(self, arrays: Mapping[str, np.ndarray], labels: list[str]) -> SegmentationResult:
        return SegmentationResult(np.asarray(arrays["MASK"][0], np.uint8), labels)

    def summary(self, record: Mapping[str, Any]) -> str:
        areas = ", ".join(f"{k} {v} px" for k, v in record["areas_px"].items())
        return f"mask {record['size'][0]}x{record['size'][1]}: {areas}"

    def figures(self, result: SegmentationResult, labels: list[str]) -> dict[str, str]:
        return {f"area {k}": f"{v} px" for k, v in result.areas.items()}

    def sr_groups(self, frame: ReportFrame, result: SegmentationResult, labels: list[str]) -> list:
        import highdicom as hd
        from highdicom.sr import CodedConcept
        from pydicom.sr.codedict import codes

        unit = codes.UCUM.SquareMillimeter if frame.area_unit == "mm2" else CodedConcept("{pixels}", "UCUM", "pixels")
        return [hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=frame.tracking(f"frame {frame.number} {labels[c]}"),
            finding_type=frame.concept(labels[c]),
            measurements=[hd.sr.Measurement(name=codes.SCT.Area, value=int((result.mask == c).sum()) * frame.pixel_area,
                                            unit=unit)],
            source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(frame.source)])
            for c in range(1, len(labels))]

    def truth_report(self, truth: list, results: Sequence[SegmentationResult], labels: list[str],
                     postprocess: Postprocess) -> dict:
        from ..measures.metrics import segmentation_report

        return segmentation_report(truth, [r.mask for r in results], labels)

    def truth_summary(self, report) -> str:
        return ", ".join(f"{k} dice {interval_text(v['dice_interval'])}" for k, v in report["per_class"].items())

    def truth_per_case(self, truth, results, labels) -> np.ndarray:
        classes = range(1, max(2, len(labels)))
        return np.array([np.mean([dice(r.mask, t, c) for c in classes]) for r, t in zip(results, truth)])

    def same_answer(self, a: SegmentationResult, b: SegmentationResult) -> bool:
        return np.array_equal(a.mask, b.mask)

    def worst_vs_fp32(self, per_case, results, labels) -> list[tuple[int, str]]:
        order = [int(i) for i in np.argsort(per_case["dice"], kind="stable")[:SHOWN]]
        return [(i, f"Dice vs FP32 {per_case['dice'][i]:.4f} (left FP32, right this artifact)") for i in order
                if per_case["dice"][i] < 1.0]

    def worst_vs_truth(self, truth, results, labels) -> list[tuple[int, str]]:
        scores = [dice(np.asarray(t), r.mask, 1) for t, r in zip(truth, results)]
        order = [int(i) for i in np.argsort(scores, kind="stable")[:SHOWN]]
        return [(i, f"Dice vs ground truth {scores[i]:.3f}") for i in order if scores[i] < 1.0]

    def explained_score(self, output: np.ndarray, kind: str, labels: list[str]):
        lesion = segmentation_probabilities(output, kind).argmax(axis=0) > 0

        def value(out: np.ndarray) -> float:
            foreground = segmentation_probabilities(out, kind)[1:].sum(axis=0)
            return float(foreground[lesion].mean() if lesion.any() else foreground.max())

        return value, (f"mean foreground probability over the predicted lesion ({int(lesion.sum())} pixels)"
                       if lesion.any() else "highest foreground probability (no lesion predicted)")

    def output_labels(self, reference: np.ndarray, labels: tuple[str, ...] | None) -> list[str]:
        if reference.ndim != 4:
            raise OptionError(f"a segmenter should output (N, C, H, W), this model outputs {reference.shape}",
                              "use --task classification for per-image outputs")
        classes = max(2, reference.shape[1])
        return checked_labels(labels, ["background"] + [f"class{i}" for i in range(1, classes)])

    def postprocess(self, reference: np.ndarray, detection=None) -> Postprocess:
        return Postprocess(activation=activation_of(reference), decision="argmax",
                           resize_to_input="bilinear on probabilities")

    def truth_in_input(self, truth: list, geometry: list) -> list:
        return truth

    def render(self, image: np.ndarray, result: SegmentationResult, labels: list[str]) -> np.ndarray:
        from ..io.overlay import overlay

        return overlay(image, result.mask)

    def load_truth(self, path: Path, images: Any, label_names: list[str], implicit: bool) -> list | None:
        if path.suffix.lower() == ".npz":
            found = truth.npz_values(path, images, "masks")
            if found is None:
                return None if implicit else truth.not_truth(path, "masks")
            return [np.asarray(v) for v in found[1]]
        if path.is_dir():
            return truth.mask_folder(path, images, label_names)
        if path.suffix.lower() == ".csv":
            raise InputError(f"{path}: a CSV of class labels cannot grade a segmenter, which is compared with masks",
                             "pass a folder of masks named like the images, or an .npz with a 'masks' array")
        return truth.not_truth(path, "masks")

    def start_comparison(self, kind: str, label_names: list[str] | None) -> MaskComparison:
        return MaskComparison(kind, label_names)

    def compare(self, reference, candidate, kind: str, label_names: list[str] | None) -> Comparison:
        """Case by case (maps may stream from disk: never all held at once)."""
        if isinstance(reference, np.ndarray) and isinstance(candidate, np.ndarray) and \
                reference.shape != candidate.shape:
            raise output_mismatch(reference.shape, candidate.shape)
        return compare_cases(self.start_comparison(kind, label_names), reference, candidate)

    def case_margins(self, output: np.ndarray, kind: str) -> dict[str, Margins]:
        """Each map's presence margin (how far its lesion call is from changing), stratified by that call."""
        out = np.asarray(output, np.float32)
        maps = out[None] if out.ndim == 3 else out
        min_px = min_lesion_px(maps.shape)
        values, strata = [], []
        for o in maps:
            margin = foreground_margin(o, kind)
            values.append(presence_margin(margin, min_px))
            strata.append(int(has_lesion(margin, min_px)))
        return {"lesion_agreement": Margins(np.array(values), np.array(strata, np.int64))}

    def population_margins(self, reference, kind: str) -> dict[str, Margins]:
        parts = [self.case_margins(o, kind) for o in reference]
        if not parts:
            return {"lesion_agreement": Margins.join([])}
        return spaced_population({"lesion_agreement": Margins.join([p["lesion_agreement"] for p in parts])})

    def clinical_tests(self, truth, fp32, cand, kind: str, labels: list[str], margin: float) -> dict[str, PairedTest]:
        """Per-case Dice of FP32 and the candidate against the masks, in one pass over the cases (outputs may
        stream from disk: a large segmenter's outputs are never all held at once)."""
        from PIL import Image

        def mask(output: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
            m = np.argmax(segmentation_probabilities(output, kind), axis=0).astype(np.uint8)
            if m.shape == shape:
                return m
            return np.asarray(Image.fromarray(m).resize(shape[::-1], Image.Resampling.NEAREST))

        classes = range(1, max(2, len(labels)))
        df: dict[int, list[float]] = {k: [] for k in classes}
        dc: dict[int, list[float]] = {k: [] for k in classes}
        for f, c, t in zip(fp32, cand, truth):
            mf, mc = mask(np.asarray(f), t.shape), mask(np.asarray(c), t.shape)
            for k in classes:
                df[k].append(dice(mf, t, k))
                dc[k].append(dice(mc, t, k))
        tests = {}
        for k in classes:
            a, b = np.array(df[k]), np.array(dc[k])
            lo, hi = stats.bootstrap_mean(a - b)
            name = labels[k] if k < len(labels) else str(k)
            tests[f"dice[{name}]"] = PairedTest(
                cases=len(a), fp32=float(a.mean()), candidate=float(b.mean()), drop=float((a - b).mean()),
                drop_low=lo, drop_high=hi, verdict=noninferiority_state(lo, hi, margin),
                method=f"mean per-case Dice vs ground truth of {name}, paired bootstrap over {len(a)} cases")
        return tests


class MaskComparison:
    """Candidate vs FP32 segmentation outputs, one case at a time: only per-case figures and pooled pixel counts
    are kept, never the output maps (a 584x568 U-Net's verdict on 1,000 cases would hold 2.6 GB of them)."""

    def __init__(self, kind: str = "logits", label_names: list[str] | None = None) -> None:
        self.kind, self.label_names = kind, label_names
        self.n = 0
        self.max_diff, self.sum_diff, self.elements = 0.0, 0.0, 0
        self.abs_diff: list[float] = []
        self.case_dice: list[float] = []
        self.lesion_agree: list[bool] = []
        self.fp32_lesion: list[int] = []
        self.largest_change: list[float] = []
        self.changed = self.pixels = 0
        self.overlap: dict[int, list[int]] = {}  # class -> [both, reference, candidate, union] pixel counts
        self.classes = 0

    def add(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        r, c = np.asarray(reference, np.float32), np.asarray(candidate, np.float32)
        if r.shape != c.shape:
            raise output_mismatch(r.shape, c.shape)
        for ro, co in zip(r[None] if r.ndim == 3 else r, c[None] if c.ndim == 3 else c):
            self._one(ro, co)

    def _one(self, r: np.ndarray, c: np.ndarray) -> None:
        kind = self.kind
        d = np.abs(r - c)
        self.max_diff = max(self.max_diff, float(d.max()) if d.size else 0.0)
        self.sum_diff += float(d.sum(dtype=np.float64))
        self.elements += int(d.size)
        self.abs_diff.append(float(d.mean()) if d.size else 0.0)
        self.classes = max(2, r.shape[0])
        ref_labels = np.argmax(segmentation_probabilities(r[None], kind), axis=0)
        cand_labels = np.argmax(segmentation_probabilities(c[None], kind), axis=0)
        self.changed += int((ref_labels != cand_labels).sum())
        self.pixels += int(ref_labels.size)
        min_px = min_lesion_px(r.shape)
        dices = []
        for k in range(1, self.classes):
            pr, pc = ref_labels == k, cand_labels == k
            counts = self.overlap.setdefault(k, [0, 0, 0, 0])
            counts[0] += int((pr & pc).sum())
            counts[1] += int(pr.sum())
            counts[2] += int(pc.sum())
            counts[3] += int((pr | pc).sum())
            # Per case, Dice of the lesions themselves: specks below the lesion size are not findings, and a
            # 3-pixel speck kept by one side only would otherwise score a whole case 0.
            dices.append(dice(without_specks(ref_labels, k, min_px), without_specks(cand_labels, k, min_px), 1))
        self.case_dice.append(min(dices))
        ref_margin, cand_margin = foreground_margin(r, kind), foreground_margin(c, kind)
        ref_has = has_lesion(ref_margin, min_px)
        self.lesion_agree.append(ref_has == has_lesion(cand_margin, min_px))
        self.fp32_lesion.append(int(ref_has))
        self.largest_change.append(float(np.abs(cand_margin - ref_margin).max()))
        self.n += 1

    def finish(self) -> Comparison:
        n = self.n
        mean = self.sum_diff / self.elements if self.elements else 0.0
        values = {"max_abs_diff": self.max_diff, "mean_abs_diff": mean}
        names = self.label_names if self.label_names and len(self.label_names) == self.classes else None
        figures = {}
        dices, ious = [], []
        for k, (both, ref, cand, union) in sorted(self.overlap.items()):
            d = 1.0 if ref + cand == 0 else 2.0 * both / (ref + cand)
            j = 1.0 if union == 0 else both / union
            label = names[k] if names else str(k)
            figures[f"dice[{label}]"], figures[f"iou[{label}]"] = d, j
            dices.append(d)
            ious.append(j)
        values["dice"], values["iou"] = min(dices, default=1.0), min(ious, default=1.0)
        values["changed_pixels"] = self.changed / self.pixels if self.pixels else 0.0
        case_dice = np.array(self.case_dice)
        lesion_agree = np.array(self.lesion_agree, dtype=bool)
        values["case_dice"] = float(case_dice.mean()) if n else 1.0
        values["lesion_agreement"] = float(lesion_agree.mean()) if n else 1.0
        return Comparison(
            "segmentation", n, values, figures,
            per_case={"abs_diff": np.array(self.abs_diff), "dice": case_dice, "lesion_agree": lesion_agree,
                      "fp32_lesion": np.array(self.fp32_lesion, np.int64)},
            shifts={"lesion_agreement": -np.array(self.largest_change)})
