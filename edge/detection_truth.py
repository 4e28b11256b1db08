"""Ground-truth boxes for a detector, aligned with a set of images.

Accepted, each image's lesions as (boxes (M, 4) x1 y1 x2 y2 in the image's pixels, classes (M,)):

- a CSV with a header ``file,x1,y1,x2,y2,label``: one row per lesion; an image without lesions has
  one row with the box fields empty (so a forgotten image is an error, not a lesion-free one);
- a COCO JSON (``images`` with ``file_name``, ``annotations`` with ``bbox`` x, y, w, h and
  ``category_id``, ``categories`` named like the bundle's labels);
- a folder of lesion masks named like the images (what BUSI ships): one box per connected component
  of at least MIN_LESION_PX pixels, class 0;
- an ``.npz`` holding ``masks`` in the images' order, read the same way.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from .detection import boxes_from_mask
from .errors import InputError

MIN_LESION_PX = 16  # mask components smaller than this are annotation specks, not lesions (as in training)

Truth = tuple[np.ndarray, np.ndarray]


def _stem(name: str) -> str:
    return Path(name.split("#")[0].split("[")[0]).stem


def _class(value: str, path: Path, labels: list[str]) -> int:
    value = value.strip()
    if value in labels:
        return labels.index(value)
    if value.isdigit() and int(value) < len(labels):
        return int(value)
    raise InputError(f"{path}: class {value!r} is not one of the bundle's classes ({', '.join(labels)})",
                     "name each lesion's class as the bundle does, or by its index")


def from_masks(masks, labels: list[str]) -> list[Truth]:
    out = []
    for mask in masks:
        boxes = boxes_from_mask(mask, MIN_LESION_PX)
        out.append((boxes, np.zeros(len(boxes), np.int64)))
    return out


def _csv(path: Path, names: list[str], labels: list[str]) -> list[Truth]:
    rows: dict[str, list] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        wanted = {"file", "x1", "y1", "x2", "y2"}
        if not wanted <= set(reader.fieldnames or ()):
            raise InputError(f"{path}: a detector's labels need the columns file,x1,y1,x2,y2,label (has "
                             f"{','.join(reader.fieldnames or ())})", "one row per lesion; an empty box for an "
                             "image without lesions")
        for line, r in enumerate(reader, start=2):
            entries = rows.setdefault(_stem(r["file"]), [])
            if all(not (r[k] or "").strip() for k in ("x1", "y1", "x2", "y2")):
                continue
            try:
                box = [float(r[k]) for k in ("x1", "y1", "x2", "y2")]
            except (TypeError, ValueError):
                raise InputError(f"{path}:{line}: box {[r[k] for k in ('x1', 'y1', 'x2', 'y2')]} is not four "
                                 "numbers", "write pixel coordinates x1,y1,x2,y2") from None
            if not (np.isfinite(box).all() and box[2] > box[0] and box[3] > box[1]):
                raise InputError(f"{path}:{line}: box {box} is empty or inverted", "x2 > x1 and y2 > y1, in pixels")
            entries.append((box, _class(r.get("label") or labels[0], path, labels)))
    return [_pack(rows, name, path) for name in names]


def _coco(path: Path, names: list[str], labels: list[str]) -> list[Truth]:
    try:
        data = json.loads(path.read_text())
        files = {im["id"]: _stem(im["file_name"]) for im in data["images"]}
        categories = {c["id"]: c["name"] for c in data.get("categories", [])}
        rows: dict[str, list] = {stem: [] for stem in files.values()}
        for a in data["annotations"]:
            x, y, w, h = (float(v) for v in a["bbox"])
            name = categories.get(a["category_id"], str(a["category_id"]))
            rows[files[a["image_id"]]].append(([x, y, x + w, y + h], _class(name, path, labels)))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: not a COCO detection file ({type(exc).__name__}: {exc})",
                         "give images (id, file_name), annotations (image_id, bbox, category_id), categories") \
            from None
    return [_pack(rows, name, path) for name in names]


def _pack(rows: dict[str, list], name: str, path: Path) -> Truth:
    if _stem(name) not in rows:
        raise InputError(f"{path}: no entry for image {name}",
                         "list every image (an image without lesions: one row with an empty box)")
    entries = rows[_stem(name)]
    boxes = np.asarray([b for b, _ in entries], np.float32).reshape(-1, 4)
    return boxes, np.asarray([c for _, c in entries], np.int64)


def load_boxes(path: Path, names: list[str], labels: list[str], read_mask) -> list[Truth]:
    """Boxes per image from ``path`` (see the module docstring); ``read_mask`` reads a mask file."""
    if path.is_dir():
        by_stem = {p.stem: p for p in path.iterdir() if p.is_file()}
        missing = [n for n in names if _stem(n) not in by_stem]
        if missing:
            raise InputError(f"{path}: no mask for image {missing[0]}", "name each mask like its image")
        return from_masks([read_mask(by_stem[_stem(n)]) for n in names], labels)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _csv(path, names, labels)
    if suffix == ".json":
        return _coco(path, names, labels)
    raise InputError(f"{path}: not a detector's labels file", "pass a CSV file,x1,y1,x2,y2,label, a COCO JSON, a "
                     "folder of lesion masks, or an .npz with masks")
