"""edgemed's ``predict`` against the best hand-written pipeline that computes the same tensor and the same result.

The hand-written side is what an engineer who tunes a model into scanner software writes without edgemed,
for one bundle whose spec they read once:

- images: resize once in Pillow (the grey plane, when the model takes grey or replicated grey), write the
  spec's affine tail (scale, normalize, minmax), folded into one multiply-add per channel, straight into ONE
  preallocated input array, and run the engine with that array bound in place (ONNX Runtime IO binding;
  an OpenVINO input tensor sharing its memory);
- single ECG beats: the beat's least-squares line removed (detrend) straight into a bound (1, 1, L) buffer;
- the same postprocessing (``hand_written/``, beside this script, one module per task): softmax/argmax; the
  foreground margin resized to the frame and thresholded (segmentation); threshold, map back, clip, greedy
  class-aware NMS vectorised in numpy (detection).

It runs on the very engine object edgemed opened (``pipe.engine``: the same ONNX Runtime session, the same
compiled OpenVINO model), so only edgemed's layers are measured: two sessions of one model, or separate
processes, spread by 20-30% on a 2-core machine (two spinning thread pools fight), one engine alternating per
frame is stable to about 1%. Calls alternate frame by frame (predict, hand-written, the engine call alone, ...),
every frame in another order (all permutations in turn), and the ratios are of p50s over the same frames.

Before timing, the hand-written tensor must equal edgemed's (``pipe.prepare``) and its result predict's
(label and probabilities, the mask pixel for pixel, the boxes): otherwise the case is refused, not timed.
An OpenCV resize variant (not the same pixels: for information) is timed when ``cv2`` imports.

    python benchmarks/studies/overhead.py BUNDLE [BUNDLE ...] [--quick] [--frames 600]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hand_written import NoBaseline, for_task

import edgemed

AFFINE = ("scale", "normalize", "minmax")


# --- the hand-written pipelines ---------------------------------------------------------------------------


def _affine(spec: list[dict], channels: int) -> tuple[bool, np.ndarray, np.ndarray]:
    """The spec's trailing scale/normalize as y = x*a + b per channel (after a leading minmax, if any)."""
    tail = [op for op in spec if op["op"] in AFFINE]
    minmax = bool(tail) and tail[0]["op"] == "minmax"
    if any(op["op"] == "minmax" for op in tail[1:]):
        raise NoBaseline("a minmax after other affine ops")
    a, b = np.ones(channels), np.zeros(channels)
    for op in tail[1:] if minmax else tail:
        if op["op"] == "scale":
            a, b = a * op["factor"], b * op["factor"]
        else:
            mean, std = np.asarray(op["mean"], np.float64), np.asarray(op["std"], np.float64)
            a, b = a / std, (b - mean) / std
    return minmax, a, b


class BoundEngine:
    """The engine edgemed opened, run with one input array (and, where the shape is static, outputs) bound."""

    def __init__(self, pipe, shape: tuple[int, ...]) -> None:
        self.x = np.zeros(shape, np.float32)
        engine = pipe.engine
        if pipe.artifact.backend == "onnxruntime":
            self.session = engine.session
            self.io = self.session.io_binding()
            self.io.bind_cpu_input(pipe.input_name, self.x)
            self.outs = []
            for o in self.session.get_outputs():
                if o.type == "tensor(float)" and all(isinstance(d, int) and d > 0 for d in o.shape):
                    buf = np.empty((shape[0],) + tuple(o.shape[1:]), np.float32)
                    self.io.bind_output(o.name, "cpu", 0, np.float32, list(buf.shape), buf.ctypes.data)
                    self.outs.append(buf)
                else:  # bound anew before each run: ORT keeps the last value, whose shape it then requires
                    self.io.bind_output(o.name, "cpu")
                    self.outs.append(None)
            self.names = [o.name for o in self.session.get_outputs()]
            self.run = self._run_ort
        elif pipe.artifact.backend == "openvino":
            import openvino as ov

            self.request = engine.compiled.create_infer_request()
            self.request.set_input_tensor(0, ov.Tensor(self.x, shared_memory=True))
            self.names = [p.get_any_name() for p in engine.compiled.outputs]
            self.run = self._run_ov
        else:
            raise NoBaseline(f"no bound call for {pipe.artifact.backend}")

    def _run_ort(self) -> dict[str, np.ndarray]:
        for name, out in zip(self.names, self.outs):
            if out is None:
                self.io.bind_output(name, "cpu")
        self.session.run_with_iobinding(self.io)
        if all(o is not None for o in self.outs):
            return dict(zip(self.names, self.outs))
        got = self.io.copy_outputs_to_cpu()
        return {n: o if o is not None else g for n, o, g in zip(self.names, self.outs, got)}

    def _run_ov(self) -> dict[str, np.ndarray]:
        self.request.infer()
        return {n: self.request.get_output_tensor(i).data for i, n in enumerate(self.names)}


