"""Detection: boxes, scores and classes in the frame's own pixels, after NMS (on the host or in the graph)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..detection import Detections, match
from ..errors import BundleError, InputError, OptionError
from ..manifest import PairedTest, Postprocess
from ..measures import truth
from ..measures.clinical import paired_test
from ..measures.comparison import Comparison
from ..measures.margins import Margins
from ..task_names import TASK_FACTS
from .base import SHOWN, ReportFrame, ServedTensor, interval_text, timings_ms


@dataclass
class DetectionResult:
    """Detections in the original image's pixels: boxes (N, 4) x1, y1, x2, y2; N = 0 is a normal answer."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    labels: list[str]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def detections(self):
        """As :class:`edgemed.detection.Detections` (what the metrics take)."""
        return Detections(self.boxes, self.scores, self.classes)

    @property
    def names(self) -> list[str]:
        """The class name of each box."""
        return [self.labels[int(c)] if 0 <= int(c) < len(self.labels) else str(int(c)) for c in self.classes]

    def to_json(self) -> dict:
        return {
            "task": Detection.name,
            "count": int(len(self.scores)),
            "detections": [{"box": [round(float(v), 2) for v in b], "score": round(float(s), 6), "label": n,
                            "class": int(c)} for b, s, c, n in zip(self.boxes, self.scores, self.classes, self.names)],
            "timings_ms": timings_ms(self.timings),
        }


