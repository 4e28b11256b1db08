"""Readers of ground-truth files, one per form a user has: an ``.npz`` array aligned with the images, a CSV
``file,label``, a folder of masks named like the images. Which forms a task accepts, and what it makes of
them, is the task's (:meth:`edgemed.tasks.base.Task.load_truth`); :func:`edgemed.datasets.load_labels` is
the one entry point.

The image set is read only for its ``names``, ``path`` and whether it is an array (``_array``), so signal
sets are labelled the same way.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..io.images import read_frames
from ..set_base import Npz


def npz_values(path: Path, images: Any, key: str) -> tuple[str, np.ndarray] | None:
    """The array of ``key`` ("labels" or "masks") in an .npz, one entry per image, in the images' order; None
    where the file has none (the caller decides whether that is an error). Images read from "test_images" are
    labelled by "test_labels" (MedMNIST's layout); an array ``*_labels`` is taken where ``labels`` is absent."""
    with Npz(path, "labels file") as data:
        array = images.names[0].split("[")[0] if images._array is not None and images.path == path else ""
        paired = array.removesuffix("images") + key if array.endswith("images") else None
        if paired in data.files:
            key = paired
        elif key not in data.files:
            key = next((k for k in data.files if k.endswith(f"_{key}")), None)
        if key is None:
            return None
        values = data[key]
    if values.ndim == 0 or values.dtype.kind not in "uifb":
        raise InputError(f"{path}: {key!r} holds {values.dtype} of shape {values.shape}, not one label per image",
                         "store an integer array, one class index (or mask) per image")
    if images._array is not None and len(values) >= len(images) and images.path == path:
        idx = [int(n.split("[")[1].rstrip("]")) for n in images.names]
        values = values[idx]
    if len(values) != len(images):
        raise InputError(f"{path}: {len(values)} labels for {len(images)} images", "give one label per image")
    return key, values


def class_indices(values: np.ndarray, path: Path, names: list[str]) -> list[int]:
    """One whole-number class index per image, each naming one of the model's classes (an index beyond them
    reached the metrics as an IndexError)."""
    flat = values.reshape(len(values), -1)
    classes = max(2, len(names))
    if flat.shape[1] != 1 or not np.isfinite(flat).all() or (flat != np.round(flat)).any() \
            or ((flat < 0) | (flat >= classes)).any():
        raise InputError(f"{path}: labels must be one class index 0..{classes - 1} per image, got values of shape "
                         f"{values.shape} in {values.min()}..{values.max()}" if values.size else
                         f"{path}: the labels are empty", "store the index of each image's class")
    return [int(v) for v in flat[:, 0]]


def mask_folder(path: Path, images: Any, label_names: list[str]) -> list[np.ndarray]:
    """One mask per image from a folder of files named like the images (0/255 masks of two classes read as 0/1)."""
    masks = []
    by_stem = {p.stem: p for p in path.iterdir() if p.is_file()}
    for name in images.names:
        stem = Path(name.split("#")[0]).stem
        if stem not in by_stem:
            raise InputError(f"{path}: no mask for image {name}", "name each mask like its image")
        mask = read_frames(by_stem[stem])[0]
        masks.append((mask > 0).astype(np.uint8) if mask.max() == 255 and len(label_names) == 2 else mask)
    return masks


def csv_classes(path: Path, images: Any, label_names: list[str]) -> list[int]:
    """One class index per image from a CSV ``file,label`` (a label is a class name or an index)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not {"file", "label"} <= set(reader.fieldnames or ()):
                raise InputError(f"{path}: the CSV header is {reader.fieldnames}, not file,label",
                                 "write a header line: file,label")
            rows = {r["file"]: r["label"] for r in reader}
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: not a readable CSV ({str(exc)[:120]})", "write UTF-8 text: file,label") from exc
    out = []
    for name in images.names:
        value = rows.get(name.split("#")[0])
        if not value:
            raise InputError(f"{path}: no label for {name}", "add a row file,label for every image")
        out.append(label_names.index(value) if value in label_names else _index(value, path, label_names))
    return out


def _index(value: str, path: Path, names: list[str]) -> int:
    if value.isdigit() and int(value) < max(2, len(names)):
        return int(value)
    raise InputError(f"{path}: label {value!r} is neither a class name ({', '.join(names)}) nor an index",
                     "use the bundle's class names")


def not_truth(path: Path, wanted: str):
    """The refusal of a file that is none of the forms a task reads."""
    raise InputError(f"{path}: not a labels file", f"pass a CSV file,label, a mask folder, or an .npz with {wanted}")
