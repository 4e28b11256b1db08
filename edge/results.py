"""Result objects returned by Pipeline.predict, with a stable JSON form for the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


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
            "task": "classification",
            "label": self.label,
            "index": int(self.index),
            "probabilities": {name: round(float(p), 6) for name, p in zip(self.labels, self.probabilities)},
            "timings_ms": {k: round(v * 1e3, 3) for k, v in self.timings.items()},
        }


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
            "task": "segmentation",
            "size": [int(self.mask.shape[0]), int(self.mask.shape[1])],
            "areas_px": self.areas,
            "areas_fraction": {k: round(v / total, 6) for k, v in self.areas.items()},
            "timings_ms": {k: round(v * 1e3, 3) for k, v in self.timings.items()},
        }


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
        from .detection import Detections

        return Detections(self.boxes, self.scores, self.classes)

    @property
    def names(self) -> list[str]:
        """The class name of each box."""
        return [self.labels[int(c)] if 0 <= int(c) < len(self.labels) else str(int(c)) for c in self.classes]

    def to_json(self) -> dict:
        return {
            "task": "detection",
            "count": int(len(self.scores)),
            "detections": [{"box": [round(float(v), 2) for v in b], "score": round(float(s), 6), "label": n,
                            "class": int(c)} for b, s, c, n in zip(self.boxes, self.scores, self.classes, self.names)],
            "timings_ms": {k: round(v * 1e3, 3) for k, v in self.timings.items()},
        }