class Detection:
    name = "detection"
    plural = "detectors"  # what people call models of this task, in messages
    # The same lesion-level bar as segmenters (a lesion found or lost changes care), and the boxes FP32 and the
    # candidate both find must overlap at IoU >= 0.9 on average.
    default_budget = "lesion_agreement>=0.99,box_iou>=0.9"
    drift_metrics = ("lesion_agreement", "recall", "precision", "box_iou", "min_iou", "max_score_diff")
    ragged_outputs = True  # a box count per image
    spatial = False  # boxes are in the frame's pixels already (detection_post), never flipped back as maps
    has_margins = False
    ensemble_refusal = ("combining a detector's boxes needs box fusion (e.g. weighted boxes fusion), which edgemed "
                        "ensembles do not do")
    option_group = "detector"  # layout, NMS placement and thresholds (convert --help's "detector" group)
    other_input_kinds = ()
    takes_features = False
    explainable = TASK_FACTS[name].explainable
    several_outputs = True  # boxes and scores (or YOLO's one raw tensor, or NMS's outputs)
    conversion_steps = "edgemed.converters.detection_setup"  # reads the layout, appends NMS with --nms graph
    output_format = "bounding boxes with class and score"
    binary_case_scores = False
    case_figure = "lesion_agree"
    shipped_samples, shipped_calibration, shipped_verdict = ("busi", "calibration/busi_train240.npz",
                                                              "calibration/busi_verdict540.npz")
    shipped_truth = "busi_masks"

    def finish(self, outputs, pipe, prepared) -> DetectionResult:
        from ..detection_post import finish

        dets = finish(outputs, pipe.detection, prepared.geometry, prepared.original_size)
        return DetectionResult(dets.boxes, dets.scores, dets.classes, pipe.labels)

    def combine(self, outputs, kinds, weights, combine) -> tuple[np.ndarray, str]:
        raise self._not_ensembled()

    def combined_result(self, output, kind: str, geometry, labels: list[str]) -> DetectionResult:
        raise self._not_ensembled()

    def _not_ensembled(self) -> BundleError:
        return BundleError(f"detectors cannot be ensembled: {self.ensemble_refusal}", "run detectors one by one")

    def served_outputs(self, labels: Sequence[str]) -> list[ServedTensor]:
        return [ServedTensor("BOXES", "TYPE_FP32", (-1, 4)), ServedTensor("SCORES", "TYPE_FP32", (-1,)),
                ServedTensor("CLASSES", "TYPE_INT32", (-1,))]

    def served_arrays(self, results: Sequence[DetectionResult]) -> dict[str, np.ndarray]:
        (r,) = results  # one frame per request (ragged_outputs)
        return {"BOXES": np.asarray(r.boxes, np.float32).reshape(1, -1, 4),
                "SCORES": np.asarray(r.scores, np.float32).reshape(1, -1),
                "CLASSES": np.asarray(r.classes, np.int32).reshape(1, -1)}

    def from_served(self, arrays: Mapping[str, np.ndarray], labels: list[str]) -> DetectionResult:
        return DetectionResult(np.asarray(arrays["BOXES"][0]).reshape(-1, 4), np.asarray(arrays["SCORES"][0]),
                               np.asarray(arrays["CLASSES"][0]).astype(int), labels)

    def summary(self, record: Mapping[str, Any]) -> str:
        boxes = "; ".join(f"{d['label']} {d['score']:.2f} at [{', '.join(f'{v:.0f}' for v in d['box'])}]"
                          for d in record["detections"])
        return f"{record['count']} detection(s)" + (f": {boxes}" if boxes else "")

    def figures(self, result: DetectionResult, labels: list[str]) -> dict[str, str]:
        out = {"detections": str(len(result.boxes))}
        for i, (b, s, c) in enumerate(zip(result.boxes, result.scores, result.classes)):
            out[f"box {i}"] = f"{labels[int(c)]} {float(s):.2f} at [{', '.join(f'{v:.0f}' for v in b)}]"
        return out

    def sr_groups(self, frame: ReportFrame, result: DetectionResult, labels: list[str]) -> list:
        import highdicom as hd
        from pydicom.sr.codedict import codes

        source = frame.source
        frames = {"referenced_frame_numbers": [frame.number]} if int(getattr(source, "NumberOfFrames", 1)) > 1 else {}
        ref = hd.sr.SourceImageForRegion.from_source_image(source, **frames)
        groups = []
        for k, (box, score, cls) in enumerate(zip(result.boxes, result.scores, result.classes)):
            x1, y1, x2, y2 = (float(v) for v in box)
            region = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE, source_image=ref,
                                       graphic_data=np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]]))
            groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=frame.tracking(f"frame {frame.number} box {k}"), referenced_region=region,
                finding_type=frame.concept(labels[int(cls)]),
                measurements=[hd.sr.Measurement(name=codes.DCM.Probability, value=float(score),
                                                unit=codes.UCUM.NoUnits)]))
        return groups

    def truth_report(self, truth: list, results: Sequence[DetectionResult], labels: list[str],
                     postprocess: Postprocess) -> dict:
        from ..measures.detection_metrics import detection_report

        report = detection_report(truth, [r.detections for r in results], labels)
        report["operating_score_threshold"] = postprocess.detection.score_threshold
        return report

    def truth_summary(self, report) -> str:
        fppi = report["false_positives_per_image"]["value"]
        text = f"lesion sensitivity {interval_text(report['sensitivity'])}, {fppi:.2f} FP/image"
        m = report.get("map50_interval")
        return text + (f", mAP@0.5 {interval_text(m)}" if m else
                       f", mAP@0.5 {report['map50']:.3f} n={report['images']}")

    def truth_per_case(self, truth, results, labels) -> np.ndarray:
        raise InputError("a detector has no one score per case to pair (its figures count lesions and false "
                         "positives: FROC, mAP)", "compare detectors with edgemed bench's lesion sensitivity")

    def same_answer(self, a: DetectionResult, b: DetectionResult) -> bool:
        return all(np.array_equal(x, y) for x, y in ((a.boxes, b.boxes), (a.scores, b.scores),
                                                      (a.classes, b.classes)))

    def worst_vs_fp32(self, per_case, results, labels) -> list[tuple[int, str]]:
        return [(int(i), f"a box appears or vanishes against FP32's ({len(results[int(i)].boxes)} box(es) here)")
                for i in np.flatnonzero(~per_case["lesion_agree"])[:SHOWN]]

    def worst_vs_truth(self, truth, results, labels) -> list[tuple[int, str]]:
        from ..measures.detection_metrics import lesion_hits

        scored = []
        for i, (t, r) in enumerate(zip(truth, results)):
            hits, false = lesion_hits(t, r.detections)
            missed = int((~hits).sum())
            if missed or false:
                scored.append((missed + false, missed, false, len(hits), i))
        return [(i, f"{f'{missed} of {n} lesion(s) missed' if n else 'no lesion in the ground truth'}, {false} false "
                    "positive(s)") for _, missed, false, n, i in sorted(scored, reverse=True)[:SHOWN]]

    def explained_score(self, output: np.ndarray, kind: str, labels: list[str]):
        raise InputError("a detector's occlusion explains each box's score, not one score",
                         "use edgemed.explain.occlusion.occlusion, which makes a map per box")

    def output_labels(self, reference: np.ndarray, labels: tuple[str, ...] | None) -> list[str]:
        raise OptionError("a detector's class names come from its layout", "convert it with --task detection, "
                          "which reads them in the detector set-up")

    def postprocess(self, reference: np.ndarray, detection=None) -> Postprocess:
        return Postprocess(activation="none", decision="nms", detection=detection)

    def truth_in_input(self, truth: list, geometry: list) -> list:
        from ..detection_post import to_input

        return [(to_input(boxes, geo), classes) for (boxes, classes), geo in zip(truth, geometry)]

    def render(self, image: np.ndarray, result: DetectionResult, labels: list[str]) -> np.ndarray:
        from ..io.overlay import draw_boxes

        return draw_boxes(image, result.boxes, [labels[int(c)] for c in result.classes], result.scores,
                          result.classes)

    def load_truth(self, path: Path, images: Any, label_names: list[str], implicit: bool) -> list | None:
        """(boxes, classes) per image: from an .npz of masks (each connected region a box), or the box files
        :mod:`edgemed.detection_truth` reads (CSV, COCO JSON, a mask folder)."""
        from ..detection_truth import from_masks, load_boxes
        from ..io.images import read_frames

        if path.suffix.lower() != ".npz":
            return load_boxes(path, images.names, label_names, lambda p: read_frames(p)[0])
        found = truth.npz_values(path, images, "masks")
        if found is None:
            return None if implicit else truth.not_truth(path, "labels")
        return from_masks(found[1], label_names)

    def start_comparison(self, kind: str, label_names: list[str] | None) -> DetectionComparison:
        return DetectionComparison(kind, label_names)

    def compare(self, reference, candidate, kind: str, label_names: list[str] | None) -> Comparison:
        """Lists of Detections, case by case."""
        return compare_detections(reference, candidate)

    def case_margins(self, output, kind: str) -> dict[str, Margins]:
        """None: after NMS a box's appearing or vanishing has no single margin, so detectors' counts are bounded
        by counting alone."""
        return {}

    def population_margins(self, reference, kind: str) -> dict[str, Margins]:
        return {}

    def clinical_tests(self, truth, fp32, cand, kind: str, labels: list[str], margin: float) -> dict[str, PairedTest]:
        """Per class, lesion sensitivity at the operating threshold, paired lesion by lesion: a lesion found by
        one model and missed by the other is a discordant pair."""
        found_f, found_c, classes = [], [], []
        for (boxes, cls), f, c in zip(truth, fp32, cand):
            gt = Detections(np.asarray(boxes, np.float32), np.ones(len(boxes), np.float32), np.asarray(cls, np.int64))
            found_f.append(match(gt, f)[0] >= 0)
            found_c.append(match(gt, c)[0] >= 0)
            classes.append(gt.classes)
        ff, fc, k = (np.concatenate(x) if x else np.zeros(0) for x in (found_f, found_c, classes))
        tests = {}
        for index, name in enumerate(labels):
            mine = k == index
            if mine.any():
                tests[f"sensitivity[{name}]"] = paired_test(ff[mine].astype(bool), fc[mine].astype(bool), margin,
                                                        f"lesion sensitivity of {name} (IoU >= 0.5)")
        return tests


