"""Result objects returned by Pipeline.predict, with a stable JSON form for the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ClassificationResult:
    label: str
    index: int
    probabilities: np.ndarray
    labels: list[str]
    timings: dict[str, float] = field(default_factory=dict)

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
