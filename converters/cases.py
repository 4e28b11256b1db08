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


CaseInput = np.ndarray | tuple  # the main (1, ...) tensor, or it and each feature input's (1, K) beside it


def as_feed(names: list[str], x: CaseInput) -> dict[str, np.ndarray]:
    """A case's input as an engine feed: ``names`` are the model's inputs, the main one first."""
    return {names[0]: x} if isinstance(x, np.ndarray) else dict(zip(names, x))


class CaseStore:
    """Named cases: a preprocessed input (1, ...) each (with any feature inputs beside it) and, once set, the FP32
    reference's output on it (an array or a case's detections)."""

    _ids = itertools.count()

    def __init__(self, directory: Path, label: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        stem = directory / f"{label}-{next(self._ids)}"
        self.label = label
        self.names: list[str] = []
        self._stem = stem
        self._inputs = _Arrays(stem.with_suffix(".inputs"))
        self._extra: list[_Arrays] = []  # one per feature input, when cases have them
        self._outputs = _Arrays(stem.with_suffix(".outputs"))
        self._objects: list[Any] = []  # outputs that are not arrays (detections)

    def __len__(self) -> int:
        return len(self.names)

    def add(self, name: str, tensor: CaseInput) -> None:
        arrays = (tensor,) if isinstance(tensor, np.ndarray) else tensor
        if not self.names and len(arrays) > 1:
            self._extra = [_Arrays(self._stem.with_suffix(f".inputs{i}")) for i in range(1, len(arrays))]
        if len(arrays) != 1 + len(self._extra):
            raise ValueError(f"case with {len(arrays)} inputs in a store of {1 + len(self._extra)}")
        self.names.append(name)
        for store, array in zip([self._inputs, *self._extra], arrays):
            store.append(array)

    def add_output(self, output: Any) -> None:
        if isinstance(output, np.ndarray):
            self._outputs.append(output)
        else:
            self._objects.append(output)

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        return self._inputs.shape

    def inputs(self) -> Iterator[CaseInput]:
        if not self._extra:
            return iter(self._inputs)
        return zip(self._inputs, *self._extra)

    def input(self, i: int) -> CaseInput:
        if not self._extra:
            return self._inputs.get(i)
        return tuple(store.get(i) for store in [self._inputs, *self._extra])

    def output(self, i: int) -> Any:
        return self._outputs.get(i) if self._outputs.count else self._objects[i]

    def outputs(self) -> Iterator[Any]:
        return iter(self._outputs) if self._outputs.count else iter(self._objects)

    def first_inputs(self, count: int) -> np.ndarray:
        """The first ``count`` main inputs stacked (the bundle's reference probes)."""
        first = list(itertools.islice(iter(self._inputs), count))
        return np.concatenate(first) if first else np.zeros((0,), np.float32)

    def first_extra(self, count: int) -> list[np.ndarray]:
        """The first ``count`` cases' feature inputs, stacked per input (beside :meth:`first_inputs`)."""
        return [np.concatenate(list(itertools.islice(iter(store), count))) for store in self._extra]

    def first_outputs(self, count: int) -> Any:
        first = list(itertools.islice(self.outputs(), count))
        if first and isinstance(first[0], np.ndarray):
            return np.concatenate(first).astype(np.float32)
        return first


def fill(store: CaseStore, tensors: Iterable[tuple[str, CaseInput]]) -> CaseStore:
    for name, tensor in tensors:
        store.add(name, tensor)
    return store
