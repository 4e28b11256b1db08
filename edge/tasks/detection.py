"""Detection: boxes, scores and classes in the frame's own pixels, after NMS (on the host or in the graph)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

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
