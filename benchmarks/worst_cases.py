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

SHOWN = 3  # cases per artifact and kind: enough to see a pattern, small enough to keep in every history row
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
    from edgemed.tasks import task_named

    return {"png": _png(task_named(task).render(frame, result, labels))}


def versus_fp32(task: str, names: list[str], frames: list, results: list, comparison: Any, labels: list[str],
                fp32_masks: list | None = None) -> list[dict]:
    """Where this artifact's answer differs most from FP32's on the bench data (empty when it never does)."""
    per = comparison.per_case
    out = []
    if task == "classification":
        order = np.lexsort((-per["abs_diff"], per["agree"]))  # changed calls first, then the largest shifts
        for i in order[:SHOWN]:
            i = int(i)
            fp32 = labels[int(per["fp32_class"][i])]
            r = results[i]
            if per["agree"][i] and per["abs_diff"][i] == 0:
                break
            verb = "kept" if per["agree"][i] else "changed to"
            out.append({"name": names[i], "caption": f"{names[i]}: FP32 calls {fp32}; this artifact {verb} {r.label} "
                        f"(p {float(np.max(r.probabilities)):.3f}; mean |output change| {per['abs_diff'][i]:.4f})",
                        **_picture(frames[i], r, task, labels)})
    elif task == "detection":
        for i in np.flatnonzero(~per["lesion_agree"])[:SHOWN]:
            i = int(i)
            out.append({"name": names[i], "caption": f"{names[i]}: a box appears or vanishes against FP32's "
                        f"({len(results[i].boxes)} box(es) here)", **_picture(frames[i], results[i], task, labels)})
    else:
        dice = per["dice"]
        for i in np.argsort(dice, kind="stable")[:SHOWN]:
            i = int(i)
            if dice[i] >= 1.0:
                break
            item = {"name": names[i], "caption": f"{names[i]}: Dice vs FP32 {dice[i]:.4f} (left FP32, right this "
                    "artifact)", **_picture(frames[i], results[i], task, labels)}
            if fp32_masks is not None:
                from edgemed.io.overlay import overlay

                item["fp32_png"] = _png(overlay(frames[i], fp32_masks[i]))
            out.append(item)
    return out


def versus_truth(task: str, names: list[str], frames: list, results: list, truth: list,
                 labels: list[str]) -> list[dict]:
    """The cases this artifact gets most wrong against the ground truth."""
    out = []
    if task == "classification":
        wrong = [(float(np.max(r.probabilities)), i) for i, (r, t) in enumerate(zip(results, truth)) if r.index != t]
        for p, i in sorted(wrong, reverse=True)[:SHOWN]:  # the most confident mistakes first
            out.append({"name": names[i], "caption": f"{names[i]}: called {results[i].label} (p {p:.3f}), truth "
                        f"{labels[int(truth[i])]}", **_picture(frames[i], results[i], task, labels)})
    elif task == "detection":
        from .detection_metrics import lesion_hits

        scored = []
        for i, (t, r) in enumerate(zip(truth, results)):
            hits, false = lesion_hits(t, r.detections)
            missed = int((~hits).sum())
            if missed or false:
                scored.append((missed + false, missed, false, len(hits), i))
        for _, missed, false, n, i in sorted(scored, reverse=True)[:SHOWN]:
            found = f"{missed} of {n} lesion(s) missed" if n else "no lesion in the ground truth"
            out.append({"name": names[i], "caption": f"{names[i]}: {found}, {false} false positive(s)",
                        **_picture(frames[i], results[i], task, labels)})
    else:
        from edgemed.measures.metrics import dice

        scores = [dice(np.asarray(t), r.mask, 1) for t, r in zip(truth, results)]
        for i in np.argsort(scores, kind="stable")[:SHOWN]:
            i = int(i)
            if scores[i] >= 1.0:
                break
            out.append({"name": names[i], "caption": f"{names[i]}: Dice vs ground truth {scores[i]:.3f}",
                        **_picture(frames[i], results[i], task, labels)})
    return out
