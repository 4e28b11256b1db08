"""What drift, verify and bench compare: a model's raw outputs read the way its task needs.

Classifiers and segmenters are compared on their primary output, stacked over cases. Detectors
are compared on each case's detections (boxes, scores, classes at the model's input resolution),
because their raw outputs have no fixed size once NMS has run. One reader per bundle (or per
conversion), so every place that runs an engine on probes reads the outputs the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .manifest import DetectionPost


@dataclass(frozen=True)
class OutputReader:
    output_name: str | None = None  # the primary output (classification, segmentation)
    detection: DetectionPost | None = None

    def one(self, outputs: dict[str, np.ndarray]) -> Any:
        """One case's outputs (batch 1): the primary output, or its detections."""
        if self.detection is not None:
            from .detection_post import decode

            return decode(outputs, self.detection)
        return outputs[self.output_name]

    def collect(self, cases: list) -> Any:
        """Cases read by :meth:`one`, as drift compares them: stacked arrays, or a list of detections."""
        if self.detection is not None:
            return list(cases)
        return np.concatenate(cases).astype(np.float32)

    def run(self, engine: Any, input_name: str, inputs: np.ndarray, extra: dict[str, np.ndarray] | None = None) -> Any:
        """An engine's outputs on preprocessed inputs (and the feature inputs beside them, row by row), one case at
        a time (batch 1 always works)."""
        extra = extra or {}
        return self.collect([self.one(engine.infer({input_name: x[None], **{k: v[i:i + 1] for k, v in extra.items()}}))
                             for i, x in enumerate(inputs)])
