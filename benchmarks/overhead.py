"""edgemed's end-to-end cost over the hand-written equivalent, for any bundle and every backend, side by side.

The hand-written equivalent is what a careful user writes without edgemed for the same bundle:
the preprocessing spec's ops in plain PIL/numpy (written here op by op, independently of
edgemed's Preprocessor), the backend's own call on an identically configured session or
compiled model (same threads, same spinning, same precision hint: so only edgemed's layers are
measured, not a different engine setting), and the same postprocessing (softmax/argmax, or the
mask mapped back to the frame's size). Both must give the same answer on the frame, or the
comparison is refused.

pytest-benchmark runs one benchmark after another, so a shared machine's drift between them
shows up as overhead (or as a speed-up). This script alternates blocks of 50 calls of the two,
reversing the order every block, and reports the p50 ratio from one run.

    python benchmarks/overhead.py BUNDLE [BUNDLE ...] [--frame IMAGE] [--calls 2000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from PIL import Image

import edgemed
from edgemed.datasets import ImageSet
from edgemed.samples import samples_for_task

BLOCK = 20  # calls per function per round, in two halves
_PIL = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
        "bicubic": Image.Resampling.BICUBIC, "area": Image.Resampling.BOX, "lanczos": Image.Resampling.LANCZOS}


def _resize(x: np.ndarray, op: dict) -> np.ndarray:
    h, w = op["size"]
    method = _PIL[op.get("interpolation", "bilinear")]
    if op.get("keep_aspect"):
        raise NotImplementedError("letterbox is not in the hand-written baseline")
    if x.dtype == np.uint8:
        return np.asarray(Image.fromarray(x).resize((w, h), method))
    planes = [x] if x.ndim == 2 else [x[:, :, c] for c in range(x.shape[2])]
    out = [np.asarray(Image.fromarray(p.astype(np.float32), "F").resize((w, h), method)) for p in planes]
    return out[0] if x.ndim == 2 else np.stack(out, axis=2)


def hand_written_preprocess(spec: list[dict], layout: str) -> Callable[[np.ndarray], np.ndarray]:
    """The spec as straight-line PIL/numpy, the way a user writes it from the model's documentation."""

    def run(frame: np.ndarray) -> np.ndarray:
        x = frame
        for op in spec:
            name = op["op"]
            if name == "to_gray" and x.ndim == 3:
                x = np.asarray(Image.fromarray(x).convert("L")) if x.dtype == np.uint8 else x @ np.float32(
                    [0.299, 0.587, 0.114])
            elif name == "to_rgb" and x.ndim == 2:
                x = np.stack([x, x, x], axis=2)
            elif name == "resize":
                x = _resize(x, op)
            elif name == "center_crop":
                h, w = op["size"]
                top, left = (x.shape[0] - h) // 2, (x.shape[1] - w) // 2
                x = x[top:top + h, left:left + w]
            elif name == "scale":
                x = x.astype(np.float32) * np.float32(op["factor"])
            elif name == "minmax":
                x = x.astype(np.float32)
                x = (x - x.min()) / max(float(x.max() - x.min()), 1e-12)
            elif name == "normalize":
                x = (x.astype(np.float32) - np.float32(op["mean"])) / np.float32(op["std"])
            elif name == "window":
                c, w = op["center"], op["width"]
                x = np.clip((x.astype(np.float32) - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
            elif name in ("to_gray", "to_rgb"):
                pass
            else:
                raise NotImplementedError(f"op {name!r} is not in the hand-written baseline")
        x = x.astype(np.float32, copy=False)
        x = x[:, :, None] if x.ndim == 2 else x
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None] if layout == "NCHW" else x[None])

    return run


def raw_call(pipe) -> Callable[[np.ndarray], np.ndarray]:
    """The backend's own call on the very session (ONNX Runtime) or compiled model (OpenVINO) edgemed runs.

    Sharing it is what makes the comparison fair on a small machine: two ONNX Runtime sessions
    each keep a spinning thread pool, and on two cores whichever ran last slows the other's next
    calls, which swamped the few-percent differences measured here.
    """
    engine, art = pipe.engine, pipe.artifact
    if art.backend == "onnxruntime":
        session, name = engine.session, pipe.input_name
        return lambda x: session.run(None, {name: x})[0]
    if art.backend == "openvino":
        request = engine.compiled.create_infer_request()

        def run(x: np.ndarray) -> np.ndarray:
            request.infer({0: x})
            return request.get_output_tensor(0).data.copy()

        return run
    raise NotImplementedError(f"no hand-written baseline for {art.backend}")


