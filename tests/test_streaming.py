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
        assert set(results[0].timings) == {"queue_wait", "preprocess", "infer", "postprocess"}
        assert pipe.last_stream_stats == {"submitted": 50, "processed": 50, "dropped": 0}


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
