"""Segmentation: a label per pixel, at the frame's own size."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..postprocess import segmentation_mask
from ..results import SegmentationResult
from .base import ServedTensor


class Segmentation:
    name = "segmentation"
    # What changes care is a lesion that appears or vanishes, and per case the masks must still overlap at
    # Dice >= 0.99: boundary pixels that move by one do not fail an artifact, a changed finding does. Lesion
    # agreement is held at 99%: segmentation data sets have hundreds of masks, not thousands, and the lesion-level
    # certificate (a case keeps its call if no pixel's margin moves further than the call is from changing) is
    # conservative; at 99.9% every quantized segmenter here stayed uncertified, FP16 included. A stricter budget is
    # one --drift-budget away.
    default_budget = "lesion_agreement>=0.99,case_dice>=0.99"
    one_frame_per_call = False

    def finish(self, outputs, pipe, prepared) -> SegmentationResult:
        mask, _ = segmentation_mask(outputs[pipe.output_name], pipe.output_kind, prepared.geometry)
        return SegmentationResult(mask, pipe.labels)

    def served_outputs(self, labels: Sequence[str]) -> list[ServedTensor]:
        return [ServedTensor("MASK", "TYPE_UINT8", (-1, -1))]

    def served_arrays(self, results: Sequence[SegmentationResult]) -> dict[str, np.ndarray]:
        return {"MASK": np.stack([r.mask for r in results]).astype(np.uint8)}

    def from_served(self, arrays: Mapping[str, np.ndarray], labels: list[str]) -> SegmentationResult:
        return SegmentationResult(np.asarray(arrays["MASK"][0], np.uint8), labels)

    def summary(self, record: Mapping[str, Any]) -> str:
        areas = ", ".join(f"{k} {v} px" for k, v in record["areas_px"].items())
        return f"mask {record['size'][0]}x{record['size'][1]}: {areas}"
