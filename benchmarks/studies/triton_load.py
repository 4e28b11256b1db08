"""Served against in-process, in one run: throughput and latency of ``edgemed serve``'s Triton per protocol and load.

Run in the serving environment (``.venv-serve``: nvidia-pytriton pins numpy<2):

    .venv-serve/bin/python benchmarks/studies/triton_load.py BUNDLE [BUNDLE ...] [--requests 400]
        [--in-flight 1,2,4,8] [--protocols http-binary,http-json,grpc] [--json OUT] [--history [PATH]]

For each bundle it starts Triton exactly as ``edgemed serve`` does (its defaults, or ``--max-batch``,
``--max-queue-delay-us``, ``--callers``), sends the bundle's shipped sample frames from N client threads
over KServe v2 (HTTP with binary tensors, HTTP with plain JSON, gRPC through tritonclient) and
measures, in the same run and between the served points, the in-process ceiling: ``predict`` p50 on
one thread, and the best throughput of one pipeline on one thread and of N pipelines with one intra-op
thread each (the machine's best in process, issue 29). It prints served/in-process ratios, and writes
the table as JSON (``--json``) and into the bench history (``--history``, scenario ``serve-PROTOCOL-N``).
A benchmark, not a test: the figures belong to the machine and its load (client threads, Triton and
the model share the cores, as they do on a one-box deployment).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime
import json
import socket
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

import edgemed
from edgemed.benchmarks.harness import run_threads
from edgemed.bundle import Bundle
from edgemed.datasets import ImageSet
from edgemed.ensemble.files import ENSEMBLE, is_ensemble
from edgemed.samples import samples_for_task
from edgemed.serve.triton_repository import export_repository
from edgemed.serve.triton_server import start

KINDS = {np.dtype(np.uint8): ("IMAGE_UINT8", "UINT8"), np.dtype(np.uint16): ("IMAGE_UINT16", "UINT16"),
         np.dtype(np.float32): ("IMAGE_FP32", "FP32")}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tensor(frame: np.ndarray) -> np.ndarray:
    x = (frame if frame.ndim == 3 else frame[:, :, None])[None]
    return x if x.dtype in KINDS else x.astype(np.float32)


def _http(base: str, model: str, x: np.ndarray, binary: bool) -> None:
    name, kind = KINDS[x.dtype]
    if binary:
        header = json.dumps({"inputs": [{"name": name, "shape": list(x.shape), "datatype": kind,
                                         "parameters": {"binary_data_size": x.nbytes}}],
                             "parameters": {"binary_data_output": True}}).encode()  # answers as bytes too
        body, headers = header + x.tobytes(), {"Inference-Header-Content-Length": str(len(header))}
    else:
        body = json.dumps({"inputs": [{"name": name, "shape": list(x.shape), "datatype": kind,
                                       "data": x.ravel().tolist()}]}).encode()
        headers = {"Content-Type": "application/json"}
    with urllib.request.urlopen(urllib.request.Request(f"{base}/v2/models/{model}/infer", data=body,
                                                       headers=headers), timeout=120) as r:
        r.read()


class _Grpc:
    """One tritonclient gRPC client per client thread (tritonclient's clients are not shared across threads)."""

    def __init__(self, url: str) -> None:
        self.url, self.local = url, threading.local()

    def __call__(self, model: str, x: np.ndarray) -> None:
        import tritonclient.grpc as grpcclient

        client = getattr(self.local, "client", None)
        if client is None:
            client = self.local.client = grpcclient.InferenceServerClient(self.url)
        name, kind = KINDS[x.dtype]
        tensor = grpcclient.InferInput(name, list(x.shape), kind)
        tensor.set_data_from_numpy(x)
        client.infer(model, [tensor])


def _served(call, model: str, tensors: list, in_flight: int, requests: int) -> dict:
    def one(i: int) -> float:
        t0 = time.perf_counter()
        call(model, tensors[i % len(tensors)])
        return time.perf_counter() - t0

    with cf.ThreadPoolExecutor(in_flight) as pool:
        list(pool.map(one, range(2 * in_flight)))  # warm every client thread
        t0 = time.perf_counter()
        lat = list(pool.map(one, range(requests)))
    return _figures(lat, requests / (time.perf_counter() - t0))


def _figures(lat: list[float], rate: float) -> dict:
    return {"per_s": rate, "p50_ms": 1e3 * float(np.median(lat)), "p99_ms": 1e3 * float(np.percentile(lat, 99))}


def _in_process(pipes: list, frames: list, requests: int) -> dict:
    """Frames per second with thread i calling pipes[i]; latency per call."""
    lat: list[float] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        mine = []
        for k in range(i, requests, len(pipes)):
            t0 = time.perf_counter()
            pipes[i].predict(frames[k % len(frames)])
            mine.append(time.perf_counter() - t0)
        with lock:
            lat.extend(mine)

    return _figures(lat, requests / run_threads(work, len(pipes)))


def _ceiling(bundle: Path, frames: list, requests: int, n: int) -> dict:
    """In process, now: p50 on one thread, and the best throughput of (one pipeline, one thread) and (n pipelines,
    threads=1 each)."""
    one = edgemed.load(bundle)
    many = [edgemed.load(bundle, threads=1) for _ in range(n)]
    try:
        single = _in_process([one], frames, requests)
        spread = _in_process(many, frames, requests) if n > 1 else single
    finally:
        for p in [one, *many]:
            p.close()
    return {"p50_ms": single["p50_ms"], "best_per_s": max(single["per_s"], spread["per_s"]),
            "one_thread_per_s": single["per_s"], f"{n}_pipelines_per_s": spread["per_s"]}


def _described(bundle: Path) -> tuple[str, str, str]:
    """The name shown, the task and the SHA-256 of the manifest of a bundle, or of an ensemble (served as one model,
    like a bundle)."""
    if is_ensemble(bundle):
        from edgemed.ensemble.opening import open_ensemble
        from edgemed.hashing import sha256_file

        return Path(bundle).resolve().name, open_ensemble(bundle).manifest.task, sha256_file(Path(bundle) / ENSEMBLE)
    b = Bundle.open(bundle)
    return b.name, b.task, b.manifest_sha256()


def run(bundle: Path, requests: int, levels: list[int], protocols: list[str], max_batch: int | None,
        delay_us: int | None, callers: int | None) -> list[dict]:
    name_shown, task, _ = _described(bundle)
    frames = [im for _, im in ImageSet.open(samples_for_task(task))][:32]
    tensors = [_tensor(f) for f in frames]
    options = {k: v for k, v in (("max_batch", max_batch), ("queue_delay_us", delay_us), ("callers", callers))
               if v is not None}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        (name,) = export_repository([bundle], repo, **options)
        with start(repo, http_port=_port(), grpc_port=_port(), metrics_port=_port()) as srv:
            calls = {"http-binary": lambda m, x: _http(srv.http, m, x, True),
                     "http-json": lambda m, x: _http(srv.http, m, x, False), "grpc": _Grpc(srv.grpc)}
            for n in levels:
                before = _ceiling(bundle, frames, requests, max(n, 2))
                for protocol in protocols:
                    served = _served(calls[protocol], name, tensors, n, requests)
                    after = _ceiling(bundle, frames, requests, max(n, 2))
                    best = statistics.mean([before["best_per_s"], after["best_per_s"]])
                    p50 = statistics.mean([before["p50_ms"], after["p50_ms"]])
                    rows.append({"model": name_shown, "protocol": protocol, "in_flight": n, **served,
                                 "in_process_best_per_s": best, "in_process_p50_ms": p50,
                                 "served_over_best": served["per_s"] / best, "p50_over_in_process_ms":
                                 served["p50_ms"] - p50, "config": options or "edgemed serve defaults"})
                    print(f"{name_shown} {protocol:11s} {n} in flight: {served['per_s']:7.1f}/s p50 "
                          f"{served['p50_ms']:7.2f} ms p99 {served['p99_ms']:7.2f} | in process best "
                          f"{best:7.1f}/s p50 {p50:6.2f} ms | served/best {served['per_s'] / best:4.2f}, "
                          f"p50 +{served['p50_ms'] - p50:.2f} ms", flush=True)
                    before = after
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="+", type=Path)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--in-flight", default="1,2,4,8")
    ap.add_argument("--protocols", default="http-binary,http-json,grpc")
    ap.add_argument("--max-batch", type=int)
    ap.add_argument("--max-queue-delay-us", type=int)
    ap.add_argument("--callers", type=int)
    ap.add_argument("--json", type=Path, help="write the table here")
    ap.add_argument("--history", nargs="?", const="", default=None, help="append to the bench history")
    args = ap.parse_args()
    rows = []
    for bundle in args.bundles:
        rows += run(bundle, args.requests, [int(c) for c in args.in_flight.split(",")], args.protocols.split(","),
                    args.max_batch, args.max_queue_delay_us, args.callers)
    if args.json:
        args.json.write_text(json.dumps({"serving": rows}, indent=1))
    if args.history is not None:
        from edgemed.benchmarks.history import History

        created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        store = History(args.history or None)
        described = [_described(b) for b in args.bundles]
        store.append([{"created": created, "bundle_sha256": sha, "model": r["model"],
                       "artifact": "served", "backend": "triton", "precision": "-", "device": "cpu",
                       "scenario": f"serve-{r['protocol']}-{r['in_flight']}", "record": r}
                      for name, _, sha in described for r in rows if r["model"] == name])
        store.close()


if __name__ == "__main__":
    main()
