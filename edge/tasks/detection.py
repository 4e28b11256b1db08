"""Detection: boxes, scores and classes in the frame's own pixels, after NMS (on the host or in the graph)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import truth
from ..clinical import paired_test
from ..manifest import PairedTest
from ..results import DetectionResult
from .base import ServedTensor


class Detection:
    name = "detection"
    # The same lesion-level bar as segmenters (a lesion found or lost changes care), and the boxes FP32 and the
    # candidate both find must overlap at IoU >= 0.9 on average.
    default_budget = "lesion_agreement>=0.99,box_iou>=0.9"
    one_frame_per_call = True

    def finish(self, outputs, pipe, prepared) -> DetectionResult:
        from ..detection_post import finish

        dets = finish(outputs, pipe.detection, prepared.geometry, prepared.original_size)
        return DetectionResult(dets.boxes, dets.scores, dets.classes, pipe.labels)

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
        from ..overlay import draw_boxes

        return draw_boxes(image, result.boxes, [labels[int(c)] for c in result.classes], result.scores,
                          result.classes)

    def load_truth(self, path: Path, images: Any, label_names: list[str], implicit: bool) -> list | None:
        """(boxes, classes) per image: from an .npz of masks (each connected region a box), or the box files
        :mod:`edgemed.detection_truth` reads (CSV, COCO JSON, a mask folder)."""
        from ..detection_truth import from_masks, load_boxes
        from ..images import read_frames

        if path.suffix.lower() != ".npz":
            return load_boxes(path, images.names, label_names, lambda p: read_frames(p)[0])
        found = truth.npz_values(path, images, "masks")
        if found is None:
            return None if implicit else truth.not_truth(path, "labels")
        return from_masks(found[1], label_names)

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
