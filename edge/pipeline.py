"""Pipeline = preprocess → Engine.infer → postprocess, the object scanner software holds.

This module must not import torch or onnx: it is the runtime path on the device.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .bundle import Bundle
from .errors import InputError
from .images import read_image
from .postprocess import (
    class_probabilities,
    mask_from_probabilities,
    segmentation_probabilities,
    to_original_geometry,
)
from .preprocess import Prepared
from .results import ClassificationResult, SegmentationResult
from .selection import DEFAULT_PREFERENCE, eligible, rank

Result = ClassificationResult | SegmentationResult


class Pipeline:
    def __init__(self, bundle: Bundle, engine: Any, artifact: dict, reason: str) -> None:
        self.bundle = bundle
        self.engine = engine
        self.artifact = artifact
        self.reason = reason
        self.preprocessor = bundle.preprocessor()
        self.task = bundle.task
        self.labels = bundle.labels
        out = bundle.manifest["output"]
        self.output_kind = out.get("kind", "logits")
        self.output_name = out["names"][0]
        self.input_name = bundle.manifest["input"]["name"]

    # -- stages ----------------------------------------------------------------------------
    def prepare(self, image: np.ndarray | str | Path) -> Prepared:
        if isinstance(image, (str, Path)):
            image = read_image(image)
        return self.preprocessor(image)

    def infer(self, prepared: Prepared) -> np.ndarray:
        return self.engine.infer({self.input_name: prepared.tensor})[self.output_name]

    def finish(self, output: np.ndarray, prepared: Prepared) -> Result:
        if self.task == "classification":
            probs = class_probabilities(output[0], self.output_kind)
            index = int(np.argmax(probs))
            label = self.labels[index] if index < len(self.labels) else str(index)
            labels = self.labels if len(self.labels) == probs.size else [str(i) for i in range(probs.size)]
            return ClassificationResult(label, index, probs, labels)
        maps = segmentation_probabilities(output, self.output_kind)
        maps = to_original_geometry(maps, prepared.geometry)
        labels = self.labels if len(self.labels) == maps.shape[0] else [str(i) for i in range(maps.shape[0])]
        return SegmentationResult(mask_from_probabilities(maps), labels)

    # -- public ----------------------------------------------------------------------------
    def predict(self, image: np.ndarray | str | Path) -> Result:
        """One frame in, one result out, with per-stage timings in seconds."""
        t0 = time.perf_counter()
        prepared = self.prepare(image)
        t1 = time.perf_counter()
        output = self.infer(prepared)
        t2 = time.perf_counter()
        result = self.finish(output, prepared)
        t3 = time.perf_counter()
        result.timings = {"preprocess": t1 - t0, "infer": t2 - t1, "postprocess": t3 - t2}
        return result

    def stream(self, frames: Iterable[np.ndarray], fps: float | None = None) -> Iterator[Result]:
        """Results for a sequence of frames, paced at ``fps`` when given (a recorded clip played live)."""
        period = 1.0 / fps if fps else 0.0
        start = time.perf_counter()
        for i, frame in enumerate(frames):
            if period:
                delay = start + i * period - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            yield self.predict(frame)

    def describe(self) -> dict:
        return {
            "bundle": str(self.bundle.path),
            "model": self.bundle.manifest["model"].get("name"),
            "task": self.task,
            "artifact": self.artifact["file"],
            "reason": self.reason,
            **self.engine.describe(),
        }

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def load(bundle: str | Path, device: str = "cpu", backend: str | None = None, precision: str | None = None,
         threads: int | None = None) -> Pipeline:
    """Open and verify a bundle, choose an artifact for the device, and start its engine."""
    from edgemed.runtimes import create_engine

    if not isinstance(device, str) or not device:
        raise InputError(f"device {device!r} is not a name", "use e.g. device='cpu'")
    b = Bundle.open(bundle)
    candidates = rank(eligible(b.artifacts, backend, precision), DEFAULT_PREFERENCE)
    artifact = candidates[0]
    requested = "/".join(x for x in (backend, precision) if x)
    reason = f"requested {requested}" if requested else "first drift-passed artifact in the device preference"
    engine = create_engine(artifact["backend"], b.file(artifact["file"]), device=device, threads=threads,
                           precision=artifact["precision"])
    return Pipeline(b, engine, artifact, reason)
