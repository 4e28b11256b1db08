"""Streaming for scanner software: a bounded, two-stage pipeline with a drop-oldest policy.

Preprocessing of frame N+1 runs on one thread while frame N is inferred on another. Live
sources submit frames into a small queue; when the engine falls behind, the oldest waiting
frame is dropped (a live ultrasound view wants the newest frame, not a growing backlog), its
future is resolved as dropped, and the drop is counted: nothing is lost silently and no
frame is processed twice.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_STOP = object()


@dataclass
class StreamResult:
    index: int
    result: Any = None  # ClassificationResult / SegmentationResult, None when dropped
    dropped: bool = False
    timings: dict[str, float] = field(default_factory=dict)  # seconds: queue_wait, preprocess, infer, postprocess
    submitted_at: float = 0.0
    done_at: float = 0.0

    @property
    def latency(self) -> float:
        return self.done_at - self.submitted_at

    def __getattr__(self, name: str) -> Any:  # r.mask, r.label ... straight from the result
        if name.startswith("_") or self.result is None:
            raise AttributeError(name)
        return getattr(self.result, name)


class Streamer:
    """submit(frame) -> Future[StreamResult]; bounded queue; drop-oldest or block when full."""

    def __init__(self, pipe, maxsize: int = 2, drop_oldest: bool = True) -> None:
        self.pipe, self.maxsize, self.drop_oldest = pipe, maxsize, drop_oldest
        self._pending: deque = deque()
        self._cond = threading.Condition()
        self._prepared: queue.Queue = queue.Queue(maxsize=1)
        self._closed = False
        self._next_index = 0
        self.submitted = self.processed = self.dropped = 0
        self._threads = [threading.Thread(target=self._prepare_loop, daemon=True, name="edgemed-prep"),
                         threading.Thread(target=self._infer_loop, daemon=True, name="edgemed-infer")]
        for t in self._threads:
            t.start()

    def submit(self, frame: np.ndarray) -> Future:
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("stream is closed")
            index = self._next_index
            self._next_index += 1
            self.submitted += 1
            while len(self._pending) >= self.maxsize:
                if not self.drop_oldest:
                    self._cond.wait()
                    continue
                old_index, _, old_future, old_t = self._pending.popleft()
                self.dropped += 1
                old_future.set_result(StreamResult(old_index, dropped=True, submitted_at=old_t,
                                                   done_at=time.perf_counter()))
            self._pending.append((index, frame, future, time.perf_counter()))
            self._cond.notify_all()
        return future

    def _prepare_loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending and self._closed:
                    self._prepared.put(_STOP)
                    return
                index, frame, future, t_submit = self._pending.popleft()
                self._cond.notify_all()
            t0 = time.perf_counter()
            try:
                prepared = self.pipe.prepare(frame)
            except Exception as exc:  # noqa: BLE001 - the error belongs to this frame's future
                future.set_exception(exc)
                continue
            self._prepared.put((index, prepared, future, t_submit, t0, time.perf_counter()))

    def _infer_loop(self) -> None:
        while (item := self._prepared.get()) is not _STOP:
            index, prepared, future, t_submit, t_prep, t_ready = item
            try:
                t1 = time.perf_counter()
                output = self.pipe.infer(prepared)
                t2 = time.perf_counter()
                result = self.pipe.finish(output, prepared)
                t3 = time.perf_counter()
            except Exception as exc:  # noqa: BLE001
                future.set_exception(exc)
                continue
            timings = {"queue_wait": t_prep - t_submit, "preprocess": t_ready - t_prep, "infer": t2 - t1,
                       "postprocess": t3 - t2}
            result.timings = {k: timings[k] for k in ("preprocess", "infer", "postprocess")}
            self.processed += 1
            future.set_result(StreamResult(index, result, False, timings, t_submit, t3))

    def close(self) -> None:
        """Finish the frames already queued, then stop the threads."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for t in self._threads:
            t.join()

    def stats(self) -> dict:
        return {"submitted": self.submitted, "processed": self.processed, "dropped": self.dropped}

    def __enter__(self) -> Streamer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def stream(pipe, frames: Iterable[np.ndarray], fps: float | None = None, maxsize: int = 2) -> Iterator[StreamResult]:
    """Play frames through the pipeline in order; at ``fps`` like a live probe (drop-oldest), else lossless."""
    streamer = Streamer(pipe, maxsize=maxsize, drop_oldest=fps is not None)
    futures: deque = deque()
    feeder_error: list[BaseException] = []

    def feed() -> None:
        start = time.perf_counter()
        try:
            for i, frame in enumerate(frames):
                if fps:
                    delay = start + i / fps - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                fut = streamer.submit(frame)
                with lock:
                    futures.append(fut)
                    lock.notify_all()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            feeder_error.append(exc)
        finally:
            with lock:
                done[0] = True
                lock.notify_all()

    lock = threading.Condition()
    done = [False]
    feeder = threading.Thread(target=feed, daemon=True, name="edgemed-feed")
    feeder.start()
    try:
        while True:
            with lock:
                while not futures and not done[0]:
                    lock.wait()
                if not futures and done[0]:
                    break
                fut = futures.popleft()
            yield fut.result()
        if feeder_error:
            raise feeder_error[0]
    finally:
        feeder.join()
        streamer.close()
        pipe.last_stream_stats = streamer.stats()
