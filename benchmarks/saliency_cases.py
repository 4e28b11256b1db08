"""Saliency drift on the bench data, and its worst cases as pictures for the HTML report (issue 22.4).

Convert gates every artifact of an ``--explain`` bundle on saliency drift (:mod:`edgemed.gate.saliency_drift`) and
records the figures, not the cases: a figure says how much a map moved, a picture says how. Bench already holds
the raw frames, the FP32 reference and each artifact, so it judges the term again on its data by the gate's own
rule (the candidate's map of FP32's class against FP32's map, at the model's input size) and keeps the few cases
whose maps rank-correlate least, each as two small PNGs (FP32's map and the artifact's, drawn over the frame as
``predict --out`` draws them) with a caption naming the case and its figures. Stored with the run (a few kB per
case), so the report needs no bundle and older bundles and history rows are read as before.
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np

from edgemed.gate.saliency_drift import compare_maps, judge_saliency
from edgemed.io.saliency_overlay import heat_overlay
from edgemed.tasks.base import SHOWN

from .worst_cases import _png


def has_saliency_term(artifact: Any) -> bool:
    """Whether convert judged this artifact on saliency drift (its drift record holds the ``saliency_*`` figures)."""
    return any(name.startswith("saliency_") for name in (artifact.drift.metrics if artifact.drift else {}))


def class_maps(pipe: Any, frames: list, classes: list[int] | None = None) -> tuple[list[int], list[Any]]:
    """Per frame: the class whose map is taken (the pipeline's own answer, or ``classes[i]``: FP32's) and that
    class's map, lazy (:class:`edgemed.explain.saliency.LazySaliency`: the feature map is kept, the picture
    made only for the cases shown)."""
    chosen, maps = [], []
    for i, frame in enumerate(frames):
        prepared = pipe.prepare(frame)
        outputs = pipe.infer(prepared)
        result = pipe.finish(outputs, prepared)  # checks the outputs are finite, as every result's are
        index = result.index if classes is None else classes[i]
        chosen.append(index)
        maps.append(pipe.explainer.pending(outputs, index, prepared.geometry))
    return chosen, maps


def _input_map(lazy: Any) -> np.ndarray:
    """The map at the model's input size, no frame geometry: what the gate compares."""
    from edgemed.explain.saliency import to_frame

    return to_frame(lazy.model_map(), lazy.input_hw, [])


def versus_fp32(names: list[str], frames: list, labels: list[str], classes: list[int], fp32_maps: list,
                maps: list) -> dict:
    """The term judged on the bench data (``saliency_on_data``: verdict, cases, figures with bounds) and the
    ``worst_saliency`` cases (at most :data:`SHOWN`, lowest rank correlation first; a case whose two pictures are
    the same pixels is not shown: nothing visible moved there)."""
    reference = [_input_map(m) for m in fp32_maps]
    candidate = [_input_map(m) for m in maps]
    term = judge_saliency(zip(reference, candidate))
    worst = []
    for i in term.worst_cases[:SHOWN]:
        fp32_picture, picture = heat_overlay(frames[i], fp32_maps[i]()), heat_overlay(frames[i], maps[i]())
        if np.array_equal(fp32_picture, picture):  # FP32 artifacts: maps apart by round-off, not one pixel drawn
            break
        rank, overlap, pointing = compare_maps(reference[i], candidate[i])
        worst.append({
            "name": names[i], "saliency_rank": rank, "saliency_overlap": overlap,
            "saliency_pointing": pointing,
            "caption": f"{names[i]}: saliency rank correlation {rank:.4f}, top-10% overlap {overlap:.2f}, hottest "
                       f"pixel {'inside' if pointing else 'outside'} FP32's top 10% (maps of FP32's class "
                       f"{labels[classes[i]]}; left FP32, right this artifact)",
            "fp32_png": _png(fp32_picture), "png": _png(picture)})
    on_data = {"verdict": term.verdict, "cases": term.cases, "metrics": msgspec.to_builtins(term.metrics),
               "missed": term.missed}
    return {"saliency_on_data": on_data, "worst_saliency": worst}
