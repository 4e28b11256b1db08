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

NPZ_IMAGE_KEYS = ("images", "test_images", "val_images", "train_images")


@dataclass
class ImageSet:
    path: Path
    names: list[str]
    _files: list[Path] | None = None
    _array: np.ndarray | None = None

    @classmethod
    def open(cls, path: str | Path, key: str | None = None) -> ImageSet:
        path = Path(path)
        if path.is_dir():
            files = list_images(path)
            if not files:
                raise InputError(f"{path}: the folder holds no images",
                                 "add PNG, JPEG, TIFF, NPY or DICOM files, or pass an .npz")
            return cls(path, [f.name for f in files], _files=files)
        if path.is_file() and path.suffix.lower() == ".npz":
            try:
                data = np.load(path, allow_pickle=False)
            except (ValueError, OSError) as exc:
                raise InputError(f"{path}: not a readable .npz ({exc})", "save with numpy.savez") from exc
            with data:
                chosen = key or next((k for k in NPZ_IMAGE_KEYS if k in data.files), None)
                if chosen is None or chosen not in data.files:
                    raise InputError(f"{path}: no image array {key or 'images'!r} (has {', '.join(data.files)})",
                                     "name the array with --calib-key / --data-key")
                array = data[chosen]
            if array.ndim not in (3, 4) or len(array) == 0:
                raise InputError(f"{path}: array {chosen!r} has shape {array.shape}, not (N,H,W) or (N,H,W,C)",
                                 "store a stack of images")
            return cls(path, [f"{chosen}[{i}]" for i in range(len(array))], _array=array)
        if path.is_file():
            return cls(path, [path.name], _files=[path])
        raise InputError(f"{path}: no such folder or file", "pass a folder of images or an .npz")

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, count: int | None) -> ImageSet:
        """An evenly spaced, deterministic subset (every class of a sorted set stays represented)."""
        if count is None or count >= len(self):
            return self
        if count < 1:
            raise InputError(f"asked for {count} images", "use a count of at least 1")
        return self.select(np.linspace(0, len(self) - 1, count).round().astype(int).tolist())

    def select(self, idx: list[int]) -> ImageSet:
        return ImageSet(
            self.path,
            [self.names[i] for i in idx],
            _files=[self._files[i] for i in idx] if self._files is not None else None,
            _array=self._array[idx] if self._array is not None else None,
        )

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        if self._array is not None:
            yield from zip(self.names, self._array)
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
        else:
            for f in self._files or []:
                h.update(f.name.encode())
                h.update(hashlib.sha256(f.read_bytes()).digest())
        return h.hexdigest()
