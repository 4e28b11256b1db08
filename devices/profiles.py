"""Device profiles: data files in ``devices/profiles/*.json`` (configuration as data, not code).

Each profile names its detection rule, backend/precision preference, default threads, memory
budget, telemetry source, TensorRT build options and per-scenario latency budgets.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from edgemed.errors import BackendUnavailable

REQUIRED = ("name", "description", "match", "preference", "latency_budget_ms")


def profiles_dir() -> Path:
    return Path(str(resources.files("edgemed.devices") / "profiles"))


def load_profiles() -> dict[str, dict]:
    out = {}
    for path in sorted(profiles_dir().glob("*.json")):
        profile = json.loads(path.read_text())
        missing = [k for k in REQUIRED if k not in profile]
        if missing:
            raise ValueError(f"device profile {path.name} lacks {missing}")
        out[profile["name"]] = profile
    return out


def get_profile(name: str) -> dict:
    profiles = load_profiles()
    if name not in profiles:
        raise BackendUnavailable(f"unknown device profile {name!r}", f"known: {', '.join(sorted(profiles))}")
    return profiles[name]
