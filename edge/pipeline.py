"""Pipeline = preprocess → Engine.infer → postprocess, the object scanner software holds.

This module must not import torch or onnx: it is the runtime path on the device.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .bundle import Bundle
from .errors import BundleError, InputError, NoEligibleArtifact, PipelineClosed
from .feature_inputs import FeatureFeeds
from .input_kinds import input_kind
from .input_range import always_within, range_matters
from .input_range import check as check_range
from .io.images import read_image
from .io.signals import check_description
from .manifest import Manifest
from .output_reader import OutputReader
from .postprocess import check_finite
from .preprocess import Prepared
from .selection import Selection, open_engine, select, shared_by
from .tasks import task_named
from .tasks.classification import ClassificationResult
from .tasks.detection import DetectionResult
from .tasks.segmentation import SegmentationResult

Result = ClassificationResult | SegmentationResult | DetectionResult


class Pipeline:
    """What scanner software holds: one bundle, one started engine, the preprocessing that feeds it."""

    def __init__(self, bundle: Bundle, engine: Any, selection: Selection) -> None:
        m = bundle.manifest
        check_engine(engine, m, selection.artifact.file)  # once here, so no frame pays for it
        self.bundle = bundle
        self.engine = engine
        self.selection = selection
        self.artifact = selection.artifact
        self.reason = selection.reason
        self.profile = selection.profile
        self.preprocessor = bundle.preprocessor()
        self.task = m.model.task
        self.task_rules = task_named(self.task)  # what the task means: reading outputs, ... (edgemed.tasks)
        self.labels = list(m.model.labels)
        self.output_kind = m.output.kind
        self.output_name = m.output.names[0]
        self.detection = m.postprocess.detection
        self.reader = OutputReader(self.output_name, self.detection)
        self.input_name = m.input.name
        self.input_kind = m.model.input_kind
        self._kind = input_kind(self.input_kind)
        self.dynamic_batch = m.input.dynamic_batch
        # frames far outside what the spec was calibrated for are refused (edgemed.input_range)
        self.value_range = m.input.value_range if m.input.value_range and range_matters(m.preprocess) else None
        self._range_trusted: dict[np.dtype, bool] = {}  # per frame dtype: can it reach outside the range at all?
        # predict's per-thread engine binding: the preprocessor writes into the engine's bound input array
        self._local = threading.local()
        shape = tuple(getattr(self.preprocessor, "input_shape", ()))
        self._bind_shape = (1,) + shape[1:] if len(shape) > 1 and all(d > 0 for d in shape[1:]) else None
        self.features = FeatureFeeds(m.features)  # the inputs beside the main one (predict's features=)
        self._bind_extra = {spec.name: (1, len(spec.features)) for spec in m.features} or None  # bound beside it
        self.explainer = None
        if m.explain is not None:  # convert --explain cam: r.saliency (edgemed.explain.saliency)
            from .explain.saliency import open_explainer

            hw = m.input.static_shape[1:3] if m.input.layout == "NHWC" else m.input.static_shape[2:4]
            self.explainer = open_explainer(bundle.path, m.explain, engine, len(self.labels), hw)

    # -- stages ----------------------------------------------------------------------------
    def prepare(self, image: np.ndarray | str | Path, **describe: Any) -> Prepared:
        """Preprocess one input. Signal models take a pre-cut beat: a Signal, a file, or an array with its
        rate and units stated (``fs=360, units="mV"``), raw digitiser counts with their gain too
        (``units="mV", adc_gain=200``: counts per unit, as signal-set files state it). A model with inputs beside
        the main one (the manifest's ``features``) takes them by name: ``features={"rr_pre": 0.81, ...}``."""
        return self._prepare(image, None, describe)

    def _prepare(self, image: Any, out: np.ndarray | None, describe: dict[str, Any],
                 out_extra: dict[str, np.ndarray] | None = None) -> Prepared:
        if self.features or "features" in describe:
            features = describe.pop("features", None)
            if not self.features:
                raise InputError("features: this model reads no input beside the "
                                 f"{self._kind.item}", "leave features out")
            prepared = self._prepare_main(image, out, describe)
            prepared.extra = self.features.one(features, getattr(image, "features", None), out_extra)
            return prepared
        return self._prepare_main(image, out, describe)

    def _prepare_main(self, image: Any, out: np.ndarray | None, describe: dict[str, Any]) -> Prepared:
        if self._kind.recordings:  # a beat window, or a recording to cut one from: described by rate and units
            check_description(describe)
            if isinstance(image, (str, Path)):
                from .io.signals import read_signal

                image = read_signal(image, describe.get("fs"), describe.get("units"), describe.pop("adc_gain", None))
            return self.preprocessor(image, out=out, **describe)
        if describe:
            raise InputError(f"{', '.join(describe)}: only signal models take a rate and units",
                             "pass just the image")
        if isinstance(image, (str, Path)):
            image = read_image(image)
        if self.value_range is not None:
            trusted = self._range_trusted.get(image.dtype) if isinstance(image, np.ndarray) else False
            if trusted is None:
                trusted = self._range_trusted[image.dtype] = always_within(image.dtype, self.value_range)
            if not trusted:
                check_range(image, self.value_range)
        return self.preprocessor(image, out)

    def infer(self, prepared: Prepared) -> dict[str, np.ndarray]:
        """The engine's raw outputs by name."""
        # The preprocessor already guaranteed dtype, shape and finiteness: no second check per frame.
        return self.engine.infer(prepared.feed(self.input_name), validate=False)

    def finish(self, outputs: dict[str, np.ndarray], prepared: Prepared) -> Result:
        """The result of one input from the engine's outputs; outputs holding NaN or Inf are refused here, where
        every task's result is made (``predict``, ``stream``, Triton and bench all pass through)."""
        check_finite(outputs, prepared.tensor)
        return self.task_rules.finish(outputs, self, prepared)

    # -- public ----------------------------------------------------------------------------
    def predict(self, image: np.ndarray | str | Path, **describe: Any) -> Result:
        """One frame (or one pre-cut beat) in, one result out, with per-stage timings in seconds."""
        t0 = time.perf_counter()
        binding = self._binding()
        prepared = self._prepare(image, None if binding is None else binding.input, describe,
                                 None if binding is None else binding.extra)
        t1 = time.perf_counter()
        # the bound call when the preprocessor wrote into the bound array (it writes a new one for a shape it
        # does not fit, e.g. a signal model's batch of windows)
        output = binding.run() if binding is not None and prepared.tensor is binding.input else self.infer(prepared)
        t2 = time.perf_counter()
        result = self.finish(output, prepared)
        t3 = time.perf_counter()
        result.timings = {"preprocess": t1 - t0, "infer": t2 - t1, "postprocess": t3 - t2}
        return result

    def _binding(self):
        """This thread's engine binding (made on its first predict), or None where the engine has none."""
        local = self._local
        try:
            return local.binding
        except AttributeError:
            bind = getattr(self.engine, "bind", None)
            local.binding = bind(self._bind_shape, self._bind_extra) if bind is not None and self._bind_shape \
                else None
            return local.binding

    def stream(self, frames: Iterable[np.ndarray], fps: float | None = None, maxsize: int = 2, results: int = 2):
        """Results for a sequence (or a never-ending source) of frames, in order. With ``fps`` the frames
        arrive like a live probe: when the engine falls behind, the oldest waiting frame is dropped, and
        when the consumer falls behind, the oldest waiting result (both counted in
        ``pipe.last_stream_stats``); without it, every frame is processed and delivered. ``r.latency`` is
        each result's age from capture to delivery. Leaving the loop stops everything at once."""
        from .streaming import stream

        return stream(self, frames, fps=fps, maxsize=maxsize, results=results)

    def beats(self, signal: Any, positions: np.ndarray | None = None, **options: Any):
        """Every beat of a whole signal (a WFDB/DICOM/CSV file, a Signal, or an array with ``fs=`` and
        ``units=``, and ``adc_gain=`` for raw counts), found by the QRS detector or at given R-peak ``positions``
        (source samples), classified.
        Returns a :class:`edgemed.beats.BeatRecord` (beats, gaps, compute time, duration)."""
        from .beats import read_beats

        return read_beats(self, signal, positions, **options)

    def beat_reader(self, fs: float, units: str, leads: tuple[str, ...] | None = None, **options: Any):
        """A live signal, chunk by chunk: ``r = pipe.beat_reader(360, "mV", ("MLII", "V1"))`` (raw digitiser
        counts: ``adc_gain=200``, counts per unit), then
        ``r.feed(chunk)`` returns the beats complete so far and ``r.flush()`` the rest at the end. Chunks of
        any size give the beats the whole signal gives at once."""
        from .beats import BeatReader

        return BeatReader(self, fs, leads, units, **options)

    def streamer(self, maxsize: int = 2, drop_oldest: bool = True):
        """Callback form: ``s = pipe.streamer(); fut = s.submit(frame); fut.result()``."""
        from .streaming import Streamer

        return Streamer(self, maxsize=maxsize, drop_oldest=drop_oldest)

    def describe(self) -> dict:
        """Which artifact serves, why, its verdict, the device and the backend's versions."""
        from .gate.verdict import budget_metrics, describe_estimate

        art = self.artifact
        return {
            "bundle": str(self.bundle.path),
            "model": self.bundle.name,
            "task": self.task,
            "artifact": art.file,
            "reason": self.reason,
            "verdict": art.verdict,
            "budget": art.drift.budget,
            "cases": art.drift.cases,
            "drift": {name: describe_estimate(name, art.drift.metrics[name])
                      for name in budget_metrics(art.drift, self.task) if name in art.drift.metrics},
            "clinical": {name: f"drop {t.drop * 100:+.2f} points (95% bounds {t.drop_low * 100:+.2f} .. "
                               f"{t.drop_high * 100:+.2f}) on {t.cases} cases: {t.verdict}"
                         for name, t in art.clinical.tests.items()} if art.clinical else None,
            "profile": self.profile.name,
            **self.engine.describe(),
        }

    def close(self) -> None:
        engine, self.engine = self.engine, _Closed()
        self._local = threading.local()  # every thread's binding goes with the engine: predict now meets _Closed
        engine.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Closed:
    """Stands in for the engine after ``close()``: any use is a clear error, at no per-frame cost before."""

    backend = precision = device = "closed"
    inputs = outputs = ()

    def infer(self, *args: Any, **kwargs: Any):
        raise PipelineClosed("the pipeline is closed", "load the bundle again (edgemed.load) to keep predicting")

    describe = infer

    def close(self) -> None:
        pass


def _holds_for(record: Any, computed_in: str) -> bool:
    """:func:`edgemed.gate.verdict.holds_for`, imported when needed: the gate module cost 6 ms of a cold start
    (``python -X importtime``) that only an engine computing in something else than FP32 needs."""
    from .gate.verdict import holds_for

    return holds_for(record, computed_in)


def check_engine(engine: Any, manifest: Manifest, artifact: str) -> None:
    """The artifact's real inputs and outputs must be what the manifest promises (names, ranks, static sizes)."""
    fix = "the artifact does not belong to this manifest; rebuild the bundle with edgemed convert"
    spec = manifest.input
    inputs = {t.name: t for t in engine.inputs}
    promised = [spec.name] + [f.name for f in manifest.features]
    if sorted(inputs) != sorted(promised):
        raise BundleError(f"{artifact}: its inputs are {sorted(inputs)}, the manifest's are {promised} (input.name"
                          + (", features[].name)" if manifest.features else ")"), fix)
    real = inputs[spec.name]
    _check_dims(artifact, "input.shape", real.shape, spec.shape, fix)
    if real.dtype != spec.dtype:
        raise BundleError(f"{artifact}: takes {real.dtype}, the manifest's input.dtype is {spec.dtype}", fix)
    for i, feature in enumerate(manifest.features):
        real = inputs[feature.name]
        _check_dims(artifact, f"features[{i}] shape", real.shape, [spec.shape[0], len(feature.features)], fix)
        if real.dtype != feature.dtype:
            raise BundleError(f"{artifact}: input {feature.name!r} takes {real.dtype}, features[{i}].dtype is "
                              f"{feature.dtype}", fix)
    outputs = {t.name: t for t in engine.outputs}
    for i, name in enumerate(manifest.output.names):
        if name not in outputs:
            raise BundleError(f"{artifact}: has no output {name!r} (output.names[{i}]; it has {sorted(outputs)})", fix)
    _check_dims(artifact, "output.shape", outputs[manifest.output.names[0]].shape, manifest.output.shape, fix)


def _check_dims(artifact: str, field: str, real: tuple, promised: list, fix: str) -> None:
    if len(real) != len(promised) or any(
            isinstance(r, int) and r > 0 and isinstance(p, int) and r != p for r, p in zip(real[1:], promised[1:])):
        raise BundleError(f"{artifact}: has shape {list(real)}, the manifest's {field} is {promised}", fix)


def open_pipeline(b: Bundle, device: str = "cpu", backend: str | None = None, precision: str | None = None,
                  threads: int | None = None, accept: str | None = None, callers: int = 1) -> Pipeline:
    """The pipeline of an opened, verified bundle: :func:`edgemed.load` after the signature and the hashes (an ensemble
    opens each member this way, under the ensemble's own signature)."""
    selection = shared_by(select(b, device, backend, precision, threads, accept), callers)
    engine = open_engine(b, selection)
    art = selection.artifact
    # every verdict covers an engine computing in FP32 (gate.holds_for), so only another one needs the gate read
    if engine.computed_in != "fp32" and accept is None and not _holds_for(art.drift, engine.computed_in):
        computed = engine.computed_in
        engine.close()
        raise NoEligibleArtifact(
            f"{art.key} computes in {computed} on {selection.device}; its parity verdict is about FP32 arithmetic "
            f"(measured in {art.drift.computed_in or 'fp32'} on {art.drift.device or 'cpu'})",
            f"certify it where it runs (edgemed certify BUNDLE --eval SITE_IMAGES --device {selection.device}), or "
            "load an fp16 artifact")
    return Pipeline(b, engine, selection)