def hand_written(pipe, frame: np.ndarray) -> Callable[[], object]:
    pre = hand_written_preprocess(pipe.bundle.manifest.preprocess, pipe.bundle.manifest.input.layout)
    call = raw_call(pipe)
    task, kind = pipe.task, pipe.output_kind

    def run():
        out = call(pre(frame))
        if task == "classification":
            z = out[0] if kind == "probabilities" else np.exp(out[0] - out[0].max())
            return int(np.argmax(z / z.sum()))
        # The foreground probability map, resized to the frame and thresholded: the bundle's own rule
        # ("bilinear on probabilities"), so that both give the same mask.
        logit = (out[0, 1] - out[0, 0]) if out.shape[1] == 2 else out[0, 0]
        p = 1.0 / (1.0 + np.exp(-logit))
        h, w = frame.shape[:2]
        return np.asarray(Image.fromarray(np.ascontiguousarray(p, np.float32), "F").resize(
            (w, h), Image.Resampling.BILINEAR)) > 0.5

    return run


def measure(fns: dict[str, Callable[[], object]], calls: int) -> dict[str, list[float]]:
    """Per round, the p50 seconds of each function; rounds alternate short blocks, order reversed each time.

    A shared machine's speed drifts by more than the differences measured here (10% between rounds
    was seen), so ratios are formed within a round, where both ran under the same conditions.
    """
    for fn in fns.values():
        for _ in range(BLOCK):
            fn()
    names = list(fns)
    rounds: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(max(4, calls // (2 * BLOCK))):
        samples: dict[str, list[float]] = {k: [] for k in fns}
        for half in range(2):
            for name in names if (r + half) % 2 == 0 else names[::-1]:
                fn, out = fns[name], samples[name]
                for _ in range(BLOCK // 2):
                    t0 = time.perf_counter()
                    fn()
                    out.append(time.perf_counter() - t0)
        for k, v in samples.items():
            rounds[k].append(float(np.median(v)))
    return rounds


def compare(bundle: str, frame: np.ndarray | None, calls: int) -> list[str]:
    lines = []
    probe = edgemed.load(bundle)
    artifacts = [a for a in probe.bundle.artifacts if a.drift.passed and a.backend in ("onnxruntime", "openvino")]
    probe.close()
    for art in artifacts:
        with edgemed.load(bundle, backend=art.backend, precision=art.precision) as pipe:
            image = frame if frame is not None else next(iter(ImageSet.open(samples_for_task(pipe.task))))[1]
            hand = hand_written(pipe, image)
            ours = pipe.predict(image)
            same = (ours.index == hand()) if pipe.task == "classification" else (
                np.mean(ours.mask.astype(bool) == hand()) > 0.999)
            if not same:
                lines.append(f"{pipe.bundle.name} {art.key}: hand-written answer differs from edgemed's; not compared")
                continue
            rounds = measure({"hand": hand, "edgemed": lambda p=pipe, im=image: p.predict(im)}, calls)
            ratios = np.array(rounds["edgemed"]) / np.array(rounds["hand"])
            lo, mid, hi = np.percentile(ratios, [25, 50, 75])
            lines.append(f"{pipe.bundle.name} {art.key}: hand-written p50 {np.median(rounds['hand']) * 1e3:.3f} ms, "
                         f"edgemed predict p50 {np.median(rounds['edgemed']) * 1e3:.3f} ms, ratio {mid:.3f} "
                         f"(IQR {lo:.3f}-{hi:.3f} over {len(ratios)} paired rounds)")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="+")
    ap.add_argument("--frame", help="An image to run (default: the shipped sample for the bundle's task).")
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args()
    frame = edgemed.read_image(args.frame) if args.frame else None
    for bundle in args.bundles:
        for line in compare(bundle, frame, args.calls):
            print(line, flush=True)


if __name__ == "__main__":
    main()
