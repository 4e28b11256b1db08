"""Cases on scratch disk: preprocessed inputs and the FP32 reference's outputs, read back one case at a time.

Convert's memory must not grow with the data: a 584x568 U-Net's verdict on 1,000 images holds 1.3 GB of
inputs and 2.6 GB of two-class output maps, and its tuning set as much again. A :class:`CaseStore` keeps
them in plain files under the conversion's scratch directory (read with ``numpy.fromfile`` at an offset:
nothing is memory-mapped, so neither resident memory nor address space grows with the set) and yields
them case by case to whoever compares. Detections, whose size varies per case and is small, stay in memory.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np


class _Arrays:
    """Fixed-shape float32 arrays appended to one file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.shape: tuple[int, ...] | None = None
        self.count = 0

    def append(self, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array, dtype=np.float32)
        if self.shape is None:
            self.shape = array.shape
        elif array.shape != self.shape:
            raise ValueError(f"case of shape {array.shape} in a store of {self.shape}")
        with open(self.path, "ab") as f:
            array.tofile(f)
        self.count += 1

    def __iter__(self) -> Iterator[np.ndarray]:
        if not self.count:
            return
        size = int(np.prod(self.shape))
        with open(self.path, "rb") as f:
            for _ in range(self.count):
                yield np.fromfile(f, np.float32, size).reshape(self.shape)

    def get(self, i: int) -> np.ndarray:
        size = int(np.prod(self.shape))
        with open(self.path, "rb") as f:
            return np.fromfile(f, np.float32, size, offset=4 * size * i).reshape(self.shape)


class CaseStore:
    """Named cases: a preprocessed input (1, ...) each and, once set, the FP32 reference's output on it (an
    array or a case's detections)."""

    _ids = itertools.count()

    def __init__(self, directory: Path, label: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        stem = directory / f"{label}-{next(self._ids)}"
        self.label = label
        self.names: list[str] = []
        self._inputs = _Arrays(stem.with_suffix(".inputs"))
        self._outputs = _Arrays(stem.with_suffix(".outputs"))
        self._objects: list[Any] = []  # outputs that are not arrays (detections)

    def __len__(self) -> int:
        return len(self.names)

    def add(self, name: str, tensor: np.ndarray) -> None:
        self.names.append(name)
        self._inputs.append(tensor)

    def add_output(self, output: Any) -> None:
        if isinstance(output, np.ndarray):
            self._outputs.append(output)
        else:
            self._objects.append(output)

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        return self._inputs.shape

    def inputs(self) -> Iterator[np.ndarray]:
        return iter(self._inputs)

    def input(self, i: int) -> np.ndarray:
        return self._inputs.get(i)

    def output(self, i: int) -> Any:
        return self._outputs.get(i) if self._outputs.count else self._objects[i]

    def outputs(self) -> Iterator[Any]:
        return iter(self._outputs) if self._outputs.count else iter(self._objects)

    def first_inputs(self, count: int) -> np.ndarray:
        """The first ``count`` inputs stacked (the bundle's reference probes)."""
        first = list(itertools.islice(self.inputs(), count))
        return np.concatenate(first) if first else np.zeros((0,), np.float32)

    def first_outputs(self, count: int) -> Any:
        first = list(itertools.islice(self.outputs(), count))
        if first and isinstance(first[0], np.ndarray):
            return np.concatenate(first).astype(np.float32)
        return first


def fill(store: CaseStore, tensors: Iterable[tuple[str, np.ndarray]]) -> CaseStore:
    for name, tensor in tensors:
        store.add(name, tensor)
    return store
