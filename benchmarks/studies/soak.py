"""Soak one pipeline: many frames, several threads; prints RSS and p99 at the start and the end.

    python benchmarks/studies/soak.py BUNDLE [--frames 100000] [--threads 4]

The CI runs a shorter version with the same assertions (tests/test_streaming.py).
"""

from __future__ import annotations

import argparse
import resource
import threading
import time

import numpy as np

import edgemed
from edgemed.datasets import ImageSet
from edgemed.samples import samples_for_task
from edgemed.tasks import task_named


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=4)
    args = ap.parse_args()
    pipe = edgemed.load(args.bundle)
    frames = [im for _, im in ImageSet.open(samples_for_task(pipe.task))]
    want = [pipe.predict(f) for f in frames]
    task = task_named(pipe.task)
    per_thread = args.frames // args.threads
    lat = np.zeros((args.threads, per_thread))
    mismatches = [0]
    rss = {"start": rss_mb()}

    def work(k: int) -> None:
        for i in range(per_thread):
            j = (i + k) % len(frames)
            t0 = time.perf_counter()
            r = pipe.predict(frames[j])
            lat[k, i] = time.perf_counter() - t0
            mismatches[0] += not task.same_answer(r, want[j])
            if k == 0 and i == per_thread // 10:
                rss["after_10pct"] = rss_mb()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(args.threads)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    tenth = max(1, per_thread // 10)
    print(f"{args.threads * per_thread} frames in {wall:.0f} s on {args.threads} threads; mismatches {mismatches[0]}")
    print(f"RSS start {rss['start']:.1f} MB, after 10% {rss.get('after_10pct', 0):.1f} MB, end {rss_mb():.1f} MB")
    print(f"p99 first 10% {np.percentile(lat[:, :tenth], 99) * 1e3:.2f} ms, "
          f"last 10% {np.percentile(lat[:, -tenth:], 99) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
