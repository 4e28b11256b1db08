"""The bundle's reference probes and the outputs recorded on them, for any task.

``reference.npz`` holds the probe inputs (after preprocessing), FP32's outputs on them and each
artifact's own outputs (``verify`` holds a device to those). Classifiers and segmenters store one
stacked array per source; detectors store each probe's detections (their counts differ), as
``PREFIX#i:boxes`` / ``:scores`` / ``:classes``.
"""

from __future__ import annotations

import numpy as np

from .detection import Detections


def pack(prefix: str, outputs) -> dict[str, np.ndarray]:
    if isinstance(outputs, np.ndarray):
        return {prefix: outputs}
    packed = {}
    for i, d in enumerate(outputs):
        packed.update({f"{prefix}#{i}:boxes": d.boxes, f"{prefix}#{i}:scores": d.scores,
                       f"{prefix}#{i}:classes": d.classes})
    return packed


def unpack(data: dict[str, np.ndarray], prefix: str, task: str, cases: int):
    """The stored outputs under ``prefix``, or None where the bundle has none."""
    if task != "detection":
        return data.get(prefix)
    if f"{prefix}#0:boxes" not in data and cases:
        return None
    return [Detections(data[f"{prefix}#{i}:boxes"], data[f"{prefix}#{i}:scores"], data[f"{prefix}#{i}:classes"])
            for i in range(cases)]


def engine_outputs(pipe, inputs: np.ndarray):
    """A pipeline's engine on preprocessed inputs, read as drift compares them."""
    return pipe.reader.run(pipe.engine, pipe.input_name, inputs)
