"""Load on a real Triton over loopback: throughput and latency against concurrency, batching on and off.

Run in the serving environment (``.venv-serve``: nvidia-pytriton pins numpy<2):

    .venv-serve/bin/python benchmarks/triton_load.py BUNDLE [BUNDLE ...] [--requests 400] [--concurrency 1,4,16,64]

For each bundle it starts ``edgemed serve``'s Triton twice (``max_batch`` 8 with a 2 ms queue
delay, and 0: no batching), sends real frames (the bundle's shipped samples) as KServe v2 binary
HTTP requests from N threads, and prints requests per second with p50/p99 latency per
concurrency, beside in-process ``predict`` on the same frames in the same run (the ceiling one
process reaches without a network hop). A benchmark, not a test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import socket
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

import edgemed
from edgemed.bundle import Bundle
from edgemed.datasets import ImageSet
from edgemed.samples import samples_for_task
from edgemed.triton_repository import export_repository
from edgemed.triton_server import start


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(base: str, model: str, frame: np.ndarray) -> float:
    x = (frame if frame.ndim == 3 else frame[:, :, None])[None]
    name, kind = ("IMAGE_UINT8", "UINT8") if x.dtype == np.uint8 else ("IMAGE_FP32", "FP32")
    x = x.astype(np.float32) if kind == "FP32" else x
    header = json.dumps({"inputs": [{"name": name, "shape": list(x.shape), "datatype": kind,
                                     "parameters": {"binary_data_size": x.nbytes}}]}).encode()
    req = urllib.request.Request(f"{base}/v2/models/{model}/infer", data=header + x.tobytes(),
                                 headers={"Inference-Header-Content-Length": str(len(header))})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as r:
        r.read()
    return time.perf_counter() - t0


def _load(base: str, model: str, frames: list, concurrency: int, requests: int) -> dict:
    for f in frames[:4]:
        _request(base, model, f)  # warm-up
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(concurrency) as pool:
        lat = list(pool.map(lambda i: _request(base, model, frames[i % len(frames)]), range(requests)))
    wall = time.perf_counter() - t0
    return _figures(lat, requests / wall)


def _figures(lat: list[float], rps: float) -> dict:
    return {"rps": rps, "p50_ms": 1e3 * float(np.median(lat)), "p99_ms": 1e3 * float(np.percentile(lat, 99))}


def _in_process(bundle: Path, frames: list, requests: int) -> dict:
    with edgemed.load(bundle) as pipe:
        for f in frames[:4]:
            pipe.predict(f)
        lat = []
        t0 = time.perf_counter()
        for i in range(requests):
            t = time.perf_counter()
            pipe.predict(frames[i % len(frames)])
            lat.append(time.perf_counter() - t)
        wall = time.perf_counter() - t0
    return _figures(lat, requests / wall)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="+", type=Path)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--concurrency", default="1,4,16,64")
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    for bundle in args.bundles:
        b = Bundle.open(bundle)
        frames = [im for _, im in ImageSet.open(samples_for_task(b.task))]
        local = _in_process(bundle, frames, args.requests)
        print(f"{b.name}: in-process predict {local['rps']:.0f} frames/s, p50 {local['p50_ms']:.2f} ms, "
              f"p99 {local['p99_ms']:.2f} ms", flush=True)
        for max_batch in (8, 0):
            with tempfile.TemporaryDirectory() as tmp:
                repo = Path(tmp) / "repo"
                (name,) = export_repository([bundle], repo, max_batch=max_batch, queue_delay_us=2000)
                with start(repo, http_port=_port(), grpc_port=_port(), metrics_port=_port()) as srv:
                    for c in levels:
                        r = _load(srv.http, name, frames, c, args.requests)
                        print(f"{b.name}: Triton max_batch {max_batch}, {c:>2} in flight: {r['rps']:.0f} req/s, "
                              f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms", flush=True)


if __name__ == "__main__":
    main()
