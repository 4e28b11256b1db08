"""Saliency maps at run time, from the deployed engine's own outputs: numpy only (no torch, no onnx).

A bundle converted with ``--explain cam`` (:mod:`edgemed.converters.explain`) has, in every artifact, one extra
output: the feature map ``F`` (K, h, w) that enters the classifier's global average pooling, and beside the
artifacts the Linear head's weights ``W`` (C, K). The class activation map of the predicted class ``c`` is then
the closed form ``sum_k W[c, k] * F_k`` from the one inference predict already ran.

Cost: ``r.saliency`` is computed when first read, not in ``predict``. Measured on this shared 2-core machine
(shipped cnn_breastmnist, ONNX Runtime FP32, 64 real 256x256 BUSI frames, best of 3, three rounds): predict
1.69-1.75 ms per frame; the CAM at the feature map's 7x7 is within the noise (0.92-1.12x), but the map at the
frame's size (bilinear 7x7 -> 28x28 -> 256x256 through the geometry) costs 1.2-1.6 ms more (1.67-1.96x). Made in
every predict, it would nearly double the latency of a model this small; the engines return every output
anyway, so keeping the feature map (64x7x7 floats, 12.5 kB) on the result is the whole hot-path cost, and a caller
who reads ``r.saliency`` gets the same map as an eager one would have made. ``benchmarks/studies/saliency_cost.py``
measures it side by side (README: the explanation's cost).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BundleError
from ..postprocess import _resize_plane, to_original_geometry

_FIX = "the bundle's explanation does not fit its artifact; rebuild it with edgemed convert --explain"


def class_activation_map(features: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``relu(sum_k weights[k] * features[k])`` scaled to [0, 1] by its maximum, float32 (h, w).

    A map with no positive evidence anywhere (every value <= 0 after the weighted sum) is returned as all zeros,
    not divided by zero and not stretched: it says "no region argues for this class", which a uniform or
    rescaled-noise map would hide."""
    cam = np.tensordot(np.asarray(weights, np.float32), np.asarray(features, np.float32), axes=(0, 0))
    np.maximum(cam, 0.0, out=cam)
    peak = float(cam.max()) if cam.size else 0.0
    if not peak > 0.0:
        return np.zeros(cam.shape, np.float32)
    cam /= peak
    return cam.astype(np.float32, copy=False)


def to_frame(cam: np.ndarray, input_hw: tuple[int, int], geometry: list) -> np.ndarray:
    """A model-space map (h, w) at the frame's own size: bilinear to the model's input size, then back through
    the recorded preprocessing geometry by the same code that maps masks back
    (:func:`edgemed.postprocess.to_original_geometry`); outside the model's view the map is 0. Bilinear
    interpolation of values in [0, 1] stays in [0, 1] (clipped against float round-off)."""
    plane = np.asarray(cam, np.float32)
    if plane.shape != tuple(input_hw):
        plane = _resize_plane(plane, input_hw)
    out = to_original_geometry(plane[None], geometry, fill=[0.0])[0]
    return np.clip(out, 0.0, 1.0, out=out if out.flags.writeable else None)


class CamExplainer:
    """The bundle's CAM head, opened once per pipeline; :meth:`pending` makes each result's (lazy) map."""

    def __init__(self, weight: np.ndarray, features_output: str, input_hw: tuple[int, int]) -> None:
        self.weight, self.features_output, self.input_hw = weight, features_output, input_hw

    @classmethod
    def open(cls, bundle_path: Path, explain: Any, engine: Any, classes: int, input_hw: tuple[int, int]
             ) -> CamExplainer:
        """Read the head (its hash was checked with every other bundle file) and check it against the engine's
        feature output: the number of classes and of channels must agree."""
        where = explain.head.file
        try:
            with np.load(bundle_path / where, allow_pickle=False) as data:
                weight = np.asarray(data["weight"], np.float32)
        except (OSError, KeyError, ValueError) as exc:
            raise BundleError(f"{where}: not a readable CAM head ({exc})", _FIX) from exc
        if weight.ndim == 2 and weight.shape[0] == 1 and classes == 2:
            weight = np.concatenate([-weight, weight])  # one sigmoid logit: class 0's evidence is its negative
        outputs = {t.name: t for t in engine.outputs}
        info = outputs.get(explain.features_output)
        if info is None:
            raise BundleError(f"the artifact has no output {explain.features_output!r} (explain.features_output; "
                              f"it has {sorted(outputs)})", _FIX)
        channels = info.shape[1] if len(info.shape) == 4 else None
        if weight.ndim != 2 or weight.shape[0] != classes or (isinstance(channels, int) and channels > 0
                                                               and weight.shape[1] != channels):
            raise BundleError(f"{where}: head weights of shape {list(weight.shape)} do not fit {classes} classes and "
                              f"the feature output {list(info.shape)}", _FIX)
        return cls(weight, explain.features_output, input_hw)

    def model_map(self, outputs: dict[str, np.ndarray], index: int) -> np.ndarray:
        """The map of class ``index`` at the feature map's resolution."""
        return class_activation_map(outputs[self.features_output][0], self.weight[index])

    def input_map(self, outputs: dict[str, np.ndarray], index: int) -> np.ndarray:
        """The map of class ``index`` at the model's input size (no frame geometry): what the saliency-drift term
        compares between artifacts (:mod:`edgemed.gate.saliency_drift`)."""
        return to_frame(self.model_map(outputs, index), self.input_hw, [])

    def pending(self, outputs: dict[str, np.ndarray], index: int, geometry: list) -> LazySaliency | None:
        """The map of class ``index`` for one frame's outputs; None where a caller ran the engine for the class
        output alone (then ``r.saliency`` is None rather than a KeyError)."""
        features = outputs.get(self.features_output)
        if features is None:
            return None
        weights = self.weight[index]
        return LazySaliency(lambda: class_activation_map(features[0], weights), self.input_hw, geometry)


