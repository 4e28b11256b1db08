"""From a detector's outputs to boxes in the original image's pixels.

A bundle's postprocess spec says which layout the model's outputs follow and where NMS runs:

- raw candidates (``edgemed``: boxes and per-class scores; ``yolo``: one (4+C, K) tensor of cx, cy,
  w, h and class scores) get the score threshold and class-aware NMS here, on the host;
- detections already through NMS (edgemed's NMS appended to the graph, or a torchvision model's own)
  get the threshold and the detection cap.

For what a user sees (:func:`finish`), candidates are mapped back through the preprocessing
geometry (crop, letterbox, resize) and clipped to the image *before* NMS, and boxes left with no
area are dropped: clipping after NMS left identical boxes (two candidates reaching past the same
edge become one box) and zero-area ones (a candidate wholly in the letterbox or off the frame).
NMS is the same in either frame (IoU does not change when both axes are scaled and shifted), so
only what clipping changes is new (where edgemed's NMS ran in the graph, the host applies it again
for that; after a torchvision model's own NMS, whose threshold the bundle does not know, only
near-identical boxes go). An image with no lesion gives zero boxes, a normal answer.
"""

from __future__ import annotations

import numpy as np

from .detection import Detections, nms
from .manifest import DetectionPost
from .preprocess import CropStep, ResizeStep

CXCYWH_TO_XYXY = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [-0.5, 0, 0.5, 0], [0, -0.5, 0, 0.5]], np.float32)


def candidates(outputs: dict[str, np.ndarray], post: DetectionPost) -> tuple[np.ndarray, np.ndarray]:
    """Raw candidates of one image: boxes (K, 4) xyxy, scores (K, C)."""
    if post.layout == "edgemed":
        return outputs[post.outputs["boxes"]][0], outputs[post.outputs["scores"]][0]
    raw = outputs[post.outputs["raw"]][0]  # (4 + C, K)
    return raw[:4].T @ CXCYWH_TO_XYXY, raw[4:].T


DUPLICATE_IOU = 0.95  # after a torchvision model's own NMS (its threshold unknown here), only near-identical boxes go


def above_threshold(outputs: dict[str, np.ndarray], post: DetectionPost) -> Detections:
    """One image's boxes scoring above the threshold at the model's input resolution, before any host NMS (after
    the graph's, where it has one)."""
    if post.form in ("nms", "torchvision"):
        boxes = np.asarray(outputs[post.outputs["boxes"]], np.float32).reshape(-1, 4)
        scores = np.asarray(outputs[post.outputs["scores"]], np.float32).reshape(-1)
        role = "classes" if post.form == "nms" else "labels"
        classes = np.asarray(outputs[post.outputs[role]]).reshape(-1).astype(np.int64) - post.label_offset
        return Detections(boxes, scores, classes).above(post.score_threshold)
    boxes, scores = candidates(outputs, post)
    cells, classes = np.nonzero(scores > post.score_threshold)
    if cells.size == 0:
        return Detections.empty()
    return Detections(boxes[cells].astype(np.float32), scores[cells, classes].astype(np.float32),
                      classes.astype(np.int64))


def _suppress(dets: Detections, post: DetectionPost) -> Detections:
    """Class-aware NMS at the bundle's threshold (host NMS, or edgemed's graph NMS again: what clipping changed) or,
    after a torchvision model's own NMS, duplicate removal; best first, at most max_detections."""
    if not len(dets):
        return Detections.empty()
    threshold = DUPLICATE_IOU if post.form == "torchvision" else post.iou_threshold
    keep = nms(dets.boxes, dets.scores, dets.classes, threshold, post.max_detections)
    return Detections(dets.boxes[keep], dets.scores[keep], dets.classes[keep])


def decode(outputs: dict[str, np.ndarray], post: DetectionPost) -> Detections:
    """One image's detections at the model's input resolution (what the drift gate compares)."""
    return _suppress(above_threshold(outputs, post), post)


def finish(outputs: dict[str, np.ndarray], post: DetectionPost, geometry: list, size: tuple[int, int]) -> Detections:
    """One image's detections on the original frame: mapped back, clipped, empty boxes dropped, then NMS."""
    dets = to_original(above_threshold(outputs, post), geometry, size)
    b = dets.boxes
    solid = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    return _suppress(Detections(b[solid], dets.scores[solid], dets.classes[solid]), post)


def to_original(dets: Detections, geometry: list, size: tuple[int, int]) -> Detections:
    """Boxes from the model's input back onto the original image, last preprocessing step first."""
    boxes = dets.boxes.astype(np.float64)  # a new array: the in-place steps below never touch the engine's
    # (x, y) pairs: each step is one broadcast op per axis pair, the same float64 arithmetic per coordinate as a
    # column at a time (17 -> 6 us for the BUSI detector's boxes; fancy-indexed columns copied twice per step)
    xy = boxes.reshape(-1, 2, 2)
    for step in reversed(geometry):
        if isinstance(step, CropStep):
            xy += (step.left, step.top)
        elif isinstance(step, ResizeStep):
            top, left, h, w = step.box
            xy -= (left, top)
            xy *= (step.src[1] / w, step.src[0] / h)
    np.clip(xy, 0, (size[1], size[0]), out=xy)
    return Detections(boxes.astype(np.float32), dets.scores, dets.classes)


def to_input(boxes: np.ndarray, geometry: list) -> np.ndarray:
    """Boxes from the original image onto the model's input, first preprocessing step first (the inverse of
    :func:`to_original`). Crops, resizes and letterboxes scale and shift each axis, so a box's IoU with
    another is the same in either frame: ground truth can be matched where the model's answers are."""
    out = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
    for step in geometry:
        if isinstance(step, CropStep):
            out[:, [0, 2]] -= step.left
            out[:, [1, 3]] -= step.top
        elif isinstance(step, ResizeStep):
            top, left, h, w = step.box
            out[:, [0, 2]] = out[:, [0, 2]] * (w / step.src[1]) + left
            out[:, [1, 3]] = out[:, [1, 3]] * (h / step.src[0]) + top
    return out.astype(np.float32)
