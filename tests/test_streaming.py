"""Streaming, concurrency and soak on one pipeline with real ultrasound frames."""

from __future__ import annotations

import resource
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

from edgemed import load, read_frames

from .conftest import DICOM

ROOT = Path(__file__).resolve().parents[1]


def test_lossless_stream_matches_predict(cnn_bundle, breastmnist):
    frames = list(breastmnist["test_images"][:50])
    with load(cnn_bundle) as pipe:
        want = [pipe.predict(f).index for f in frames]
        results = list(pipe.stream(frames))
        assert [r.index for r in results] == list(range(50))
        assert [r.result.index for r in results] == want and not any(r.dropped for r in results)
        assert set(results[0].timings) == {"queue_wait", "preprocess", "handoff_wait", "infer", "postprocess",
                                           "delivery_wait"}
        assert pipe.last_stream_stats == {"submitted": 50, "processed": 50, "dropped": 0, "results_dropped": 0,
                                          "delivered": 50}
    assert not _edgemed_threads()


def test_drop_oldest_when_input_outpaces_the_engine(unet_bundle):
    clip = read_frames(DICOM / "examples_ybr_color.dcm")  # a real 30-frame ultrasound clip
    frames = clip * 4
    with load(unet_bundle) as pipe, pipe.streamer(maxsize=2) as s:
        futures = [s.submit(f) for f in frames]  # as fast as Python can submit: far above the engine's rate
        results = [f.result(timeout=60) for f in futures]
        stats = s.stats()
    indexes = [r.index for r in results]
    assert indexes == list(range(len(frames)))  # every frame accounted for exactly once
    processed = [r for r in results if not r.dropped]
    assert stats["dropped"] > 0 and stats["dropped"] == sum(r.dropped for r in results)
    assert stats["processed"] + stats["dropped"] == stats["submitted"] == len(frames)
    assert len({r.index for r in processed}) == len(processed)  # none processed twice
    assert processed[-1].index == len(frames) - 1  # the newest frame is never the one dropped
    assert all(r.mask.shape == (240, 320) for r in processed)


def test_eight_threads_agree_with_one(cnn_bundle, breastmnist):
    images = breastmnist["test_images"][:20]
    with load(cnn_bundle) as pipe:
        want = [pipe.predict(im).probabilities for im in images]
        errors, mismatches = [], []

        def worker(k: int) -> None:
            try:
                for i in range(200):
                    j = (i + k) % len(images)
                    if not np.array_equal(pipe.predict(images[j]).probabilities, want[j]):
                        mismatches.append((k, i))
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors and not mismatches


def _edgemed_threads(wait: float = 1.0) -> list[str]:
    """edgemed's stream threads still alive (after up to ``wait`` s for ones that are finishing)."""
    import time

    deadline = time.monotonic() + wait
    while True:
        alive = [t.name for t in threading.enumerate() if t.name.startswith("edgemed-") and t.is_alive()]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.01)


def _live_probe(frame, log=None):
    """A scanner's frame source: it never ends (``log`` records when each frame was handed out)."""
    import time

    i = 0
    while True:
        if log is not None:
            log[i] = time.perf_counter()
        i += 1
        yield frame


_LEAVE = """
import gc, json, sys, threading, time
import numpy as np
import edgemed

def probe(frame):
    while True:  # a scanner's frame source: it never ends
        yield frame

def alive():
    deadline = time.monotonic() + 1.0
    while True:
        names = [t.name for t in threading.enumerate() if t.name.startswith("edgemed-") and t.is_alive()]
        if not names or time.monotonic() > deadline:
            return names
        time.sleep(0.01)

frame = np.load(sys.argv[2])
out = {}
with edgemed.load(sys.argv[1]) as pipe:
    for how in ("break", "exception", "close", "garbage"):
        t0 = time.perf_counter()
        if how == "break":  # as scanner software writes it: the loop holds the only reference
            for i, r in enumerate(pipe.stream(probe(frame), fps=30)):
                if i == 5:
                    t0 = time.perf_counter()
                    break
        elif how == "exception":
            try:
                for i, r in enumerate(pipe.stream(probe(frame), fps=30)):
                    if i == 5:
                        t0 = time.perf_counter()
                        raise KeyError("the display was closed")
            except KeyError:
                pass
        else:
            results = pipe.stream(probe(frame), fps=30)
            for _ in range(5):
                next(results)
            t0 = time.perf_counter()
            if how == "close":
                results.close()
            else:
                del results
                gc.collect()
        out[how] = {"left_s": time.perf_counter() - t0, "alive": alive(), **pipe.last_stream_stats}
print(json.dumps(out))
"""


