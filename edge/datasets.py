"""Sets of images (and optional labels) for calibration, probes and benchmarks.

A set is a folder of image files or an ``.npz`` holding an image array. Images are yielded one
at a time so hundreds of calibration images never sit in memory at once, and every set has a
content hash so a bundle can record exactly which images calibrated it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .images import list_images, read_frames
from .set_base import IndexedSet, Npz
from .signal_sets import SignalSet, is_signal_set

NPZ_IMAGE_KEYS = ("images", "test_images", "val_images", "train_images")


@dataclass
class ImageSet(IndexedSet):
    path: Path
    names: list[str]
    _files: list[Path] | None = None
    _array: np.ndarray | None = None
    _frames: list[np.ndarray] | None = None  # an .npz of frames of different sizes (frame_000, frame_001, ...)

    @classmethod
    def open(cls, path: str | Path, key: str | None = None) -> ImageSet:
        """A folder or .npz of images, or (an .npz holding ``signals``) a :class:`SignalSet`."""
        path = Path(path)
        if path.is_dir():
            files = list_images(path)
            if not files:
                raise InputError(f"{path}: the folder holds no images",
                                 "add PNG, JPEG, TIFF, NPY or DICOM files, or pass an .npz")
            return cls(path, [f.name for f in files], _files=files)
        if path.is_file() and path.suffix.lower() == ".npz":
            if is_signal_set(path):
                return SignalSet.open(path)  # windows of a signal, with their rate and units
            with Npz(path, "image set") as data:
                if key is None and data.files and all(k.startswith("frame_") for k in data.files):
                    frames = [data[k] for k in sorted(data.files)]
                    return cls(path, sorted(data.files), _frames=frames)
                chosen = key or next((k for k in NPZ_IMAGE_KEYS if k in data.files), None)
                if chosen is None or chosen not in data.files:
                    raise InputError(f"{path}: no image array {key or 'images'!r} (has {', '.join(data.files)})",
                                     "name the array: --calib-key for convert, --data-key for bench")
                array = data[chosen]
            if array.ndim not in (3, 4) or len(array) == 0:
                raise InputError(f"{path}: array {chosen!r} has shape {array.shape}, not (N,H,W) or (N,H,W,C)",
                                 "store a stack of images")
            return cls(path, [f"{chosen}[{i}]" for i in range(len(array))], _array=array)
        if path.is_file():
            return cls(path, [path.name], _files=[path])
        raise InputError(f"{path}: no such folder or file", "pass a folder of images or an .npz")

    def select(self, idx: list[int]) -> ImageSet:
        return ImageSet(
            self.path,
            [self.names[i] for i in idx],
            _files=[self._files[i] for i in idx] if self._files is not None else None,
            _array=self._array[idx] if self._array is not None else None,
            _frames=[self._frames[i] for i in idx] if self._frames is not None else None,
        )

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        if self._array is not None:
            yield from zip(self.names, self._array)
            return
        if self._frames is not None:
            yield from zip(self.names, self._frames)
            return
        assert self._files is not None
        for f in self._files:
            frames = read_frames(f)
            for i, frame in enumerate(frames):
                yield (f.name if len(frames) == 1 else f"{f.name}#{i}"), frame

    def sha256(self) -> str:
        h = hashlib.sha256()
        if self._array is not None:
            h.update(str(self._array.shape).encode())
            h.update(np.ascontiguousarray(self._array).tobytes())
        elif self._frames is not None:
            for name, frame in zip(self.names, self._frames):
                h.update(f"{name}{frame.shape}{frame.dtype}".encode())
                h.update(np.ascontiguousarray(frame).tobytes())
        else:
            for f in self._files or []:
                h.update(f.name.encode())
                h.update(hashlib.sha256(f.read_bytes()).digest())
        return h.hexdigest()


def load_labels(labels: str | Path | None, images: ImageSet, task: str, label_names: list[str]) -> list | None:
    """Ground truth aligned with ``images``: class indices (classification), masks (segmentation), or
    (boxes, classes) per image (detection: :mod:`edgemed.detection_truth`).

    Accepted: a CSV ``file,label`` (label as a name or an index), a folder of masks named like the
    images (any image type; 0/255 masks read as 0/1), or an ``.npz`` with ``labels``/``masks`` in
    the same order as the images (the images' own .npz when ``labels`` is None and it has them).
    """
    import csv

    if labels is None:
        if images._array is None:
            return None
        labels = images.path
    path = Path(labels)
    if not path.exists():
        raise InputError(f"{path}: no such labels file or folder", "check the path given with --labels")
    if task == "detection" and path.suffix.lower() != ".npz":
        from .detection_truth import load_boxes

        return load_boxes(path, images.names, label_names, lambda p: read_frames(p)[0])
    if path.suffix.lower() == ".npz":
        with Npz(path, "labels file") as data:
            key = "masks" if task in ("segmentation", "detection") else "labels"
            # Images read from "test_images" are labelled by "test_labels" (MedMNIST's layout).
            array = images.names[0].split("[")[0] if images._array is not None and images.path == path else ""
            paired = array.removesuffix("images") + key if array.endswith("images") else None
            if paired in data.files:
                key = paired
            elif key not in data.files:
                key = next((k for k in data.files if k.endswith(f"_{key}")), None)
            if key is None:
                return None if labels == images.path else _missing(path, task)
            values = data[key]
        if values.ndim == 0 or values.dtype.kind not in "uifb":
            raise InputError(f"{path}: {key!r} holds {values.dtype} of shape {values.shape}, not one label per image",
                             "store an integer array, one class index (or mask) per image")
        if images._array is not None and len(values) >= len(images) and images.path == path:
            idx = [int(n.split("[")[1].rstrip("]")) for n in images.names]
            values = values[idx]
        if len(values) != len(images):
            raise InputError(f"{path}: {len(values)} labels for {len(images)} images", "give one label per image")
        if task == "detection":
            from .detection_truth import from_masks

            return from_masks(values, label_names)
        if task == "segmentation":
            return [np.asarray(v) for v in values]
        return _class_indices(values, path, label_names)
    if path.is_dir():
        if task != "segmentation":
            raise InputError(f"{path}: a folder of masks is for segmentation", "give a CSV file,label for classes")
        masks = []
        by_stem = {p.stem: p for p in path.iterdir() if p.is_file()}
        for name in images.names:
            stem = Path(name.split("#")[0]).stem
            if stem not in by_stem:
                raise InputError(f"{path}: no mask for image {name}", "name each mask like its image")
            mask = read_frames(by_stem[stem])[0]
            masks.append((mask > 0).astype(np.uint8) if mask.max() == 255 and len(label_names) == 2 else mask)
        return masks
    if path.suffix.lower() == ".csv":
        if task == "segmentation":
            raise InputError(f"{path}: a CSV of class labels cannot grade a segmenter, which is compared with masks",
                             "pass a folder of masks named like the images, or an .npz with a 'masks' array")
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
    return _missing(path, task)


def _class_indices(values: np.ndarray, path: Path, names: list[str]) -> list[int]:
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


def _index(value: str, path: Path, names: list[str]) -> int:
    if value.isdigit() and int(value) < max(2, len(names)):
        return int(value)
    raise InputError(f"{path}: label {value!r} is neither a class name ({', '.join(names)}) nor an index",
                     "use the bundle's class names")


def _missing(path: Path, task: str):
    raise InputError(f"{path}: not a labels file", "pass a CSV file,label, a mask folder, or an .npz with "
                     + ("masks" if task == "segmentation" else "labels"))
