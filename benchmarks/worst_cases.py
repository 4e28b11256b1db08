"""The cases a person should look at after a bench run, stored small with the run for the HTML report.

Figures say how often an artifact is wrong; the cases say how. For every task, the few cases where
an artifact differs most from the FP32 reference (what quantization changed) and, with ground
truth, the ones it gets most wrong (what the model cannot do): the frame as a small PNG with the
answer drawn (mask, boxes), or for a beat window its trace, with a one-line caption.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

from edgemed.tasks import task_named

THUMB = 192  # pixels on the longer side
TRACE_POINTS = 180


def _png(rgb: np.ndarray) -> str:
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    img.thumbnail((THUMB, THUMB))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _picture(frame: Any, result: Any, task: str, labels: list[str]) -> dict:
    """A PNG of an image frame with the answer drawn, or the trace of a beat window."""
    samples = getattr(frame, "samples", None)
    if samples is not None:  # a beat window (edgemed Signal): its first lead, at most TRACE_POINTS points
        x = np.asarray(samples)[:, 0]
        step = max(1, len(x) // TRACE_POINTS)
        return {"trace": [round(float(v), 4) for v in x[::step]]}
    return {"png": _png(task_named(task).render(frame, result, labels))}


def versus_fp32(task: str, names: list[str], frames: list, results: list, comparison: Any, labels: list[str],
                fp32_masks: list | None = None) -> list[dict]:
    """Where this artifact's answer differs most from FP32's on the bench data (empty when it never does); the task
    chooses the cases and says how each differs."""
    out = []
    for i, caption in task_named(task).worst_vs_fp32(comparison.per_case, results, labels):
        item = {"name": names[i], "caption": f"{names[i]}: {caption}", **_picture(frames[i], results[i], task, labels)}
        if fp32_masks is not None:  # maps: FP32's beside this artifact's
            from edgemed.io.overlay import overlay

            item["fp32_png"] = _png(overlay(frames[i], fp32_masks[i]))
        out.append(item)
    return out


def versus_truth(task: str, names: list[str], frames: list, results: list, truth: list,
                 labels: list[str]) -> list[dict]:
    """The cases this artifact gets most wrong against the ground truth."""
    return [{"name": names[i], "caption": f"{names[i]}: {caption}", **_picture(frames[i], results[i], task, labels)}
            for i, caption in task_named(task).worst_vs_truth(truth, results, labels)]
