"""Throughput of ``predict`` called from several threads at once, against the machine's best, side by side.

Scanner software calls ``predict`` from a capture thread and a UI thread. This measures, in one process and
in alternating rounds (so a shared machine's drift falls on every setting alike), frames per second of:

- ``one pipeline, 1 thread``: the default ``load()`` called from one thread;
- ``one pipeline, N threads``: the default ``load()`` shared by N threads;
- ``one pipeline, N threads, callers=N``: ``load(..., callers=N)`` shared by N threads;
- ``N pipelines, threads=1``: one pipeline per thread with one intra-op thread each.

    python benchmarks/studies/concurrency.py BUNDLE [BUNDLE ...] [--threads 2] [--seconds 2] [--rounds 5]

A benchmark, not a test: the figures belong to the machine and its load.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path

import edgemed
from edgemed.benchmarks.harness import run_threads
from edgemed.bundle import Bundle
from edgemed.datasets import ImageSet
from edgemed.samples import samples_for_task


def _rate(pipes: list, frames: list, seconds: float) -> float:
    """Frames per second when thread i calls pipes[i] (the same object for a shared pipeline) for ``seconds``."""
    counts = [0] * len(pipes)
    stop = time.perf_counter() + seconds
    barrier = threading.Barrier(len(pipes))

    def work(i: int) -> None:
        barrier.wait()
        n = 0
        while time.perf_counter() < stop:
            pipes[i].predict(frames[n % len(frames)])
            n += 1
        counts[i] = n

    return sum(counts) / run_threads(work, len(pipes))


def measure(bundle: Path, n: int, seconds: float, rounds: int) -> dict[str, float]:
    b = Bundle.open(bundle)
    frames = [f for _, f in ImageSet.open(samples_for_task(b.task))][:16]
    one = edgemed.load(bundle)
    shared = edgemed.load(bundle, callers=n)
    singles = [edgemed.load(bundle, threads=1) for _ in range(n)]
    settings = {"one pipeline, 1 thread": [one], f"one pipeline, {n} threads": [one] * n,
                f"one pipeline, {n} threads, callers={n}": [shared] * n, f"{n} pipelines, threads=1": singles}
    for pipes in settings.values():  # warm every engine
        _rate(pipes, frames, 0.2)
    rates: dict[str, list[float]] = {k: [] for k in settings}
    for r in range(rounds):
        order = list(settings) if r % 2 == 0 else list(reversed(settings))
        for name in order:
            rates[name].append(_rate(settings[name], frames, seconds))
    for p in {id(p): p for ps in settings.values() for p in ps}.values():
        p.close()
    return {k: statistics.median(v) for k, v in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    for bundle in args.bundles:
        figures = measure(bundle, args.threads, args.seconds, args.rounds)
        best = max(figures[f"{args.threads} pipelines, threads=1"], figures["one pipeline, 1 thread"])
        print(f"{Bundle.open(bundle).name}: medians of {args.rounds} alternating rounds of {args.seconds:g} s")
        for name, rate in figures.items():
            print(f"  {name:40s} {rate:9.1f} frames/s  {rate / best:5.2f}x the best of 1 thread / "
                  f"{args.threads} pipelines")


if __name__ == "__main__":
    main()
