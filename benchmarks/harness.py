"""Latency and drift measurement for a pipeline, honest by construction.

End-to-end (preprocess + infer + postprocess), engine-only and a bare ``onnxruntime`` session
are measured in one run, in alternating blocks, so a busy neighbour on a shared machine slows
all three alike and their ratios stay meaningful. Warm-up runs are discarded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from edgemed.gate.drift import compare
from edgemed.measures.comparison import Comparison


def latency_stats(seconds: Sequence[float]) -> dict:
    s = np.asarray(seconds, dtype=np.float64) * 1e3
    if not s.size:
        return {"runs": 0}
    return {
        "runs": int(s.size),
        "p50_ms": float(np.percentile(s, 50)), "p90_ms": float(np.percentile(s, 90)),
        "p99_ms": float(np.percentile(s, 99)), "mean_ms": float(s.mean()),
        "min_ms": float(s.min()), "max_ms": float(s.max()),
        "throughput_fps": float(1e3 / s.mean()) if s.mean() > 0 else 0.0,
    }


def _raw_session(pipe):
    """A plain onnxruntime session on the same artifact and threads: the floor edgemed adds to."""
    if pipe.engine.backend != "onnxruntime":
        return None
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if getattr(pipe.engine, "threads", None):
        opts.intra_op_num_threads = int(pipe.engine.threads)
    return ort.InferenceSession(str(pipe.engine.model_path), sess_options=opts, providers=["CPUExecutionProvider"])


BLOCK = 25  # frames per block; blocks of the three measurements alternate


def bench_latency(pipe, images: Sequence[np.ndarray], runs: int = 300, warmup: int = 20,
                  with_raw: bool = True) -> dict:
    """End-to-end, engine-only and raw-backend latencies over ``runs`` frames each.

    The three are measured in alternating blocks of 25 frames, in reversed order every other block:
    close enough in time that a busy neighbour slows all three alike, far enough apart that one
    session's spinning thread pool has gone idle before the other runs (per-frame interleaving
    doubled both here).
    """
    prepared = [pipe.prepare(im) for im in images]
    raw = _raw_session(pipe) if with_raw else None
    feed_name = pipe.input_name
    e2e, infer, bare, stages = [], [], [], {"preprocess": [], "infer": [], "postprocess": []}

    def timed(fn, k):
        t0 = time.perf_counter()
        out = fn(k)
        return time.perf_counter() - t0, out

    for k in range(min(warmup, 1_000)):
        pipe.predict(images[k % len(images)])
        if raw is not None:
            raw.run(None, prepared[k % len(images)].feed(feed_name))
    def run_e2e(block: range) -> None:
        for i in block:
            dt, result = timed(lambda k: pipe.predict(images[k % len(images)]), i)
            e2e.append(dt)
            for key in stages:
                stages[key].append(result.timings[key])

    def run_infer(block: range) -> None:
        for i in block:
            infer.append(timed(lambda k: pipe.engine.infer(prepared[k % len(images)].feed(feed_name)), i)[0])

    def run_raw(block: range) -> None:
        for i in block:
            bare.append(timed(lambda k: raw.run(None, prepared[k % len(images)].feed(feed_name)), i)[0])

    order = [run_e2e, run_infer] + ([run_raw] if raw is not None else [])
    done = 0
    while done < runs:
        block = range(done, min(runs, done + BLOCK))
        # The order reverses every block: whichever runs first after another's burst finds the thread
        # pool in a different state (always last, the bare session measured 0.69x edgemed's engine once).
        for measure in (order if (done // BLOCK) % 2 == 0 else order[::-1]):
            measure(block)
        done += len(block)
    out = {
        "end_to_end": latency_stats(e2e),
        "infer": latency_stats(infer),
        "breakdown_p50_ms": {k: float(np.median(v) * 1e3) for k, v in stages.items()},
        "method": f"alternating blocks of {BLOCK} frames, order reversed every block, {warmup} warm-up frames "
                  "excluded",
    }
    if raw is not None:
        out["raw_onnxruntime"] = latency_stats(bare)
    return out


def bench_drift(pipe) -> Comparison:
    """The engine's outputs on the bundle's reference probes, compared with the stored FP32 outputs."""
    from edgemed.gate.probes import engine_outputs, unpack

    reference = pipe.bundle.reference()
    fp32 = unpack(reference, "outputs", pipe.task, len(reference["inputs"]))
    return compare(fp32, engine_outputs(pipe, reference), pipe.task, pipe.output_kind, pipe.labels)


def run_threads(work: Callable[[int], None], n: int) -> float:
    """Wall seconds for n threads running ``work(i)`` at once, from the first start to the last join (the
    concurrency and serving benchmarks' in-process callers)."""
    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0
