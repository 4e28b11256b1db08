"""Where a detector's NMS should run: appended to the ONNX graph, or on the host after the engine.

Converts the shipped detector twice (``--nms graph`` and ``--nms host``, same weights, same data),
checks both give the same detections on every frame, then times ``predict`` on the shipped BUSI
frames in alternating blocks (order reversed each block, as the first benchmarks/studies/overhead.py did) on every
backend both bundles hold, and prints the p50 ratio host / graph from one run.

    python benchmarks/studies/nms_placement.py [--calls 1000] [--to onnx,openvino]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import edgemed
from edgemed.datasets import ImageSet
from edgemed.detection import match
from edgemed.samples import calibration_set, samples_for_task, shipped_model

BLOCK = 20


def _bundle(out: Path, nms: str, targets: tuple[str, ...]) -> Path:
    from edgemed.converters.convert import convert

    weights, card = shipped_model("det_busi")
    return convert(weights, out, task=card["task"], input_shape=tuple(card["input_shape"]), arch=card["arch"],
                   arch_args=card["arch_args"], labels=tuple(card["labels"]), preprocess=tuple(card["preprocess"]),
                   calib=calibration_set(card["task"]), targets=targets, precisions=("fp32",), nms=nms)


def _same(a, b) -> bool:
    found, ious = match(a, b, 0.5)
    return len(a) == len(b) and bool((found >= 0).all()) and bool((ious >= 0.999).all())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--to", default="onnx,openvino")
    args = ap.parse_args()
    frames = [im for _, im in ImageSet.open(samples_for_task(shipped_model("det_busi")[1]["task"]))]
    targets = tuple(args.to.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        bundles = {nms: _bundle(Path(tmp) / nms, nms, targets) for nms in ("graph", "host")}
        for backend in ("onnxruntime", "openvino")[:len(targets)]:
            pipes = {nms: edgemed.load(b, backend=backend, precision="fp32", accept="uncertified")
                     if backend != "onnxruntime" else edgemed.load(b, backend=backend, precision="fp32")
                     for nms, b in bundles.items()}
            for f in frames:
                if not _same(pipes["graph"].predict(f).detections, pipes["host"].predict(f).detections):
                    raise SystemExit(f"{backend}: graph and host NMS disagree on a frame; not timing them")
            times: dict[str, list[float]] = {"graph": [], "host": []}
            rounds = max(1, args.calls // BLOCK)
            for r in range(rounds):
                order = ("graph", "host") if r % 2 == 0 else ("host", "graph")
                for nms in order:
                    pipe = pipes[nms]
                    for k in range(BLOCK):
                        t0 = time.perf_counter()
                        pipe.predict(frames[k % len(frames)])
                        times[nms].append(time.perf_counter() - t0)
            p50 = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
            print(f"{backend}: predict p50 graph NMS {p50['graph']:.3f} ms, host NMS {p50['host']:.3f} ms, "
                  f"host/graph {p50['host'] / p50['graph']:.3f} ({len(times['graph'])} calls each, alternating)")
            for p in pipes.values():
                p.close()


if __name__ == "__main__":
    main()
