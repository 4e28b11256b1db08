"""Streaming for scanner software: a bounded, two-stage pipeline with drop-oldest policies.

Preprocessing of frame N+1 runs on one thread while frame N is inferred on another. Live
sources submit frames into a small queue; when the engine falls behind, the oldest waiting
frame is dropped (a live ultrasound view wants the newest frame, not a growing backlog), its
future is resolved as dropped, and the drop is counted: nothing is lost silently and no
frame is processed twice.

``stream()`` also bounds what waits for the consumer: a display that draws slower than the
engine produces sees the newest results, and the ones it could not take in time are dropped
and counted (``results_dropped``), so memory stays flat however slow the consumer is. Every
result says how old it is when it is handed over: ``latency`` is the time from capture (the
moment edgemed took the frame from the source) to delivery (the moment ``stream()`` yields
it), on ``time.perf_counter()``, a monotonic clock in seconds.

Leaving a ``stream()`` loop in any way (``break``, an exception, ``close()`` of the generator,
garbage collection) stops the feeder and both workers at once: waiting frames are dropped, the
frame in hand is finished, and no thread is left running. A source blocked inside its own
``next()`` cannot be interrupted from outside; the feeder then ends when that call returns.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError, OptionError, PipelineClosed

_STOP = object()
FEEDER_JOIN_S = 0.5  # how long leaving a loop waits for a source blocked in next() before going on


@dataclass
class StreamResult:
    index: int
    result: Any = None  # ClassificationResult / SegmentationResult, None when dropped
    dropped: bool = False
    # seconds: queue_wait, preprocess, handoff_wait, infer, postprocess, and in stream() delivery_wait
    timings: dict[str, float] = field(default_factory=dict)
    captured_at: float = 0.0  # time.perf_counter() when edgemed took the frame
    done_at: float = 0.0  # when its result was ready
    delivered_at: float | None = None  # when stream() handed it over (None for the callback form)

    @property
    def latency(self) -> float:
        """Age of the result when it reached the caller: capture to delivery (or to ready, for futures)."""
        end = self.delivered_at if self.delivered_at is not None else self.done_at
        return end - self.captured_at

    def __getattr__(self, name: str) -> Any:  # r.mask, r.label ... straight from the result
        if name.startswith("_") or self.result is None:
            raise AttributeError(name)
        return getattr(self.result, name)


def _count(value: Any, name: str) -> int:
    """A queue size: a whole number (below 1 means 1, as before); anything else is one line, not a TypeError
    from a worker thread."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise OptionError(f"{name}={value!r} is not a whole number", f"pass {name} as an integer, e.g. 2")
    return int(value)


class Streamer:
    """submit(frame) -> Future[StreamResult]; bounded queue; drop-oldest or block when full."""

    def __init__(self, pipe, maxsize: int = 2, drop_oldest: bool = True) -> None:
        self.pipe, self.maxsize, self.drop_oldest = pipe, max(1, _count(maxsize, "maxsize")), drop_oldest
        self._pending: deque = deque()
        self._cond = threading.Condition()
        self._handoff: deque = deque()  # prepared frames waiting for the inference thread (at most 1)
        self._closed = self._cancelled = False
        self._next_index = 0
        self.submitted = self.processed = self.dropped = 0
        self._threads = [threading.Thread(target=self._prepare_loop, daemon=True, name="edgemed-prep"),
                         threading.Thread(target=self._infer_loop, daemon=True, name="edgemed-infer")]
        for t in self._threads:
            t.start()

    def submit(self, frame: np.ndarray, captured_at: float | None = None) -> Future:
        future: Future = Future()
        captured = time.perf_counter() if captured_at is None else captured_at
        with self._cond:
            while not self._closed and not self.drop_oldest and len(self._pending) >= self.maxsize:
                self._cond.wait()
            if self._closed:
                raise PipelineClosed("the stream is closed", "start a new one with pipe.streamer() or pipe.stream()")
            index = self._next_index
            self._next_index += 1
            self.submitted += 1
            while len(self._pending) >= self.maxsize:
                self._drop(self._pending.popleft())
            self._pending.append((index, frame, future, captured))
            self._cond.notify_all()
        return future

    def _drop(self, item: tuple) -> None:
        """Resolve a frame that will not be processed (caller holds the lock)."""
        index, _, future, captured = item
        self.dropped += 1
        future.set_result(StreamResult(index, dropped=True, captured_at=captured, done_at=time.perf_counter()))

    def _prepare_loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed and (self._cancelled or not self._pending):
                    self._handoff.append(_STOP)
                    self._cond.notify_all()
                    return
                index, frame, future, captured = self._pending.popleft()
                self._cond.notify_all()
            t0 = time.perf_counter()
            try:
                prepared = self.pipe.prepare(frame)
            except Exception as exc:  # noqa: BLE001 - the error belongs to this frame's future
                future.set_exception(exc)
                continue
            item = (index, prepared, future, captured, t0, time.perf_counter())
            with self._cond:
                while self._handoff and not self._cancelled:  # one prepared frame waits, at most
                    self._cond.wait()
                if self._cancelled:
                    self._drop((index, None, future, captured))
                    continue
                self._handoff.append(item)
                self._cond.notify_all()

    def _infer_loop(self) -> None:
        while True:
            with self._cond:
                while not self._handoff:
                    self._cond.wait()
                item = self._handoff.popleft()
                self._cond.notify_all()
                if item is _STOP:
                    return
                if self._cancelled:
                    self._drop((item[0], None, item[2], item[3]))
                    continue
            index, prepared, future, captured, t_prep, t_ready = item
            try:
                t1 = time.perf_counter()
                output = self.pipe.infer(prepared)
                t2 = time.perf_counter()
                result = self.pipe.finish(output, prepared)
                t3 = time.perf_counter()
            except Exception as exc:  # noqa: BLE001
                future.set_exception(exc)
                continue
            timings = {"queue_wait": t_prep - captured, "preprocess": t_ready - t_prep, "handoff_wait": t1 - t_ready,
                       "infer": t2 - t1, "postprocess": t3 - t2}
            result.timings = {k: timings[k] for k in ("preprocess", "infer", "postprocess")}
            with self._cond:
                self.processed += 1
            future.set_result(StreamResult(index, result, False, timings, captured, t3))

    def close(self, cancel: bool = False) -> None:
        """Stop the threads: after the frames already queued, or (``cancel``) after the frame in hand,
        resolving the waiting ones as dropped."""
        with self._cond:
            if cancel and not self._cancelled:
                self._cancelled = True
                while self._pending:
                    self._drop(self._pending.popleft())
            self._closed = True
            self._cond.notify_all()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join()

    def stats(self) -> dict:
        return {"submitted": self.submitted, "processed": self.processed, "dropped": self.dropped}

    def __enter__(self) -> Streamer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Outbox:
    """Futures waiting for the consumer, in order, at most ``capacity`` of them.

    Live: when full, the oldest is discarded and counted (its result, when it comes, goes nowhere).
    Lossless: when full, the feeder waits for the consumer.
    """

    def __init__(self, capacity: int, live: bool) -> None:
        self.capacity, self.live = max(1, int(capacity)), live
        self.items: deque = deque()
        self.cond = threading.Condition()
        self.finished = self.closed = False
        self.discarded = self.delivered = 0

    def put(self, future: Future) -> bool:
        with self.cond:
            while not self.live and len(self.items) >= self.capacity and not self.closed:
                self.cond.wait()
            if self.closed:
                return False
            while len(self.items) >= self.capacity:
                old = self.items.popleft()
                frame_dropped = old.done() and old.exception() is None and old.result().dropped
                if not frame_dropped:  # a frame dropped before processing was counted already
                    self.discarded += 1
            self.items.append(future)
            self.cond.notify_all()
            return True

    def get(self) -> Future | None:
        with self.cond:
            while not self.items and not self.finished:
                self.cond.wait()
            if not self.items:
                return None
            self.cond.notify_all()
            return self.items.popleft()

    def finish(self) -> None:
        with self.cond:
            self.finished = True
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = self.finished = True
            self.items.clear()
            self.cond.notify_all()


