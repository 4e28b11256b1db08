"""SHA-256 of files, computed once per process per file version.

A bench or a load verifies every file of a bundle, and several steps of one process used to
hash the same files again (a bench hashed a bundle up to 2N+3 times). Digests are cached by
the file's identity and change stamps (device, inode, size, mtime and ctime in ns): any write,
rename-over or ``touch`` gives a new key, so a changed file is always hashed anew. ctime cannot
be set from user space, so a file rewritten with its old mtime restored still misses the cache.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

_CHUNK = 1 << 20
_cache: dict[tuple, str] = {}
_lock = threading.Lock()


def _stamp(path: str | Path) -> tuple:
    st = os.stat(path)
    return (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def sha256_file(path: str | Path) -> str:
    key = _stamp(path)
    with _lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    digest = h.hexdigest()
    if _stamp(path) == key:  # unchanged while it was read: safe to remember
        with _lock:
            _cache[key] = digest
    return digest