def test_leaving_a_live_stream_stops_everything_at_once(cnn_bundle, breastmnist, tmp_path):
    """break, an exception, close() and garbage collection each end a never-ending live stream at once.

    Run in a process of its own with a time limit: the failure this guards against is a hang."""
    import json

    np.save(tmp_path / "frame.npy", breastmnist["test_images"][0])
    proc = subprocess.run([sys.executable, "-c", _LEAVE, str(cnn_bundle), str(tmp_path / "frame.npy")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for how, r in json.loads(proc.stdout).items():
        assert r["left_s"] < 0.5, f"{how}: leaving the loop took {r['left_s']:.2f} s"
        assert not r["alive"], f"{how}: threads outlived the loop: {r['alive']}"
        assert r["delivered"] >= 5, (how, r)


def test_breaking_out_of_a_finite_stream_does_not_play_the_rest(cnn_bundle, breastmnist):
    import time

    frames = list(breastmnist["test_images"][:150])  # 5 s of frames at 30 fps
    with load(cnn_bundle) as pipe:
        t0 = time.perf_counter()
        for i, _ in enumerate(pipe.stream(frames, fps=30)):
            if i == 2:
                break
        assert time.perf_counter() - t0 < 1.0
        assert pipe.last_stream_stats["submitted"] < 20
    assert not _edgemed_threads()


def test_a_slow_consumer_gets_fresh_results_in_flat_memory_with_honest_latency(unet_bundle, busi):
    """30 fps of 1024x1024 frames into a display that draws at 10 fps: results it cannot take are dropped
    and counted, memory stays flat, and each result's latency is its real age at delivery."""
    import time

    from PIL import Image

    frame = np.asarray(Image.fromarray(busi["images"][400]).resize((1024, 1024)))
    captured: dict[int, float] = {}
    ages, reported, rss = [], [], []
    with load(unet_bundle) as pipe:
        pipe.predict(frame)
        start_rss = _rss_mb()
        t0 = time.perf_counter()
        for r in pipe.stream(_live_probe(frame, captured), fps=30):
            if not r.dropped:
                ages.append(time.perf_counter() - captured[r.index])
                reported.append(r.latency)
            rss.append(_rss_mb())
            time.sleep(0.1)  # drawing the result
            if time.perf_counter() - t0 > 6:
                break
        stats = pipe.last_stream_stats
    assert not _edgemed_threads()
    assert stats["results_dropped"] + stats["dropped"] > 60, stats  # ~180 frames offered, ~60 taken
    assert stats["submitted"] >= stats["processed"] + stats["dropped"] and stats["delivered"] == len(rss)
    assert max(rss) - start_rss < 40, f"RSS grew {max(rss) - start_rss:.0f} MB"
    assert max(rss[len(rss) // 2:]) - max(rss[:len(rss) // 2]) < 8  # flat: the second half grows no further
    assert np.allclose(reported, ages, atol=0.01), list(zip(reported, ages))[:5]
    assert np.median(reported) < 0.45  # fresh: at most a couple of display periods old, not seconds


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def test_soak_10000_calls_memory_bounded(cnn_bundle, breastmnist):
    import time

    images = breastmnist["test_images"]
    lat = []
    with load(cnn_bundle) as pipe:
        first = pipe.predict(images[0]).probabilities
        for i in range(500):
            pipe.predict(images[i % len(images)])
        start = _rss_mb()
        for i in range(10_000):
            t0 = time.perf_counter()
            pipe.predict(images[i % len(images)])
            lat.append(time.perf_counter() - t0)
        growth = _rss_mb() - start
        assert np.array_equal(pipe.predict(images[0]).probabilities, first)
    assert growth < 16, f"RSS grew {growth:.1f} MB over 10,000 calls"
    p99_start, p99_end = np.percentile(lat[:1000], 99), np.percentile(lat[-1000:], 99)
    assert p99_end < 2 * p99_start + 1e-3, (p99_start, p99_end)  # no degradation beyond noise


def test_streaming_example_runs_on_the_real_clip(unet_bundle, tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "stream_ultrasound.py"), "--bundle",
                           str(unet_bundle), "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "frames processed" in proc.stdout
    assert len(list((tmp_path / "o").glob("*_overlay.png"))) >= 1