def stream(pipe, frames: Iterable[np.ndarray], fps: float | None = None, maxsize: int = 2,
           results: int = 2) -> Iterator[StreamResult]:
    """Play frames through the pipeline in order.

    At ``fps``, like a live probe: frames the engine cannot take in time are dropped (oldest
    first), and so are results the consumer cannot take in time; both are counted in
    ``pipe.last_stream_stats``. Without ``fps``, every frame is processed and delivered, and a
    slow consumer slows the source. ``maxsize`` bounds the frames waiting for the engine,
    ``results`` the results waiting for the consumer.
    """
    live = fps is not None
    # a rate whose frame interval no wait can hold (threading.TIMEOUT_MAX, ~292 years) is no rate: refused here,
    # not an OverflowError in the feeder; any other positive rate is taken as asked
    if live and (isinstance(fps, bool) or not isinstance(fps, (int, float, np.integer, np.floating))
                 or not 1.0 / threading.TIMEOUT_MAX <= fps < float("inf")):
        raise OptionError(f"fps={fps!r} is not a frame rate", "pass frames per second > 0, or None to take every frame")
    try:
        source = iter(frames)
    except TypeError as exc:
        raise InputError(f"stream takes an iterable of frames, got {type(frames).__name__}",
                         "pass a list, a generator or any iterable of frames") from exc
    outbox = _Outbox(_count(results, "results"), live)  # every option checked before a thread starts
    streamer = Streamer(pipe, maxsize=maxsize, drop_oldest=live)
    stop = threading.Event()
    errors: list[BaseException] = []

    def feed() -> None:
        start = time.perf_counter()
        try:
            i = 0
            while not stop.is_set():
                if live:
                    delay = start + i / fps - time.perf_counter()
                    if delay > 0 and stop.wait(delay):
                        break
                try:
                    frame = next(source)
                except StopIteration:
                    break
                if stop.is_set() or not outbox.put(streamer.submit(frame)):
                    break
                i += 1
        except PipelineClosed:
            pass  # the loop was left while this frame was being submitted
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            errors.append(exc)
        finally:
            outbox.finish()

    feeder = threading.Thread(target=feed, daemon=True, name="edgemed-feed")
    feeder.start()
    try:
        while (future := outbox.get()) is not None:
            result = future.result()
            result.delivered_at = time.perf_counter()
            result.timings["delivery_wait"] = result.delivered_at - result.done_at
            outbox.delivered += 1
            yield result
        if errors:
            raise errors[0]
    finally:
        stop.set()
        outbox.close()
        streamer.close(cancel=True)
        feeder.join(FEEDER_JOIN_S)
        pipe.last_stream_stats = {**streamer.stats(), "results_dropped": outbox.discarded,
                                  "delivered": outbox.delivered}
