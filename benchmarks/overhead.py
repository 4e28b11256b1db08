"""edgemed's end-to-end overhead over a hand-written PIL/numpy + ``session.run`` loop, side by side.

pytest-benchmark runs one benchmark after another, so a shared machine's drift between them
shows up as overhead (or as a speed-up). This script alternates blocks of 50 calls of the two,
reversing the order every block, and reports the p50 ratio from one run.

    python benchmarks/overhead.py BUNDLE [BUNDLE ...]
"""

from __future__ import annotations

import argparse
import functools
import time

import numpy as np
import onnxruntime as ort
from PIL import Image

import edgemed
from edgemed.datasets import ImageSet
from edgemed.samples import samples_for_task

BLOCK = 50


def hand_written(bundle: str, frame: np.ndarray, task: str, shape: list):
    """What a user writes without edgemed, for the shipped models' preprocessing."""
    session = ort.InferenceSession(f"{bundle}/model.onnx", providers=["CPUExecutionProvider"])
    h, w = shape[2:]

    def run():
        x = np.asarray(Image.fromarray(frame).resize((w, h), Image.Resampling.BILINEAR), np.float32)
        if task == "segmentation":
            x = (x - x.min()) / max(float(x.max() - x.min()), 1e-6)
        else:
            x = (x / 255 - 0.5) / 0.5
        out = session.run(None, {"input": x[None, None]})[0]
        if task == "segmentation":
            return np.asarray(Image.fromarray(out[0, 1] - out[0, 0]).resize(frame.shape[::-1])) > 0
        return int(np.argmax(out))

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="+")
    ap.add_argument("--calls", type=int, default=1000)
    args = ap.parse_args()
    for bundle in args.bundles:
        pipe = edgemed.load(bundle, backend="onnxruntime", precision="fp32")
        frame = next(iter(ImageSet.open(samples_for_task(pipe.task))))[1]
        hand = hand_written(bundle, frame, pipe.task, pipe.bundle.manifest.input.shape)
        ours = functools.partial(pipe.predict, frame)
        for fn in (hand, ours):
            for _ in range(BLOCK):
                fn()
        samples: dict = {"hand": [], "edgemed": []}
        for r in range(max(2, args.calls // BLOCK)):
            order = (("hand", hand), ("edgemed", ours)) if r % 2 == 0 else (("edgemed", ours), ("hand", hand))
            for name, fn in order:
                for _ in range(BLOCK):
                    t0 = time.perf_counter()
                    fn()
                    samples[name].append(time.perf_counter() - t0)
        a, b = np.median(samples["hand"]) * 1e3, np.median(samples["edgemed"]) * 1e3
        print(f"{pipe.bundle.name}: hand-written p50 {a:.3f} ms, edgemed predict p50 {b:.3f} ms, "
              f"ratio {b / a:.3f}")


if __name__ == "__main__":
    main()