def _engine_alone(pipe, shape: tuple[int, ...], tensor: np.ndarray) -> Callable[[], Any]:
    """The engine call alone, on an input array of its own: sharing the hand-written one would leave that warm in
    the cache for the hand-written call next to it (a 600 kB input: ~0.1 ms in its favour, measured)."""
    bound = BoundEngine(pipe, shape)
    bound.x[:] = tensor
    return bound.run


def _image_writer(pipe, resize: Callable | None = None) -> Callable[[np.ndarray, np.ndarray], None]:
    """Frame → the bound (1, C, H, W) array, for specs of [to_gray|to_rgb], resize, [scale|normalize|minmax]..."""
    from PIL import Image

    spec, shape = pipe.bundle.manifest.preprocess, pipe.bundle.manifest.input.shape
    if pipe.bundle.manifest.input.layout != "NCHW":
        raise NoBaseline("an NHWC model")
    names = [op["op"] for op in spec]
    if any(n not in ("to_gray", "to_rgb", "resize") + AFFINE for n in names) or names.count("resize") != 1:
        raise NoBaseline(f"spec {names}")
    op = spec[names.index("resize")]
    if op.get("keep_aspect") or any(n in AFFINE for n in names[:names.index("resize")]):
        raise NoBaseline("letterbox, or arithmetic before the resize")
    h, w = op["size"]
    method = getattr(Image.Resampling, {"area": "BOX"}.get(op.get("interpolation", "bilinear"),
                                                           op.get("interpolation", "bilinear").upper()))
    channels = int(shape[1])
    minmax, a, b = _affine(spec, channels)
    a32, b32 = a.astype(np.float32), b.astype(np.float32)

    def pil_resize(plane: np.ndarray) -> np.ndarray:  # a frame already at the model's size is not resampled
        return plane if plane.shape[:2] == (h, w) else np.asarray(Image.fromarray(plane).resize((w, h), method))

    resize = resize or pil_resize

    def write(frame: np.ndarray, x: np.ndarray) -> None:
        if frame.ndim == 3 and "to_gray" in names:
            frame = np.asarray(Image.fromarray(frame, "RGB").convert("L"))
        if frame.ndim == 3 and channels == 1:
            raise NoBaseline("an RGB frame for a grey model without to_gray")
        r = resize(frame)
        planes = [r] * channels if r.ndim == 2 else [r[:, :, c] for c in range(channels)]
        shift, scale = 0.0, 1.0
        if minmax:
            lo, hi = float(r.min()), float(r.max())
            shift, scale = (-lo, 1.0 / float(np.float32(hi - lo))) if hi > lo else (0.0, 0.0)
        for c, p in enumerate(planes):
            dst = x[0, c]
            if shift:
                np.add(p, np.float32(shift), out=dst, casting="unsafe")
                np.multiply(dst, np.float32(a[c] * scale), out=dst)
            else:
                np.multiply(p, np.float32(a[c] * scale) if minmax else a32[c], out=dst, casting="unsafe")
            if b[c]:
                np.add(dst, b32[c], out=dst)

    return write


