"""Pipeline = preprocess → Engine.infer → postprocess, the object scanner software holds.

This module must not import torch or onnx: it is the runtime path on the device.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .bundle import Bundle
from .errors import BackendUnavailable, InputError
from .images import read_image
from .postprocess import class_probabilities, segmentation_mask
from .preprocess import Prepared
from .results import ClassificationResult, SegmentationResult
from .selection import describe_artifacts, eligible, rank

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
        # The preprocessor already guaranteed dtype, shape and finiteness: no second check per frame.
        return self.engine.infer({self.input_name: prepared.tensor}, validate=False)[self.output_name]

    def finish(self, output: np.ndarray, prepared: Prepared) -> Result:
        if self.task == "classification":
            probs = class_probabilities(output[0], self.output_kind)
            index = int(np.argmax(probs))
            label = self.labels[index] if index < len(self.labels) else str(index)
            labels = self.labels if len(self.labels) == probs.size else [str(i) for i in range(probs.size)]
            return ClassificationResult(label, index, probs, labels)
        mask, classes = segmentation_mask(output, self.output_kind, prepared.geometry)
        labels = self.labels if len(self.labels) == classes else [str(i) for i in range(classes)]
        return SegmentationResult(mask, labels)

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

    def stream(self, frames: Iterable[np.ndarray], fps: float | None = None, maxsize: int = 2):
        """Results for a sequence of frames, in order. With ``fps`` the frames arrive like a live probe
        and, when the engine falls behind, the oldest waiting frame is dropped (reported, counted in
        ``pipe.last_stream_stats``); without it, every frame is processed."""
        from .streaming import stream

        return stream(self, frames, fps=fps, maxsize=maxsize)

    def streamer(self, maxsize: int = 2, drop_oldest: bool = True):
        """Callback form: ``s = pipe.streamer(); fut = s.submit(frame); fut.result()``."""
        from .streaming import Streamer

        return Streamer(self, maxsize=maxsize, drop_oldest=drop_oldest)

    def describe(self) -> dict:
        return {
            "bundle": str(self.bundle.path),
            "model": self.bundle.manifest["model"].get("name"),
            "task": self.task,
            "artifact": self.artifact["file"],
            "reason": self.reason,
            "profile": getattr(self, "profile", {}).get("name"),
            **self.engine.describe(),
        }

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _engine_device(backend: str, profile: dict) -> str:
    if backend == "openvino":
        return profile.get("ov_device", "cpu")
    if backend == "tensorrt":
        return "cuda"
    return profile.get("ort_device", "cpu")


def load(bundle: str | Path, device: str = "cpu", backend: str | None = None, precision: str | None = None,
         threads: int | None = None, require_signature: str | Path | None = None) -> Pipeline:
    """Open and verify a bundle, choose an artifact for the device, and start its engine.

    Only drift-passed artifacts whose backend is installed are eligible; the device profile's
    preference orders them, and ``device="auto"`` measures them instead of assuming.
    With ``require_signature`` (an Ed25519 public key file) the bundle must carry a valid
    signature by that key and hold exactly the files that were signed.
    """
    from edgemed.devices.detect import detect, resolve_device
    from edgemed.devices.profiles import load_profiles
    from edgemed.runtimes import available_backends, create_engine

    if not isinstance(device, str) or not device:
        raise InputError(f"device {device!r} is not a name", "use e.g. device='cpu'")
    if require_signature is not None:
        from .signing import verify_signature

        verify_signature(Path(bundle), Path(require_signature))
    b = Bundle.open(bundle)
    machine = detect(probe_openvino=device in ("auto", "npu"))
    profile = resolve_device(device, machine, load_profiles())
    candidates = eligible(b.artifacts, backend, precision)
    installed = available_backends()
    runnable = [a for a in candidates if installed.get(a.get("backend"), False)]
    if not runnable:
        raise BackendUnavailable(
            f"no installed backend can run the bundle's passed artifacts ({describe_artifacts(candidates)})",
            "install the backend (e.g. pip install 'edgemed[openvino]')")
    ranked = rank(runnable, profile["preference"])

    def make(art: dict):
        extra = {"spin": bool(profile.get("ort_allow_spinning", True))} if art["backend"] == "onnxruntime" else {}
        return create_engine(art["backend"], b.file(art["file"]), device=_engine_device(art["backend"], profile),
                             threads=threads or profile.get("threads"), precision=art["precision"], **extra)

    requested = "/".join(x for x in (backend, precision) if x)
    if device == "auto" and len(ranked) > 1:
        from . import autoselect
        from .hashing import sha256_file

        probe = b.reference()["inputs"][:1]
        artifact, reason = autoselect.choose(ranked, make, probe, b.manifest["input"]["name"],
                                             sha256_file(b.path / "edgemed.json"), profile["name"],
                                             machine.cpu_model, threads)
    else:
        artifact = ranked[0]
        reason = (f"requested {requested}; " if requested else "") + (
            f"first drift-passed artifact in profile {profile['name']}'s preference")
    pipe = Pipeline(b, make(artifact), artifact, reason)
    pipe.profile = profile
    return pipe
