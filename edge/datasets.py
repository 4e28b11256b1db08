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
from .io.images import list_images, read_frames
from .set_base import IndexedSet, Npz
from .signal_sets import SignalSet, is_signal_set
from .tasks import task_named

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

    def save(self, path: Path, count: int | None = None) -> None:
        """Write (a subset of) the frames as an .npz of ``frame_000``, ``frame_001``, ... (a bundle's sample frames,
        which may differ in size), which :meth:`open` reads back."""
        np.savez_compressed(path, **{f"frame_{i:03d}": image for i, (_, image) in enumerate(self.subset(count))})

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
    Which of these a task reads is the task's (:mod:`edgemed.tasks`, :mod:`edgemed.measures.truth`).
    """
    if labels is None:
        if images._array is None:
            return None
        labels = images.path
    path = Path(labels)
    if not path.exists():
        raise InputError(f"{path}: no such labels file or folder", "check the path given with --labels")
    return task_named(task).load_truth(path, images, label_names, implicit=labels == images.path)