@dataclass
class Case:
    """One comparison: what predict is given, and the hand-written pipeline over the same engine."""

    label: str
    predict: Callable[[], Any]
    hand: Callable[[], Any]
    engine: Callable[[], Any]  # the bound engine call alone (what neither side can avoid)
    tensor: Callable[[], np.ndarray]  # the hand-written input tensor, for the equality check
    extra: dict[str, Callable[[], Any]] = field(default_factory=dict)
    check: Callable[[], str | None] | None = None  # replaces same() where predict is not given one input
    calls: int | None = None  # calls per function where one call is a whole record, not a frame


def image_case(pipe, frame: np.ndarray, label: str) -> Case:
    shape = tuple(int(d) if isinstance(d, int) and d > 0 else 1 for d in pipe.bundle.manifest.input.shape)
    bound = BoundEngine(pipe, shape)
    write = _image_writer(pipe)
    post = for_task(pipe.task).post(pipe, frame.shape[:2], shape[2:4])

    def hand():
        write(frame, bound.x)
        return post(bound.run())

    extra = {}
    try:
        import cv2  # noqa: F401 - information only; not a dependency
    except ImportError:
        pass
    else:
        h, w = shape[2:4]
        cv_write = _image_writer(pipe, resize=lambda p: cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR))
        extra["opencv"] = lambda: (cv_write(frame, bound.x), post(bound.run()))[1]

    def tensor():
        write(frame, bound.x)
        return bound.x.copy()

    return Case(label, lambda: pipe.predict(frame), hand, _engine_alone(pipe, shape, tensor()), tensor, extra)


def beat_case(pipe, beat: np.ndarray, fs: float, label: str) -> Case:
    pre = pipe.preprocessor
    spec = [op["op"] for op in pre.spec]
    if pre.channels != 1 or abs(pre.fs - fs) > 1e-9 or spec[spec.index("window") + 1:] not in ([], ["detrend"]):
        raise NoBaseline(f"signal spec {spec} at {fs} Hz")
    detrend = "detrend" in spec
    n = pre.length
    t = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    tt = float(t @ t)
    bound = BoundEngine(pipe, (1, 1, n))
    post = for_task(pipe.task).post(pipe, (n, 1), (n, 1))
    dst = bound.x[0, 0]

    def write():
        if detrend:
            dst[:] = beat - beat.mean() - (beat @ t / tt) * t
        else:
            dst[:] = beat

    def hand():
        write()
        return post(bound.run())

    def tensor():
        write()
        return bound.x.copy()

    return Case(label, lambda: pipe.predict(beat, fs=fs, units="mV", leads=("MLII",)), hand,
                _engine_alone(pipe, (1, 1, n), tensor()), tensor)


