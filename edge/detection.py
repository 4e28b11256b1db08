"""Boxes: IoU, class-aware non-maximum suppression, matching, and boxes from lesion masks.

Plain numpy, on the runtime path: host-side NMS runs here, and so does the drift gate's matching
of a candidate's boxes to FP32's. Boxes are ``(N, 4)`` arrays of x1, y1, x2, y2 in pixels
(x2, y2 exclusive: a box around one pixel at (3, 5) is [3, 5, 4, 6]).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Detections:
    """One image's detections: boxes (N, 4) xyxy, scores (N,), classes (N,) int. N may be 0."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return int(self.scores.size)

    def above(self, threshold: float) -> Detections:
        """Detections scoring strictly above ``threshold`` (ONNX NonMaxSuppression's rule, so host and graph
        NMS keep the same boxes)."""
        keep = self.scores > threshold
        return Detections(self.boxes[keep], self.scores[keep], self.classes[keep])


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU matrix."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float,
        max_detections: int) -> np.ndarray:
    """Indices kept by class-aware greedy NMS, best score first (ONNX NonMaxSuppression's rule)."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    suppressed = np.zeros(scores.size, bool)
    for pos, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(int(i))
        if len(keep) == max_detections:
            break
        rest = order[pos + 1:]
        same = rest[(classes[rest] == classes[i]) & ~suppressed[rest]]
        if same.size:
            suppressed[same[box_iou(boxes[i], boxes[same])[0] > iou_threshold]] = True
    return np.asarray(keep, np.int64)


def match(reference: Detections, candidate: Detections, iou_threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one matching of same-class boxes with IoU >= threshold, reference boxes by score:
    (index of the candidate matched to each reference box or -1, IoU of that match or 0)."""
    matched = -np.ones(len(reference), np.int64)
    ious = np.zeros(len(reference))
    if len(reference) == 0 or len(candidate) == 0:
        return matched, ious
    iou = box_iou(reference.boxes, candidate.boxes)
    iou[reference.classes[:, None] != candidate.classes[None, :]] = 0.0
    taken = np.zeros(len(candidate), bool)
    for r in np.argsort(-reference.scores, kind="stable"):
        options = np.where(~taken & (iou[r] >= iou_threshold), iou[r], -1.0)
        best = int(np.argmax(options))
        if options[best] >= 0:
            matched[r], ious[r], taken[best] = best, iou[r, best], True
    return matched, ious


def boxes_from_mask(mask: np.ndarray, min_pixels: int = 1) -> np.ndarray:
    """One box per connected component of a lesion mask (what a detector trained on BUSI should find)."""
    from scipy import ndimage

    labels, count = ndimage.label(np.asarray(mask) > 0)
    boxes = []
    for sl, size in zip(ndimage.find_objects(labels), np.bincount(labels.ravel())[1:]):
        if sl is not None and size >= min_pixels:
            boxes.append([sl[1].start, sl[0].start, sl[1].stop, sl[0].stop])
    return np.asarray(boxes, np.float32).reshape(-1, 4)
