"""What ``--explain cam`` costs ``predict``, measured side by side (issue 22: target <= 5%).

The same shipped classifier converted twice, without and with ``--explain cam`` (its graph then has the feature
map as a second output), each opened on ONNX Runtime FP32 and OpenVINO FP32. Per backend, four calls alternate
frame by frame, every frame in a new random order, on real 256x256 BUSI frames:

- ``plain``: predict on the bundle without explanation;
- ``cam``: predict on the ``--explain`` bundle, the map not read (what every frame pays: the extra output and
  the result's lazy map);
- ``cam+map``: the same, then ``r.saliency`` read (the map made at the frame's size);
- ``plain again``: a second pipeline of the plain bundle: two engines of one model differ by themselves on a
  loaded 2-core machine, and this pair shows by how much (the noise floor of the ``cam / plain`` ratio);
- ``cam engine, no map``: a second pipeline on the very engine of ``cam`` with its explainer off: ``cam`` against
  it is what carrying the lazy map costs per frame on one engine, free of the two-engine noise (the extra
  output's copy is in both).

Ratios are of medians over the same frames.

    python benchmarks/studies/saliency_cost.py [--frames 600] [--plain BUNDLE --cam BUNDLE] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

import edgemed
from edgemed.benchmarks.explanation_cost import p50_alternating
from edgemed.pipeline import Pipeline

BACKENDS = ("onnxruntime", "openvino")


def _frames(count: int) -> list[np.ndarray]:
    from edgemed.samples import samples_dir

    frames = [edgemed.read_image(p) for p in sorted(samples_dir("busi").glob("*.png"))]
    return [frames[i % len(frames)] for i in range(count)]


def _bundles(folder: Path) -> tuple[Path, Path]:
    """The shipped classifier without and with --explain cam, as ORT and OpenVINO FP32 (the benchmark's own)."""
    from edgemed.converters.convert import convert
    from edgemed.samples import shipped_model

    weights, card = shipped_model("cnn_breastmnist")
    common = dict(task=card["task"], input_shape=tuple(card["input_shape"]), arch=card["arch"],
                  arch_args=card["arch_args"], labels=tuple(card["labels"]), preprocess=tuple(card["preprocess"]),
                  targets=("onnx", "openvino"), precisions=("fp32",))
    return (convert(weights, folder / "plain", **common),
            convert(weights, folder / "cam", explain="cam", **common))


def measure(plain: Path, cam: Path, backend: str, frames: list[np.ndarray], warmup: int = 30) -> dict:
    pipes = {"plain": edgemed.load(plain, backend=backend, precision="fp32"),
             "cam": edgemed.load(cam, backend=backend, precision="fp32"),
             "plain again": edgemed.load(plain, backend=backend, precision="fp32")}
    bare = Pipeline(pipes["cam"].bundle, pipes["cam"].engine, pipes["cam"].selection)  # shares cam's engine
    bare.explainer = None
    try:
        calls = {
            "cam engine, no map": lambda f: bare.predict(f),
            "plain": lambda f: pipes["plain"].predict(f),
            "cam": lambda f: pipes["cam"].predict(f),
            "cam+map": lambda f: pipes["cam"].predict(f).saliency,
            "plain again": lambda f: pipes["plain again"].predict(f),
        }
        p50 = p50_alternating(calls, frames, warmup)
    finally:
        for p in pipes.values():
            p.close()
    return {"backend": backend, "frames": len(frames), "p50_ms": {k: round(v * 1e3, 4) for k, v in p50.items()},
            "cam / plain": round(p50["cam"] / p50["plain"], 4),
            "cam+map / plain": round(p50["cam+map"] / p50["plain"], 4),
            "plain again / plain": round(p50["plain again"] / p50["plain"], 4),
            "cam / cam engine, no map": round(p50["cam"] / p50["cam engine, no map"], 4)}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--plain", type=Path, help="a bundle of the model without --explain (default: converted here)")
    ap.add_argument("--cam", type=Path, help="the same model with --explain cam (default: converted here)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    frames = _frames(args.frames)
    with tempfile.TemporaryDirectory() as tmp:
        plain, cam = (args.plain, args.cam) if args.plain and args.cam else _bundles(Path(tmp))
        rows = [measure(plain, cam, backend, frames) for backend in BACKENDS]
    for r in rows:
        print(f"{r['backend']:12s} p50 ms {r['p50_ms']}  cam/plain {r['cam / plain']:.3f}  "
              f"cam+map/plain {r['cam+map / plain']:.3f}  noise (plain again/plain) {r['plain again / plain']:.3f}  "
              f"cam/(same engine, no map) {r['cam / cam engine, no map']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