def record_case(pipe, sig, peaks: np.ndarray, label: str) -> Case:
    """A whole record through ``pipe.beats`` at given R peaks (no detector on either side) against the batched
    pipeline written by hand: the lead resampled once (scipy's resample_poly, as the spec says), every window cut
    with one fancy index, detrended in one expression, one engine call on the batch, softmax and argmax."""
    from fractions import Fraction

    from scipy import signal as ss

    pre = pipe.preprocessor
    spec = [op["op"] for op in pre.spec]
    if pre.channels != 1 or spec[spec.index("window") + 1:] not in ([], ["detrend"]):
        raise NoBaseline(f"signal spec {spec}")
    lead = pre.read_leads(sig)[0]
    ratio = Fraction(pre.fs / sig.fs).limit_denominator(1000)
    n, before = pre.length, pre.before
    t = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    tt = float(t @ t)
    name, out_name = pipe.input_name, pipe.output_name
    engine = pipe.engine
    if pipe.artifact.backend == "onnxruntime":
        def run_batch(x: np.ndarray) -> np.ndarray:
            return engine.session.run([out_name], {name: x})[0]
    else:
        request = engine.compiled.create_infer_request()
        port = engine.compiled.output(out_name)

        def run_batch(x: np.ndarray) -> np.ndarray:
            return request.infer({0: x})[port].copy()

    def run(x: np.ndarray) -> np.ndarray:  # a model exported with a fixed batch of 1 takes the beats one by one
        return run_batch(x) if pipe.dynamic_batch else np.concatenate([run_batch(w[None]) for w in x])

    def tensor() -> np.ndarray:
        x = sig.samples[:, lead]
        x = x if ratio == 1 else ss.resample_poly(x, ratio.numerator, ratio.denominator)
        at = np.round(peaks * float(ratio)).astype(np.int64)
        at = at[(at - before >= 0) & (at - before + n <= len(x))]
        w = x[at[:, None] + np.arange(-before, n - before)]
        if "detrend" in spec:
            w = w - w.mean(axis=1, keepdims=True) - ((w @ t) / tt)[:, None] * t
        return w[:, None, :].astype(np.float32)

    def hand() -> tuple[np.ndarray, np.ndarray]:
        logits = run(tensor())
        if pipe.output_kind != "probabilities":
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            logits = e / e.sum(axis=1, keepdims=True)
        return logits.argmax(axis=1), logits

    batch = tensor()

    def check() -> str | None:
        record = pipe.beats(sig, positions=peaks)
        index, probs = hand()
        if len(record.beats) != len(index):
            return f"beat counts differ: {len(record.beats)} and {len(index)}"
        ours = np.stack([b.probabilities for b in record.beats])
        if not (np.array_equal([b.index for b in record.beats], index) and np.allclose(ours, probs, atol=1e-5)):
            return f"results differ (probabilities by up to {np.max(np.abs(ours - probs)):.3g})"
        return None

    return Case(label, lambda: pipe.beats(sig, positions=peaks), hand, lambda: run(batch), tensor, check=check,
                calls=15)


# --- checking and timing ----------------------------------------------------------------------------------


def same(pipe, case: Case, source: Any, describe: dict) -> str | None:
    """Why the hand-written tensor or result differs from edgemed's, or None when they agree."""
    ours = pipe.prepare(source, **describe)
    tensor = case.tensor()
    if ours.tensor.shape != tensor.shape:
        return f"tensor shapes differ: {ours.tensor.shape} and {tensor.shape}"
    if not np.allclose(ours.tensor, tensor, rtol=1e-6, atol=1e-6):
        return f"tensors differ by up to {np.max(np.abs(ours.tensor - tensor)):.3g}"
    return None if for_task(pipe.task).agrees(case.predict(), case.hand()) else "results differ"


def measure(fns: dict[str, Callable[[], Any]], frames: int, warmup: int = 30) -> dict[str, np.ndarray]:
    """Seconds per call of each function, calls alternating one by one, every frame in another order.

    The orders run through every permutation (a seeded shuffle beyond four functions), not rotations of one
    order: a rotation keeps each call's neighbour, and the call right after an engine run starts while ONNX
    Runtime's worker threads still spin on the other core. With rotations, predict always followed the engine
    call alone and lost 0.07-0.1 ms per frame to it (224x224 classifier, 2 cores): a bias, not overhead.
    """
    import itertools
    import random

    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    if len(names) <= 4:
        orders = [list(p) for p in itertools.permutations(names)]
    else:
        rng = random.Random(0)
        orders = [rng.sample(names, len(names)) for _ in range(24)]
    times = {k: np.empty(frames) for k in names}
    clock = time.perf_counter
    for i in range(frames):
        for name in orders[i % len(orders)]:
            fn = fns[name]
            t0 = clock()
            fn()
            times[name][i] = clock() - t0
    return times


