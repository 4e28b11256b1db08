"""Device profiles: data files in ``devices/profiles/*.json`` (configuration as data, not code).

Each profile names its detection rule, backend/precision preference, default threads, memory
budget, telemetry source, TensorRT build options and per-scenario latency budgets. The files
are read into typed :class:`DeviceProfile` records, validated when loaded, so a typo in a
profile is an error naming the file and field rather than a silently ignored setting.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from edgemed.backends import BACKENDS, Backend, Precision
from edgemed.errors import DeviceNotFound, EdgemedError
from edgemed.manifest import Record

MB = 1 << 20


class Match(Record, kw_only=True):
    """Detection rule: every key given must fit the machine."""

    arch: list[str] = []
    not_jetson: bool = False
    device_tree_model: str | None = None
    nvidia_gpu: bool = False
    openvino_device: str | None = None


class TensorRtSection(Record, kw_only=True):
    """Engine build settings for this device (batch profile, workspace, DLA)."""

    opt_batch: Annotated[int, Meta(ge=1, le=4096)] = 1
    max_batch: Annotated[int, Meta(ge=1, le=4096)] = 1
    workspace_mb: Annotated[int, Meta(ge=1, le=1 << 20)] = 1024
    dla_core: Annotated[int, Meta(ge=0, le=7)] | None = None  # default DLA core for engines built here
    dla_cores: Annotated[int, Meta(ge=0, le=8)] = 0  # how many DLA cores the device has
    gpu_fallback: bool = True

    def __post_init__(self) -> None:
        if self.opt_batch > self.max_batch:
            raise ValueError(f"opt_batch: {self.opt_batch} is above max_batch {self.max_batch}")
        if self.dla_core is not None and self.dla_core >= self.dla_cores:
            raise ValueError(f"dla_core: {self.dla_core} but the device has {self.dla_cores} DLA core(s)")


class LatencyBudgets(Record, kw_only=True):
    point_of_care: Annotated[float, Meta(gt=0)] = msgspec.field(name="point-of-care")
    remote: Annotated[float, Meta(gt=0)]


class DeviceProfile(Record, kw_only=True):
    name: str
    description: str
    match: Match
    preference: list[tuple[Backend, Precision]]
    latency_budget_ms: LatencyBudgets
    threads: Annotated[int, Meta(ge=1, le=1024)] | None = None
    memory_budget_mb: Annotated[int, Meta(ge=1)] = 1024
    telemetry: Literal["none", "rapl", "tegrastats", "nvml"] = "none"
    ort_device: Literal["cpu", "cuda", "tensorrt", "openvino"] = "cpu"
    ov_device: Literal["cpu", "gpu", "npu", "auto"] = "cpu"
    ort_allow_spinning: bool = True
    static_shapes: bool = False
    tensorrt: TensorRtSection | None = None
    notes: str = ""

    def engine_device(self, backend: str) -> str:
        """The device word a backend's engine is created with on this profile."""
        return BACKENDS[backend].engine_device(self)


def profiles_dir() -> Path:
    # beside this module (a package folder in every install pip makes); importlib.resources cost 3 ms of a cold start
    return Path(__file__).resolve().parent / "profiles"


@lru_cache(maxsize=1)
def load_profiles() -> dict[str, DeviceProfile]:
    out = {}
    for path in sorted(profiles_dir().glob("*.json")):
        try:
            profile = msgspec.json.decode(path.read_bytes(), type=DeviceProfile)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise EdgemedError(f"device profile {path.name} is invalid ({exc})",
                               "fix the profile file; profiles are data validated on load") from exc
        if profile.name != path.stem:
            raise EdgemedError(f"device profile {path.name} is named {profile.name!r}", "name it after its file")
        out[profile.name] = profile
    return out


def get_profile(name: str) -> DeviceProfile:
    profiles = load_profiles()
    if name not in profiles:
        raise DeviceNotFound(f"unknown device profile {name!r}", f"known: {', '.join(sorted(profiles))}")
    return profiles[name]
