"""The Engine protocol: what every backend runner offers (Polygraphy's runner, ORT's plain run)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgemed.errors import InputError


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int | str, ...]  # str for symbolic (dynamic) dimensions
    dtype: str = "float32"


class Binding:
    """One thread's input array bound to the engine in place: write ``input``, call ``run()`` for fresh outputs.

    What a tuned hand-written pipeline does (ONNX Runtime IO binding, an OpenVINO tensor sharing the array's
    memory): the preprocessor writes straight into ``input`` and no call builds a feed. A model with feature inputs
    beside the main one has each bound too (``extra``, by input name). Not thread-safe: one per thread (the
    Pipeline keeps them so)."""

    input: np.ndarray
    extra: dict[str, np.ndarray] = {}

    def run(self) -> dict[str, np.ndarray]:  # pragma: no cover - overridden
        raise NotImplementedError


class Engine:
    """Base runner: validates feeds, offers a context manager, and describes itself.

    Subclasses implement ``_run`` and ``close``. ``infer`` refuses feeds that a backend would
    reject with an opaque error or, worse, accept and answer wrongly.
    """

    backend = "unknown"
    precision = "fp32"
    device = "cpu"
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]

    def infer(self, feed: Mapping[str, np.ndarray], validate: bool = True) -> dict[str, np.ndarray]:
        """Raw outputs by name. ``validate=False`` is for callers whose feed is already checked
        (the Pipeline's preprocessor guarantees names, dtype, shape and finiteness)."""
        if validate:
            self._check_feed(feed)
        return self._run(feed)

    def _run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def bind(self, shape: tuple[int, ...], extra: dict[str, tuple[int, ...]] | None = None) -> Binding | None:
        """A :class:`Binding` for a main input of ``shape`` (float32) and the feature inputs ``extra`` (name ->
        shape) beside it, or None where the backend has none (then ``infer`` serves)."""
        return None

    def _main_input(self, extra: dict | None) -> str | None:
        """The one float32 input that is not a feature input, or None where the inputs are not that."""
        rest = [t for t in self.inputs if t.name not in (extra or {})]
        if len(rest) != 1 or rest[0].dtype != "float32" or len(self.inputs) != 1 + len(extra or {}):
            return None
        return rest[0].name

    def close(self) -> None:  # pragma: no cover - overridden
        pass

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def computed_in(self) -> str:
        """The precision the engine really computes in on its device (an FP32 artifact can run at f16 on an NPU,
        or TF32 on a GPU): what a verdict measured here is a verdict about."""
        return self.precision

    def describe(self) -> dict:
        return {"backend": self.backend, "precision": self.precision, "device": self.device,
                "computed_in": self.computed_in}

    def _check_feed(self, feed: Mapping[str, np.ndarray]) -> None:
        expected = {t.name: t for t in self.inputs}
        if not isinstance(feed, Mapping):
            raise InputError(f"engine.infer takes a dict of input name -> array, got a {type(feed).__name__}",
                             f"call infer({{{next(iter(expected))!r}: batch}})")
        if set(feed) != set(expected):
            raise InputError(f"engine inputs are {sorted(expected)}, got {sorted(feed)}",
                             f"call infer({{{next(iter(expected))!r}: batch}})")
        for name, array in feed.items():
            info = expected[name]
            if not isinstance(array, np.ndarray):
                raise InputError(f"input {name!r} is a {type(array).__name__}, not a numpy array",
                                 "pass numpy.float32 arrays")
            if array.dtype != np.dtype(info.dtype):
                raise InputError(f"input {name!r} has dtype {array.dtype}, the model takes {info.dtype}",
                                 f"convert with .astype(numpy.{info.dtype})")
            if array.ndim != len(info.shape) or any(
                isinstance(d, int) and d > 0 and d != s for d, s in zip(info.shape, array.shape)
            ):
                raise InputError(f"input {name!r} has shape {tuple(array.shape)}, the model takes {info.shape}",
                                 "preprocess with the bundle's spec (pipe.predict does)")
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                raise InputError(f"input {name!r} contains NaN or Inf", "replace non-finite values first")
