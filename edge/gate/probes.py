"""The bundle's reference probes and the outputs recorded on them, for any task.

``reference.npz`` holds the probe inputs (after preprocessing), FP32's outputs on them and each
artifact's own outputs (``verify`` holds a device to those). Classifiers and segmenters store one
stacked array per source; detectors store each probe's detections (their counts differ), as
``PREFIX#i:boxes`` / ``:scores`` / ``:classes``.
"""

from __future__ import annotations

import numpy as np

from ..detection import Detections
from ..tasks import task_named


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
    if not task_named(task).ragged_outputs:  # one array of every case's outputs
        return data.get(prefix)
    if f"{prefix}#0:boxes" not in data and cases:
        return None
    return [Detections(data[f"{prefix}#{i}:boxes"], data[f"{prefix}#{i}:scores"], data[f"{prefix}#{i}:classes"])
            for i in range(cases)]


def probe_input_key(name: str) -> str:
    """Where ``reference.npz`` keeps the probes' feature input ``name``, beside their main tensors (``inputs``)."""
    return f"inputs:{name}"


def engine_outputs(pipe, reference: dict[str, np.ndarray]):
    """A pipeline's engine on the bundle's preprocessed probes (``reference.npz``: ``inputs``, and each feature
    input's beside them as ``inputs:NAME``), read as drift compares them."""
    missing = [s.name for s in pipe.features.specs if probe_input_key(s.name) not in reference]
    if missing:
        from ..errors import InputError

        raise InputError(f"the probes lack the model's {', '.join(missing)} input(s)",
                         "probe a model with inputs beside the main one with its bundle's own reference probes")
    extra = {s.name: reference[probe_input_key(s.name)] for s in pipe.features.specs} or None
    return pipe.reader.run(pipe.engine, pipe.input_name, reference["inputs"], extra)


def probe_feed(bundle, count: int = 1) -> dict[str, np.ndarray]:
    """The bundle's first ``count`` reference probes as an engine feed: every input by name (the main one and any
    feature inputs beside it)."""
    reference = bundle.reference()
    m = bundle.manifest
    feed = {m.input.name: reference["inputs"][:count]}
    for spec in m.features:
        feed[spec.name] = reference[probe_input_key(spec.name)][:count]
    return feed