class DetectionComparison:
    """Candidate vs FP32 detections, case by case (each case: a Detections)."""

    def __init__(self, kind: str = "detections", label_names: list[str] | None = None) -> None:
        self.reference: list = []
        self.candidate: list = []

    def add(self, reference, candidate) -> None:
        self.reference.append(reference)
        self.candidate.append(candidate)

    def finish(self) -> Comparison:
        return compare_detections(self.reference, self.candidate)


def compare_detections(reference: list, candidate: list, iou_threshold: float = 0.5) -> Comparison:
    """Match each case's candidate boxes to FP32's (same class, IoU >= 0.5): recall and precision of the
    FP32 detections, IoU and score change of matched boxes, and per case whether a lesion appeared or
    vanished (a box of either side left unmatched)."""
    from ..detection import match

    if len(reference) != len(candidate):
        raise BundleError(f"{len(candidate)} candidate cases for {len(reference)} reference cases",
                          "the artifact was built from a different model; rebuild the bundle")
    recalled, precise, ious, score_diffs, agree = [], [], [], [], []
    for ref, cand in zip(reference, candidate):
        hit, iou = match(ref, cand, iou_threshold)
        found = hit >= 0
        used = np.zeros(len(cand), bool)
        used[hit[found]] = True
        recalled += found.tolist()
        precise += used.tolist()
        ious += iou[found].tolist()
        score_diffs += np.abs(ref.scores[found] - cand.scores[hit[found]]).tolist()
        agree.append(bool(found.all() and used.all()))
    n = len(reference)
    recalled, precise, agree = np.array(recalled, bool), np.array(precise, bool), np.array(agree, bool)
    values = {"recall": float(recalled.mean()) if recalled.size else 1.0,
              "precision": float(precise.mean()) if precise.size else 1.0,
              "box_iou": float(np.mean(ious)) if ious else 1.0, "min_iou": float(min(ious, default=1.0)),
              "max_score_diff": float(max(score_diffs, default=0.0)),
              "lesion_agreement": float(agree.mean()) if n else 1.0}
    figures = {"fp32_detections": float(len(recalled)), "candidate_detections": float(len(precise))}
    return Comparison("detection", n, values, figures,
                      per_case={"recalled": recalled, "precise": precise, "iou": np.array(ious), "lesion_agree": agree})
