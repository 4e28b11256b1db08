"""Detection: boxes, scores and classes in the frame's own pixels, after NMS (on the host or in the graph)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BundleError
from ..manifest import PairedTest
from ..measures import truth
from ..measures.clinical import paired_test
from ..measures.comparison import Comparison
from ..measures.margins import Margins
from ..results import DetectionResult
from .base import ServedTensor


class Detection:
    name = "detection"
    plural = "detectors"  # what people call models of this task, in messages
    # The same lesion-level bar as segmenters (a lesion found or lost changes care), and the boxes FP32 and the
    # candidate both find must overlap at IoU >= 0.9 on average.
    default_budget = "lesion_agreement>=0.99,box_iou>=0.9"
    one_frame_per_call = True
    spatial = False  # boxes are in the frame's pixels already (detection_post), never flipped back as maps
    has_margins = False
    ensemble_refusal = ("combining a detector's boxes needs box fusion (e.g. weighted boxes fusion), which edgemed "
                        "ensembles do not do")

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
        (r,) = results  # one frame per request (one_frame_per_call)
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
        from ..detection import Detections, match

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
