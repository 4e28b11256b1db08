"""Where edgemed keeps per-user state: engine cache, auto-selection results, benchmark history."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$EDGEMED_CACHE``, else ``$XDG_CACHE_HOME/edgemed``, else ``~/.cache/edgemed``."""
    base = os.environ.get("EDGEMED_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "edgemed")
    return Path(base)
