"""The device folder: bundles installed beside each other, switched by one rename, rolled back, recovered.

Like the A/B updaters of embedded Linux (RAUC, Mender, SWUpdate), a new version is written beside the
serving one, checked, and only then made current; the previous version stays until the next update, so
a rollback is one more pointer switch. Layout of ``DIR``::

    current.json            the pointer (edgemed.device_pointer), replaced atomically
    slots/<version>/        complete, verified bundles: the current one and the previous one
    slots/.<version>.partial-*   a bundle being unpacked (its writer's PID inside: removed once it is gone)
    trust/root.json         the TUF root the device was provisioned with (its trust anchor)
    tuf/                    the TUF client's verified metadata (what stops rollback and freeze attacks)
    downloads/              archives while they are installed
    reference/frames.npz    the device's own reference frames, for canaries
    update.log              one JSON line per install, refusal, switch, commit and rollback

Every change happens under an exclusive lock (``flock``, released by the kernel if the holder is killed),
and every command starts with :meth:`Device.recover`, which removes what a killed update left and never
touches the slot the pointer names.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from ..atomic import write_atomic
from ..bundle import Bundle
from ..device_pointer import POINTER, SLOTS, Pointer
from ..errors import BundleError, EdgemedError
from ..owned_dirs import OWNER, abandoned, make_owned, remove_abandoned
from .archive import unpack

PAUSE_ENV = "EDGEMED_FLEET_PAUSE_AT"  # test hook: stop at a named stage so a test can kill the process there


class DeviceError(EdgemedError):
    """The device folder cannot do what was asked (nothing to roll back to, a missing trust anchor)."""


def pause_point(stage: str) -> None:
    """Sleep at ``stage`` when EDGEMED_FLEET_PAUSE_AT names it (the crash tests kill the process there)."""
    if os.environ.get(PAUSE_ENV) == stage:
        print(f"edgemed: paused at {stage}", file=sys.stderr, flush=True)
        time.sleep(3600)


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Device:
    """A device folder. Methods that change it must run inside ``with device.lock():``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.slots = self.path / SLOTS
        self.trust_root = self.path / "trust" / "root.json"
        self.metadata = self.path / "tuf"
        self.downloads = self.path / "downloads"
        self.reference = self.path / "reference" / "frames.npz"
        self.log_path = self.path / "update.log"
        self.damaged_model: str | None = None  # set by recover() when the only version no longer verifies

    # -- reading -----------------------------------------------------------------------------
    def pointer(self) -> Pointer | None:
        return Pointer.read(self.path)

    def slot(self, version: str) -> Path:
        return self.slots / version

    def log(self, event: str, **detail) -> None:
        """Append one JSON line (a torn last line after a crash is skipped by :meth:`history`)."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"time": _now(), "event": event, **detail}) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def history(self) -> list[dict]:
        out = []
        with contextlib.suppress(FileNotFoundError):
            for line in self.log_path.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    # -- changing ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".edgemed-device.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    def _write_pointer(self, pointer: Pointer) -> Pointer:
        pointer = replace(pointer, since=_now())
        write_atomic(self.path / POINTER, pointer.to_json())  # the one rename that switches
        _fsync_dir(self.path)
        return pointer

    def recover(self) -> list[str]:
        """Remove what a killed update left: unpacking slots whose writer is gone, slots the pointer does not
        name (installed but never switched to), half-written pointers, downloads. If the current slot no
        longer verifies (damaged disk), go back to the previous one."""
        done = []
        self.slots.mkdir(parents=True, exist_ok=True)
        done += [f"removed the interrupted install {n}" for n in remove_abandoned(self.slots, ".*.partial-*")]
        for tmp in self.path.glob(f".{POINTER}.*.partial"):
            pid = tmp.name.split(".")[-2]
            if not pid.isdigit() or int(pid) != os.getpid():
                tmp.unlink(missing_ok=True)
                done.append(f"removed the half-written pointer {tmp.name}")
        if self.downloads.is_dir():
            shutil.rmtree(self.downloads, ignore_errors=True)
        pointer = self.pointer()
        keep = {pointer.current, pointer.previous} if pointer else set()
        for slot in sorted(self.slots.iterdir()):
            if slot.name.startswith("."):
                continue
            if slot.name not in keep:
                shutil.rmtree(slot, ignore_errors=True)
                done.append(f"removed {slot.name}, installed but never switched to")
        if pointer is not None:
            try:
                Bundle.open(self.slot(pointer.current))
            except BundleError as exc:
                if pointer.previous is not None:
                    self.rollback(f"the installed copy no longer verifies ({exc.problem})", by="recovery",
                                  refuse_again=False)
                    done.append(f"{pointer.current} no longer verifies: rolled back to {pointer.previous}")
                else:  # nothing to go back to, and nothing that works: let the update install afresh
                    self.damaged_model = pointer.model
                    (self.path / POINTER).unlink()
                    shutil.rmtree(self.slot(pointer.current), ignore_errors=True)
                    done.append(f"{pointer.current} no longer verifies ({exc.problem}) and there is no previous "
                                "version: it will be installed again")
        for line in done:
            self.log("recovered", detail=line)
        return done

    def install(self, archive: Path, version: str, model: str, manifest_sha256: str | None = None) -> Path:
        """Unpack a verified download beside the current version; the slot appears only when complete."""
        target = self.slot(version)
        if target.exists():
            raise DeviceError(f"{target} already exists", "run edgemed update again (it recovers first)")
        partial = make_owned(f".{version}.partial-", self.slots)
        try:
            unpack(archive, partial)
            (partial / OWNER).unlink()
            b = Bundle.open(partial)
            if b.name != model:
                raise BundleError(f"the archive holds model {b.name!r}, the signed metadata says {model!r}",
                                  "refusing it; the publisher must publish the right bundle")
            if manifest_sha256 is not None and b.manifest_sha256() != manifest_sha256:
                raise BundleError("the archive's manifest differs from the one the signed metadata names",
                                  "refusing it; the publisher must publish the right bundle")
            pause_point("unpacked")
            os.rename(partial, target)
            _fsync_dir(self.slots)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return target

    def discard(self, version: str) -> None:
        """Remove a slot that is neither current nor previous (a version refused by its canary)."""
        pointer = self.pointer()
        if pointer is not None and version in (pointer.current, pointer.previous):
            raise DeviceError(f"{version} is installed and in use", "roll back first")
        shutil.rmtree(self.slot(version), ignore_errors=True)

    def switch(self, version: str, model: str, trial: int) -> Pointer:
        """Make ``version`` current (one rename); the version it replaces becomes previous; slots older
        than that are removed after the switch."""
        old = self.pointer()
        pointer = self._write_pointer(Pointer(
            model=model, current=version, previous=old.current if old else None,
            trial={"version": version, "left": trial, "starts": 0} if trial > 0 and old else None,
            rolled_back=dict(old.rolled_back) if old else {}))
        for slot in self.slots.iterdir():
            if not slot.name.startswith(".") and slot.name not in (pointer.current, pointer.previous):
                shutil.rmtree(slot, ignore_errors=True)
        self.log("switched", version=version, previous=pointer.previous, trial=trial if pointer.trial else 0)
        return pointer

    def rollback(self, reason: str, by: str = "operator", refuse_again: bool = True) -> Pointer:
        """Serve the previous version again (one rename) and remember why the current one was left (so that
        updates do not install it again, unless ``refuse_again`` is False: a damaged copy, not a bad version)."""
        pointer = self.pointer()
        if pointer is None or pointer.previous is None:
            raise DeviceError(f"{self.path}: no previous version to roll back to",
                              "install a version with edgemed update first")
        Bundle.open(self.slot(pointer.previous))  # never switch to a slot that does not verify
        left = pointer.current
        refused = {**pointer.rolled_back, left: f"{by}: {reason}"} if refuse_again else dict(pointer.rolled_back)
        new = self._write_pointer(Pointer(model=pointer.model, current=pointer.previous, previous=None, trial=None,
                                          rolled_back=refused))
        shutil.rmtree(self.slot(left), ignore_errors=True)
        self.log("rolled_back", version=left, to=new.current, by=by, reason=reason)
        return new

    def update_trial(self, left: int | None = None, started: bool = False) -> Pointer:
        """Count a runtime start or successful predictions of the version on trial; at 0 left it is
        committed (the trial ends)."""
        pointer = self.pointer()
        if pointer is None or not pointer.on_trial():
            return pointer
        trial = dict(pointer.trial)
        if started:
            trial["starts"] = trial.get("starts", 0) + 1
        if left is not None:
            trial["left"] = left
        if trial["left"] <= 0:
            self.log("committed", version=pointer.current)
            return self._write_pointer(replace(pointer, trial=None))
        return self._write_pointer(replace(pointer, trial=trial))

    def trust_anchor(self, root: Path | None) -> bytes:
        """The trust anchor: the root.json given at first provisioning, then always that same file. It is kept
        (:meth:`keep_trust_anchor`) only once an update has verified the repository with it."""
        if root is not None:
            data = Path(root).read_bytes()
            if self.trust_root.is_file() and self.trust_root.read_bytes() != data:
                raise DeviceError(f"{self.path} was provisioned with another root.json",
                                  "a device changes trust only by root rotation in the repository; to start over, "
                                  f"remove {self.trust_root.parent} and {self.metadata}")
            return data
        if not self.trust_root.is_file():
            raise DeviceError(f"{self.path}: no trusted root.json (the device was never provisioned)",
                              "pass --root with the repository's root.json, obtained out of band")
        return self.trust_root.read_bytes()

    def keep_trust_anchor(self, data: bytes) -> None:
        if not self.trust_root.is_file():
            write_atomic(self.trust_root, data)

    def abandoned_partials(self) -> list[str]:
        return [p.name for p in self.slots.glob(".*.partial-*") if abandoned(p)]
