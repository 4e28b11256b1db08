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
who reads ``r.saliency`` gets the same map as an eager one would have made. ``benchmarks/saliency_cost.py``
measures it side by side (README: the explanation's cost).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import BundleError
from .postprocess import _resize_plane, to_original_geometry

_FIX = "the bundle's explanation does not fit its artifact; rebuild it with edgemed convert --explain cam"


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

    def input_map(self, outputs: dict[str, np.ndarray], index: int) -> np.ndarray:
        """The map of class ``index`` at the model's input size (no frame geometry): what the saliency-drift term
        compares between artifacts (:mod:`edgemed.saliency_drift`)."""
        return to_frame(class_activation_map(outputs[self.features_output][0], self.weight[index]), self.input_hw, [])

    def pending(self, outputs: dict[str, np.ndarray], index: int, geometry: list) -> LazySaliency | None:
        """The map of class ``index`` for one frame's outputs; None where a caller ran the engine for the class
        output alone (then ``r.saliency`` is None rather than a KeyError)."""
        features = outputs.get(self.features_output)
        return None if features is None else LazySaliency(features[0], self.weight[index], self.input_hw, geometry)


class LazySaliency:
    """One result's map, computed on first use and kept (see the module docstring for why it is not eager)."""

    __slots__ = ("features", "weights", "input_hw", "geometry", "_map")

    def __init__(self, features: np.ndarray, weights: np.ndarray, input_hw: tuple[int, int], geometry: list) -> None:
        self.features, self.weights, self.input_hw, self.geometry = features, weights, input_hw, geometry
        self._map: np.ndarray | None = None

    def model_map(self) -> np.ndarray:
        """The CAM at the feature map's own resolution (h, w), in [0, 1]."""
        return class_activation_map(self.features, self.weights)

    def __call__(self) -> np.ndarray:
        if self._map is None:
            self._map = to_frame(self.model_map(), self.input_hw, self.geometry)
        return self._map
