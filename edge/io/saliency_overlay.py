"""``predict --out`` for bundles converted with ``--explain``: STEM_saliency.png, the map as a heat overlay.

The map is blended over the frame with an opacity that grows with the map's value, so where the model did not
look the frame shows through unchanged; a caption says what the picture is (an explanation for quality
assurance, not a finding), because an overlay is easily read as a lesion outline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .overlay import _save_atomic, display_gray

# A blue -> cyan -> yellow -> red ramp (value, R, G, B): low values cool, the hottest red.
_RAMP = np.array([[0.0, 0, 0, 255], [0.35, 0, 220, 255], [0.65, 255, 230, 0], [1.0, 255, 0, 0]], np.float32)
CAPTION = "saliency (CAM): explanation, not a finding"


def heat_colours(saliency: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 colours of a map in [0, 1]."""
    s = np.clip(np.asarray(saliency, np.float32), 0.0, 1.0)
    return np.stack([np.interp(s, _RAMP[:, 0], _RAMP[:, i]) for i in (1, 2, 3)], axis=-1).astype(np.float32)


def heat_overlay(image: np.ndarray, saliency: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """The frame (grey or RGB, any dtype) with the map over it: per pixel opacity ``alpha * saliency``."""
    base = display_gray(image)
    rgb = np.repeat(base[:, :, None], 3, axis=2).astype(np.float32) if base.ndim == 2 else \
        base[:, :, :3].astype(np.float32)
    if saliency.shape != rgb.shape[:2]:
        raise ValueError(f"a {saliency.shape} map does not fit a {rgb.shape[:2]} frame")
    weight = (alpha * np.clip(saliency, 0.0, 1.0))[:, :, None]
    out = (1.0 - weight) * rgb + weight * heat_colours(saliency)
    return out.round().clip(0, 255).astype(np.uint8)


def saliency_picture(image: np.ndarray, saliency: np.ndarray) -> Image.Image:
    """The map over the frame with its caption: one rendering for ``predict --out`` and ``edgemed view``."""
    picture = Image.fromarray(heat_overlay(image, saliency))
    if min(picture.size) >= 96:  # a caption on frames large enough to hold one legibly
        ImageDraw.Draw(picture).text((3, 2), CAPTION, fill=(255, 255, 255))
    return picture


def write_saliency(out_dir: Path, stem: str, image: np.ndarray, saliency: np.ndarray) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stem}_saliency.png"
    _save_atomic(saliency_picture(image, saliency), path)
    return [path]