@dataclass
class Row:
    bundle: str
    artifact: str
    case: str
    predict_ms: float
    hand_ms: float
    engine_ms: float
    opencv_ms: float | None = None
    refused: str | None = None

    @property
    def ratio(self) -> float:
        return self.predict_ms / self.hand_ms

    def as_dict(self) -> dict:
        return {"bundle": self.bundle, "artifact": self.artifact, "case": self.case, "refused": self.refused,
                **({} if self.refused else {
                    "predict_p50_ms": round(self.predict_ms, 4), "hand_p50_ms": round(self.hand_ms, 4),
                    "engine_p50_ms": round(self.engine_ms, 4), "ratio": round(self.ratio, 4),
                    "predict_over_engine_us": round((self.predict_ms - self.engine_ms) * 1e3, 1),
                    "hand_over_engine_us": round((self.hand_ms - self.engine_ms) * 1e3, 1),
                    "opencv_p50_ms": None if self.opencv_ms is None else round(self.opencv_ms, 4)})}

    def line(self) -> str:
        head = f"{self.bundle:16s} {self.artifact:17s} {self.case:27s}"
        if self.refused:
            return f"{head} not compared: {self.refused}"
        cv = f"  opencv {self.opencv_ms:.3f} ms ({self.predict_ms / self.opencv_ms:.2f})" if self.opencv_ms else ""
        return (f"{head} predict {self.predict_ms:.3f} ms  hand {self.hand_ms:.3f} ms  ratio {self.ratio:.3f}  "
                f"engine {self.engine_ms:.3f} ms  over engine: predict {(self.predict_ms - self.engine_ms) * 1e3:.0f}"
                f" us, hand {(self.hand_ms - self.engine_ms) * 1e3:.0f} us{cv}")


def cases_for(pipe, quick: bool) -> list[tuple[Case, np.ndarray, dict]]:
    """The inputs a bundle is compared on: shipped sample frames (segmentation also at full resolution) or beats."""
    from PIL import Image

    from edgemed.datasets import ImageSet
    from edgemed.input_kinds import input_kind
    from edgemed.samples import samples_dir, samples_for_task

    kind = input_kind(pipe.input_kind)
    if kind.recordings:  # beats: one shipped held-out beat, and a whole record cut into beats
        with np.load(samples_dir(kind.shipped_verdict)) as d:
            beat = d["signals"][0].astype(np.float64) / float(d["adc_gain"])  # MIT-BIH DS2 counts to mV
            fs = float(d["fs"])
        describe = {"fs": fs, "units": "mV", "leads": ("MLII",)}
        cases = [(beat_case(pipe, beat, fs, f"beat {beat.size} @ {fs:g} Hz"), beat, describe)]
        if quick:
            return cases
        from edgemed.io.signals import read_signal
        from edgemed.samples import ecg_record

        sig = read_signal(ecg_record())  # MIT-BIH 213, 10 min at 360 Hz
        peaks = np.array([b.sample for b in pipe.beats(sig).beats])  # the detector once, outside the timing
        label = f"record {sig.duration / 60:.0f} min, {len(peaks)} beats"
        try:
            return cases + [(record_case(pipe, sig, peaks, label), sig, {})]
        except NoBaseline as exc:
            refused = f"no hand-written baseline ({exc})"
            return cases + [(Case(label, *[lambda: None] * 4, check=lambda: refused), sig, {})]
    frame = next(iter(ImageSet.open(samples_for_task(pipe.task))))[1]
    sizes = for_task(pipe.task).frame_sizes(quick)  # segmentation: also at full resolution
    frames = [frame] if sizes is None else [
        np.asarray(Image.fromarray(frame).resize((w, h), Image.Resampling.BILINEAR)) for h, w in sizes]
    where = f", NMS {pipe.detection.nms}" if pipe.detection is not None else ""
    return [(image_case(pipe, f, f"frame {f.shape[0]}x{f.shape[1]}" + ("" if f.ndim == 2 else "x3") + where), f, {})
            for f in frames]