class LazySaliency:
    """One result's map, computed on first use and kept (see the module docstring for why it is not eager)."""

    __slots__ = ("make", "input_hw", "geometry", "_map")

    def __init__(self, make: Callable[[], np.ndarray], input_hw: tuple[int, int], geometry: list) -> None:
        self.make, self.input_hw, self.geometry = make, input_hw, geometry
        self._map: np.ndarray | None = None

    def model_map(self) -> np.ndarray:
        """The map at the model's own resolution (the feature map's h, w), in [0, 1]."""
        return self.make()

    def __call__(self) -> np.ndarray:
        if self._map is None:
            self._map = to_frame(self.model_map(), self.input_hw, self.geometry)
        return self._map


def recipro_map(logits: np.ndarray, index: int, grid: tuple[int, int]) -> np.ndarray:
    """Recipro-CAM's map of class ``index`` from the logits of the head re-run on each spatially masked copy of the
    feature map ((h*w, C), row i*w + j: the copy kept around location (i, j)): the class's softmax score per location,
    scaled to [0, 1] by min-max (Byun and Lee, "Recipro-CAM", 2022). A map with no spread (every masked copy scored
    alike) is all zeros: no location argues more than another."""
    z = np.asarray(logits, np.float64)
    if z.shape[1] == 1:  # one sigmoid logit: class 1's score is its sigmoid, class 0's the complement
        p1 = 1.0 / (1.0 + np.exp(-z[:, 0]))
        scores = p1 if index == 1 else 1.0 - p1
    else:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        scores = e[:, index] / e.sum(axis=1)
    low, high = float(scores.min()), float(scores.max())
    if not high - low > 1e-12:
        return np.zeros(grid, np.float32)
    return ((scores - low) / (high - low)).reshape(grid).astype(np.float32)


class ReciproExplainer:
    """``--explain recipro-cam``: each artifact also outputs the head's logits on the h*w masked copies of the target
    layer's feature map (``explain.features_output``, (N, h*w, C)); the map is made from them, numpy only."""

    def __init__(self, output: str, grid: tuple[int, int], input_hw: tuple[int, int]) -> None:
        self.features_output, self.grid, self.input_hw = output, grid, input_hw

    @classmethod
    def open(cls, explain: Any, engine: Any, classes: int, input_hw: tuple[int, int]) -> ReciproExplainer:
        outputs = {t.name: t for t in engine.outputs}
        info = outputs.get(explain.features_output)
        grid = tuple(explain.grid or ())
        if info is None:
            raise BundleError(f"the artifact has no output {explain.features_output!r} (explain.features_output; "
                              f"it has {sorted(outputs)})", _FIX)
        dims = info.shape
        locations = dims[1] if len(dims) == 3 and isinstance(dims[1], int) and dims[1] > 0 else None
        if len(grid) != 2 or len(dims) != 3 or (locations is not None and locations != grid[0] * grid[1]):
            raise BundleError(f"explain.grid {list(grid)} does not fit the output {explain.features_output!r} "
                              f"{list(dims)}", _FIX)
        return cls(explain.features_output, (int(grid[0]), int(grid[1])), input_hw)

    def model_map(self, outputs: dict[str, np.ndarray], index: int) -> np.ndarray:
        return recipro_map(outputs[self.features_output][0], index, self.grid)

    def input_map(self, outputs: dict[str, np.ndarray], index: int) -> np.ndarray:
        return to_frame(self.model_map(outputs, index), self.input_hw, [])

    def pending(self, outputs: dict[str, np.ndarray], index: int, geometry: list) -> LazySaliency | None:
        logits = outputs.get(self.features_output)
        if logits is None:
            return None
        return LazySaliency(lambda: recipro_map(logits[0], index, self.grid), self.input_hw, geometry)


def open_explainer(bundle_path: Path, explain: Any, engine: Any, classes: int, input_hw: tuple[int, int]) -> Any:
    """The bundle's explainer for its method (``explain.method``): the one place a method name is read at run time."""
    if explain.method == "recipro-cam":
        return ReciproExplainer.open(explain, engine, classes, input_hw)
    return CamExplainer.open(bundle_path, explain, engine, classes, input_hw)
