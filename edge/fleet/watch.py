"""Serving from a device folder: follow the pointer between frames, and put each new version on trial.

``DeviceRuntime(DIR).predict(frame)`` is ``edgemed.load(...).predict`` for a scanner whose model is updated
under it. A background thread watches ``DIR/current.json``; when an update (or a rollback) replaces it, the
new version's engine is loaded beside the serving one and swapped in before the next frame, so a stream
never waits for a load and never loses a frame.

A version just switched to is *on trial* (the A/B updaters' "boot counting"): it must serve its first N
predictions (``edgemed update --trial N``) before it is committed. If it fails on a frame that the previous
version still answers, the previous version answers that frame, the pointer is switched back and the
failed version is recorded as rolled back; a version that is opened MAX_STARTS times without ever finishing
its trial (the process keeps dying) is rolled back when it would be opened again. A frame that both
versions refuse is the frame's fault: its error is raised and the trial goes on.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import load
from ..device_pointer import POINTER
from ..errors import EdgemedError
from .slots import Device

MAX_STARTS = 3


@dataclass
class _Opened:
    pipe: Any
    fallback: Any  # the previous version's pipeline while the serving one is on trial, else None
    version: str
    previous: str | None
    left: int  # trial predictions still to succeed
    stamp: tuple  # the pointer file it was opened from


class DeviceRuntime:
    """One serving pipeline that follows a device folder's pointer; see the module docstring."""

    def __init__(self, path: str | Path, device: str = "cpu", poll_s: float = 0.5, **load_options: Any) -> None:
        self.dev = Device(path)
        self.device, self.options, self.poll_s = device, load_options, poll_s
        self._swap = threading.Lock()
        self._staged: _Opened | None = None
        self.events: list[str] = []  # what the runtime did (swaps, commits, rollbacks), for the log and tests
        self._writers: list[threading.Thread] = []
        self._use(self._open())
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="edgemed-pointer-watch", daemon=True)
        self._watcher.start()

    # -- opening -----------------------------------------------------------------------------
    def _stamp_now(self) -> tuple:
        st = os.stat(self.dev.path / POINTER)
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _use(self, o: _Opened) -> None:
        self.pipe, self.fallback, self.version, self.previous, self.left, self._stamp = (
            o.pipe, o.fallback, o.version, o.previous, o.left, o.stamp)

    def _load(self, version: str):
        return load(self.dev.slot(version), device=self.device, **self.options)

    def _open(self) -> _Opened:
        """The serving version's pipeline (and, on trial, the previous one's), rolling back a version that
        keeps failing to start or does not load."""
        while True:
            with self.dev.lock():
                pointer = self.dev.pointer()
                if pointer is None:
                    raise EdgemedError(f"{self.dev.path}: nothing installed", "run edgemed update --into it first")
                if pointer.on_trial():
                    pointer = self.dev.update_trial(started=True)
                    if pointer.trial["starts"] > MAX_STARTS:
                        self._rollback(f"opened {MAX_STARTS} times without finishing its trial of "
                                       f"{pointer.trial['left']} more predictions")
                        continue
                stamp = self._stamp_now()
            try:
                pipe = self._load(pointer.current)
            except EdgemedError as exc:
                if not pointer.on_trial():
                    raise
                with self.dev.lock():
                    self._rollback(f"does not load ({exc.problem})")
                continue
            fallback = self._load(pointer.previous) if pointer.on_trial() and pointer.previous else None
            left = pointer.trial["left"] if pointer.on_trial() else 0
            return _Opened(pipe, fallback, pointer.current, pointer.previous, left, stamp)

    def _rollback(self, reason: str) -> None:
        pointer = self.dev.rollback(reason, by="trial")
        self.events.append(f"rolled back to {pointer.current}: {reason}")

    # -- watching ----------------------------------------------------------------------------
    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                stamp = self._stamp_now()
                if stamp != self._stamp and self._staged is None:
                    opened = self._open()
                    if opened.fallback is None and opened.version == self.version:
                        opened.pipe.close()  # a pointer rewrite that changed nothing we serve (a commit)
                        self._stamp = opened.stamp
                        continue
                    self._staged = opened
            except (EdgemedError, OSError) as exc:  # keep serving what we have; say why
                self.events.append(f"could not follow the pointer: {exc}")

    def _take_staged(self) -> None:
        with self._swap:
            staged, self._staged = self._staged, None
            if staged is None:
                return
            old, before = (self.pipe, self.fallback), self.version
            self._use(staged)
            self.events.append(f"swapped {before} -> {self.version} between frames")
        for p in old:
            if p is not None and p is not self.pipe and p is not self.fallback:
                p.close()

    # -- serving -----------------------------------------------------------------------------
    def predict(self, frame: Any, **describe: Any):
        if self._staged is not None:
            self._take_staged()
        pipe, fallback = self.pipe, self.fallback
        try:
            result = pipe.predict(frame, **describe)
        except Exception as exc:
            if fallback is None:
                raise
            try:
                result = fallback.predict(frame, **describe)
            except Exception:
                raise exc from None  # both refuse it: the frame's fault, and the trial goes on
            self._fail_trial(exc)
            return result
        if fallback is not None:
            self.left -= 1
            if self.left <= 0:
                self._commit()
        return result

    def stream(self, frames: Iterable[Any]) -> Iterator[Any]:
        """One result per frame, in order, across version swaps."""
        for frame in frames:
            yield self.predict(frame)

    def _background(self, work) -> None:
        """Pointer writes wait for the device lock (an update may hold it for its canary): never on a frame."""
        thread = threading.Thread(target=work, name="edgemed-pointer-write", daemon=True)
        self._writers.append(thread)
        thread.start()

    def _commit(self) -> None:
        fallback, self.fallback = self.fallback, None
        version = self.version

        def write() -> None:
            with self.dev.lock():
                pointer = self.dev.pointer()
                if pointer is not None and pointer.on_trial() and pointer.current == version:
                    self.dev.update_trial(left=0)
                    self._stamp = self._stamp_now()
            self.events.append(f"committed {version} after its trial")

        self._background(write)
        if fallback is not None:
            fallback.close()

    def _fail_trial(self, exc: Exception) -> None:
        failed = self.version
        with self._swap:  # serve the previous version from this frame on, before the pointer is written
            bad, self.pipe, self.fallback = self.pipe, self.fallback, None
            self.left = 0

        def write() -> None:
            with self.dev.lock():
                pointer = self.dev.pointer()
                if pointer is not None and pointer.on_trial() and pointer.current == failed:
                    self._rollback(f"failed a prediction the previous version answered ({exc})")
                    self._stamp = self._stamp_now()

        self.version = self.previous or failed
        self._background(write)
        bad.close()

    def close(self) -> None:
        self._stop.set()
        self._watcher.join(timeout=5)
        for thread in self._writers:
            thread.join(timeout=60)
        staged = (self._staged.pipe, self._staged.fallback) if self._staged else ()
        for p in (self.pipe, self.fallback, *staged):
            if p is not None:
                p.close()

    def __enter__(self) -> DeviceRuntime:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