def compare(bundle: str, frames: int, quick: bool = False) -> list[Row]:
    probe = edgemed.load(bundle)
    # uncertified artifacts (an INT8 one the gate could not judge) are timed too: cost does not need a verdict
    artifacts = [a for a in probe.bundle.artifacts if a.verdict in ("passed", "uncertified")
                 and a.backend in ("onnxruntime", "openvino")]
    name = probe.bundle.name
    probe.close()
    rows = []
    for art in artifacts:
        accept = None if art.verdict == "passed" else art.verdict
        with edgemed.load(bundle, backend=art.backend, precision=art.precision, accept=accept) as pipe:
            try:
                cases = cases_for(pipe, quick)
            except NoBaseline as exc:
                rows.append(Row(name, art.key, "-", 0, 0, 0, refused=f"no hand-written baseline ({exc})"))
                continue
            for case, source, describe in cases:
                why = case.check() if case.check is not None else same(pipe, case, source, describe)
                if why:
                    rows.append(Row(name, art.key, case.label, 0, 0, 0, refused=why))
                    continue
                fns = {"predict": case.predict, "hand": case.hand, "engine": case.engine, **case.extra}
                calls = case.calls if case.calls is not None else frames
                t = {k: float(np.median(v)) * 1e3 for k, v in measure(fns, calls, warmup=min(30, calls)).items()}
                rows.append(Row(name, art.key, case.label, t["predict"], t["hand"], t["engine"], t.get("opencv")))
    return rows


def main(argv: list[str] | None = None) -> list[Row]:
    import os

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="+")
    ap.add_argument("--frames", type=int, default=600, help="calls of each pipeline, alternated (default 600)")
    ap.add_argument("--quick", action="store_true", help="60 frames a case, the largest segmentation frame only (CI)")
    ap.add_argument("--json", help="also write the table here (a JSON list of rows)")
    ap.add_argument("--history", nargs="?", const="", default=None,
                    help="append the table to the bench history (default store, or this path): scenario overhead")
    args = ap.parse_args(argv)
    frames = 60 if args.quick else args.frames  # quick: 270 calls a case with warm-up; 10 s for the U-Net here
    print(f"load average {os.getloadavg()[0]:.2f} (1 min); {frames} frames per case, calls alternated per frame; "
          "ratio = predict p50 / hand-written p50 on the same engine object")
    rows = []
    for bundle in args.bundles:
        for row in compare(bundle, frames, quick=args.quick):
            print(row.line(), flush=True)
            rows.append(row)
    if args.json:
        import json

        from edgemed.atomic import write_atomic

        write_atomic(args.json, json.dumps([r.as_dict() for r in rows], indent=1).encode())
    if args.history is not None:
        record_history(rows, args.bundles, args.history or None)
    return rows


def record_history(rows: list[Row], bundles: list[str], path: str | None) -> None:
    """The table into the bench history, one run per compared case (``edgemed bench --history`` shows them beside
    the latency runs: the same store, scenario ``overhead``), with the load it was measured under."""
    import datetime
    import os

    from edgemed.benchmarks.history import History
    from edgemed.bundle import Bundle

    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    opened = {bundle.name: bundle for bundle in map(Bundle.open, bundles)}
    load = round(os.getloadavg()[0], 2)
    History(path).append([{
        "created": created, "bundle_sha256": opened[r.bundle].manifest_sha256(), "model": r.bundle,
        "artifact": r.artifact, "backend": r.artifact.split("/")[0], "precision": r.artifact.split("/")[-1],
        "device": "cpu", "scenario": "overhead", "record": {
            **r.as_dict(), "load_average_1min": load, "workload": {"case": r.case},
            # predict's p50 as the series the report trends and checks for regressions (per case)
            "latency": {"end_to_end": {"p50_ms": round(r.predict_ms, 4)}}}}
        for r in rows if r.refused is None])


if __name__ == "__main__":
    main()
