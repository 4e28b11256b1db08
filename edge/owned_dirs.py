"""Temporary directories that carry their writer's PID, so a later run can tell abandoned ones.

A process killed outright (SIGKILL, power loss, a container stop past its grace period) cannot
clean up after itself. Every temporary directory edgemed writes holds a ``.edgemed-owner`` file
with the writer's PID; the next run removes those whose writer is gone, and leaves alone the
ones a live process is still writing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

OWNER = ".edgemed-owner"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def make_owned(prefix: str, parent: Path) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    (path / OWNER).write_text(str(os.getpid()))
    return path


def abandoned(path: Path) -> bool:
    """True when the directory's writer is gone (or it names none)."""
    try:
        pid = int((path / OWNER).read_text().strip())
    except (OSError, ValueError):
        return True
    return pid <= 0 or (pid != os.getpid() and not _alive(pid))


def remove_abandoned(parent: Path, pattern: str) -> list[str]:
    """Remove the directories matching ``pattern`` in ``parent`` whose writer is gone; returns their names."""
    removed = []
    for path in sorted(Path(parent).glob(pattern)):
        if path.is_dir() and abandoned(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    return removed


@contextlib.contextmanager
def scratch(prefix: str = "edgemed-quant-") -> Iterator[Path]:
    """A private working directory in the system temp folder, removed on any exit (exceptions and
    interrupts included); ones left by killed runs are removed first."""
    parent = Path(tempfile.gettempdir())
    remove_abandoned(parent, f"{prefix}*")
    path = make_owned(prefix, parent)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
