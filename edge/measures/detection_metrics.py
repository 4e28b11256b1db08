"""Detector accuracy against ground truth: COCO mAP (pycocotools) and FROC, as medical detection reports it.

mAP@0.5 and mAP@[.5:.95] come from pycocotools' own evaluator (the reference implementation).
FROC, the figure of medical detection challenges (LUNA16, DeepLesion), is lesion sensitivity at
a given number of false positives per image: 1/8, 1/4, 1/2, 1, 2, 4 and 8. A detection hits a
lesion when it has the lesion's class and IoU >= 0.5 with it; each lesion counts once.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import numpy as np

from ..detection import Detections, box_iou

FROC_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def _truth(item) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth per image: boxes (M,4), or (boxes, classes)."""
    if isinstance(item, tuple):
        return np.asarray(item[0], np.float64).reshape(-1, 4), np.asarray(item[1], np.int64)
    boxes = np.asarray(item, np.float64).reshape(-1, 4)
    return boxes, np.zeros(len(boxes), np.int64)


def coco_ap(truth: Sequence, detections: Sequence[Detections], labels: Sequence[str]) -> tuple[float, float]:
    """(mAP@0.5, mAP@[.5:.95]) over images and classes, by pycocotools' COCOeval."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        from ..errors import BackendUnavailable

        raise BackendUnavailable("grading a detector needs pycocotools, which is not installed here",
                                 "pip install 'edgemed[bench]'") from None

    images, annotations, results = [], [], []
    for i, (item, det) in enumerate(zip(truth, detections)):
        boxes, classes = _truth(item)
        images.append({"id": i, "width": 1, "height": 1})
        for b, c in zip(boxes, classes):
            w, h = float(b[2] - b[0]), float(b[3] - b[1])
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(c) + 1,
                                "bbox": [float(b[0]), float(b[1]), w, h], "area": w * h, "iscrowd": 0})
        for b, s, c in zip(det.boxes, det.scores, det.classes):
            results.append({"image_id": i, "category_id": int(c) + 1, "score": float(s),
                            "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]})
    if not annotations:
        return float("nan"), float("nan")
    if not results:
        return 0.0, 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations,
                      "categories": [{"id": k + 1, "name": n} for k, n in enumerate(labels)]}
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluator.params.areaRng = [[0, 1e10]] * 4  # lesions are not COCO's small/medium/large objects
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[1]), float(evaluator.stats[0])


def froc(truth: Sequence, detections: Sequence[Detections], rates: Sequence[float] = FROC_RATES,
         iou_threshold: float = 0.5) -> dict[float, float]:
    """Lesion sensitivity at each false-positives-per-image rate (the best reached at or below it)."""
    events = []  # (score, image, detection index)
    for i, det in enumerate(detections):
        events += [(float(s), i, j) for j, s in enumerate(det.scores)]
    events.sort(key=lambda e: -e[0])
    lesions = sum(len(_truth(t)[0]) for t in truth)
    if not lesions:
        return {r: float("nan") for r in rates}
    hit: list[np.ndarray] = [np.zeros(len(_truth(t)[0]), bool) for t in truth]
    ious = [box_iou(d.boxes, _truth(t)[0]) for d, t in zip(detections, truth)]
    tp = fp = 0
    curve = [(0.0, 0.0)]
    for k, (score, i, j) in enumerate(events):
        classes = _truth(truth[i])[1]
        options = np.where(~hit[i] & (classes == detections[i].classes[j]), ious[i][j], -1.0)
        best = int(np.argmax(options)) if options.size else -1
        if best >= 0 and options[best] >= iou_threshold:
            hit[i][best] = True
            tp += 1
        else:
            fp += 1
        if k + 1 == len(events) or events[k + 1][0] != score:  # all detections at this score counted
            curve.append((fp / len(truth), tp / lesions))
    return {r: max(s for f, s in curve if f <= r) for r in rates}


def lesion_hits(truth_item, det: Detections, iou_threshold: float = 0.5) -> tuple[np.ndarray, int]:
    """Which ground-truth lesions a detection finds (same class, IoU >= 0.5, one detection per lesion),
    and how many detections found none (false positives)."""
    from ..detection import match

    boxes, classes = _truth(truth_item)
    gt = Detections(boxes.astype(np.float32), np.ones(len(boxes), np.float32), classes)
    found, _ = match(gt, det, iou_threshold)
    return found >= 0, len(det) - int((found >= 0).sum())


MAP_RESAMPLES = 200  # bootstrap resamples of images for mAP's interval (~0.1 s each for 100 images here)


def detection_report(truth: Sequence, detections: Sequence[Detections], labels: Sequence[str]) -> dict:
    """Against ground truth: lesion sensitivity and false positives per image at the bundle's operating
    threshold, mAP@0.5 and mAP@[.5:.95] (pycocotools), FROC; each with its counts and 95% bounds
    (exact for sensitivities, a bootstrap over images for mAP)."""
    from .metrics import _proportion
    from .stats import CONFIDENCE, SEED

    hits, fps = zip(*[lesion_hits(t, d) for t, d in zip(truth, detections)]) if truth else ((), ())
    found = np.concatenate(hits) if hits else np.zeros(0, bool)
    images = len(truth)
    map50, map5095 = coco_ap(truth, detections, labels)
    out = {"images": images, "lesions": int(found.size),
           "sensitivity": _proportion(int(found.sum()), int(found.size)),
           "false_positives_per_image": {"value": float(np.mean(fps)) if fps else None, "images": images},
           "map50": map50, "map50_95": map5095}
    if images >= 10 and found.size and not np.isnan(map50):
        rng = np.random.default_rng(SEED)
        draws = []
        for _ in range(MAP_RESAMPLES):
            pick = rng.integers(0, images, images)
            draws.append(coco_ap([truth[i] for i in pick], [detections[i] for i in pick], labels)[0])
        draws = np.asarray([d for d in draws if not np.isnan(d)])
        alpha = 1 - CONFIDENCE
        out["map50_interval"] = {"value": map50, "cases": images, "low": float(np.quantile(draws, alpha)),
                                 "high": float(np.quantile(draws, 1 - alpha)),
                                 "method": f"percentile bootstrap over images, {len(draws)} resamples"}
    curve = froc(truth, detections)
    lesions = int(found.size)
    out["froc"] = {str(rate): _proportion(int(round(s * lesions)), lesions) if lesions else None
                   for rate, s in curve.items()}
    return out
