"""Writing segmentation results a person can check: the raw mask and a colour overlay."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from ..atomic import write_atomic

_COLOURS = np.array([[0, 0, 0], [255, 64, 64], [64, 200, 255], [255, 220, 0], [120, 255, 120]], dtype=np.float32)


def display_gray(image: np.ndarray) -> np.ndarray:
    """An 8-bit greyscale or RGB rendering of any frame (min-max scaled when not uint8)."""
    if image.dtype == np.uint8:
        return image
    x = image.astype(np.float32)
    lo, hi = float(x.min()), float(x.max())
    return np.zeros(x.shape, np.uint8) if hi <= lo else ((x - lo) / (hi - lo) * 255).round().astype(np.uint8)


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    base = display_gray(image)
    rgb = np.repeat(base[:, :, None], 3, axis=2).astype(np.float32) if base.ndim == 2 else base.astype(np.float32)
    colours = _COLOURS[np.minimum(mask, len(_COLOURS) - 1)]
    lesion = mask > 0
    rgb[lesion] = (1 - alpha) * rgb[lesion] + alpha * colours[lesion]
    # A one-pixel outline keeps the boundary visible where the fill is faint.
    edge = lesion & ~(np.roll(lesion, 1, 0) & np.roll(lesion, -1, 0) & np.roll(lesion, 1, 1) & np.roll(lesion, -1, 1))
    rgb[edge] = colours[edge]
    return rgb.clip(0, 255).astype(np.uint8)


def write_segmentation(out_dir: Path, stem: str, image: np.ndarray, mask: np.ndarray) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    mask_path, overlay_path = out_dir / f"{stem}_mask.png", out_dir / f"{stem}_overlay.png"
    _save_atomic(Image.fromarray(mask), mask_path)
    _save_atomic(Image.fromarray(overlay(image, mask)), overlay_path)
    return [mask_path, overlay_path]


def _save_atomic(img: Image.Image, path: Path) -> None:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    write_atomic(path, buffer.getvalue())


def draw_boxes(image: np.ndarray, boxes: np.ndarray, names: list[str], scores: np.ndarray,
               classes: np.ndarray) -> np.ndarray:
    """The frame with each detection's box outlined in its class colour and labelled with name and score."""
    from PIL import ImageDraw

    base = display_gray(image)
    rgb = Image.fromarray(np.repeat(base[:, :, None], 3, axis=2) if base.ndim == 2 else base[:, :, :3])
    draw = ImageDraw.Draw(rgb)
    width = max(1, round(max(rgb.size) / 256))
    for box, name, score, cls in zip(boxes, names, scores, classes):
        colour = tuple(int(v) for v in _COLOURS[1 + int(cls) % (len(_COLOURS) - 1)])
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=colour, width=width)
        draw.text((x1 + 2, max(0.0, y1 - 11)), f"{name} {score:.2f}", fill=colour)
    return np.asarray(rgb)


def write_detections(out_dir: Path, stem: str, image: np.ndarray, result) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stem}_boxes.png"
    _save_atomic(Image.fromarray(draw_boxes(image, result.boxes, result.names, result.scores, result.classes)), path)
    return [path]
