"""Segmentation: a label per pixel, at the frame's own size."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import stats, truth
from ..clinical import noninferiority_state
from ..errors import InputError
from ..manifest import PairedTest
from ..metrics import dice
from ..postprocess import segmentation_mask, segmentation_probabilities
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

    def figures(self, result: SegmentationResult, labels: list[str]) -> dict[str, str]:
        return {f"area {k}": f"{v} px" for k, v in result.areas.items()}

    def render(self, image: np.ndarray, result: SegmentationResult, labels: list[str]) -> np.ndarray:
        from ..overlay import overlay

        return overlay(image, result.mask)

    def load_truth(self, path: Path, images: Any, label_names: list[str], implicit: bool) -> list | None:
        if path.suffix.lower() == ".npz":
            found = truth.npz_values(path, images, "masks")
            if found is None:
                return None if implicit else truth.not_truth(path, "masks")
            return [np.asarray(v) for v in found[1]]
        if path.is_dir():
            return truth.mask_folder(path, images, label_names)
        if path.suffix.lower() == ".csv":
            raise InputError(f"{path}: a CSV of class labels cannot grade a segmenter, which is compared with masks",
                             "pass a folder of masks named like the images, or an .npz with a 'masks' array")
        return truth.not_truth(path, "masks")

    def clinical_tests(self, truth, fp32, cand, kind: str, labels: list[str], margin: float) -> dict[str, PairedTest]:
        """Per-case Dice of FP32 and the candidate against the masks, in one pass over the cases (outputs may
        stream from disk: a large segmenter's outputs are never all held at once)."""
        from PIL import Image

        def mask(output: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
            m = np.argmax(segmentation_probabilities(output, kind), axis=0).astype(np.uint8)
            if m.shape == shape:
                return m
            return np.asarray(Image.fromarray(m).resize(shape[::-1], Image.Resampling.NEAREST))

        classes = range(1, max(2, len(labels)))
        df: dict[int, list[float]] = {k: [] for k in classes}
        dc: dict[int, list[float]] = {k: [] for k in classes}
        for f, c, t in zip(fp32, cand, truth):
            mf, mc = mask(np.asarray(f), t.shape), mask(np.asarray(c), t.shape)
            for k in classes:
                df[k].append(dice(mf, t, k))
                dc[k].append(dice(mc, t, k))
        tests = {}
        for k in classes:
            a, b = np.array(df[k]), np.array(dc[k])
            lo, hi = stats.bootstrap_mean(a - b)
            name = labels[k] if k < len(labels) else str(k)
            tests[f"dice[{name}]"] = PairedTest(
                cases=len(a), fp32=float(a.mean()), candidate=float(b.mean()), drop=float((a - b).mean()),
                drop_low=lo, drop_high=hi, verdict=noninferiority_state(lo, hi, margin),
                method=f"mean per-case Dice vs ground truth of {name}, paired bootstrap over {len(a)} cases")
        return tests
