"""What machine is this? CPU ISA, NVIDIA GPU, Jetson model and L4T release, OpenVINO devices.

Parsers take file text so they can be tested on recorded files from other machines;
``detect(root)`` reads them from a filesystem root (``/`` normally).
"""

from __future__ import annotations

import platform
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edgemed.errors import DeviceNotFound

if TYPE_CHECKING:
    from .profiles import DeviceProfile

_X86_ISA = ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
            "amx_tile", "amx_int8", "amx_bf16"]
_ARM_ISA = {"asimd": "neon", "asimddp": "neon-dotprod", "i8mm": "i8mm", "sve": "sve", "fphp": "fp16",
            "asimdhp": "neon-fp16", "bf16": "bf16"}


@dataclass
class Machine:
    arch: str
    cpu_model: str = "unknown"
    isa: list[str] = field(default_factory=list)
    cores: int = 1
    jetson_model: str | None = None
    l4t_release: str | None = None
    nvidia_gpu: str | None = None
    openvino_devices: list[str] = field(default_factory=list)

    @property
    def int8_dot_product(self) -> bool:
        """CPU has INT8 dot-product units (VNNI / AMX / Arm dotprod), where INT8 can beat FP32."""
        return any(f in self.isa for f in ("avx512_vnni", "avx_vnni", "amx_int8", "neon-dotprod", "i8mm"))

    def to_json(self) -> dict:
        return asdict(self) | {"int8_dot_product": self.int8_dot_product}


def parse_cpuinfo(text: str) -> tuple[str, list[str], int]:
    """(model name, ISA features edgemed cares about, logical cores) from /proc/cpuinfo."""
    names: dict[str, str] = {}
    flags, cores = set(), 0
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "processor":
            cores += 1
        elif key in ("model name", "model", "hardware") and value:
            names.setdefault(key, value)
        elif key in ("flags", "features"):
            flags.update(value.split())
    # x86 "model" is a number; Raspberry Pi's "Model" is the board name: prefer "model name".
    model = names.get("model name") or next(
        (names[k] for k in ("model", "hardware") if k in names and not names[k].isdigit()), "unknown")
    isa = [f for f in _X86_ISA if f in flags] + [name for f, name in _ARM_ISA.items() if f in flags]
    return model, isa, max(cores, 1)


def parse_tegra_release(text: str) -> str | None:
    """'# R36 (release), REVISION: 3.0, ...' -> 'R36.3.0' (L4T; JetPack 6.0 ships R36.3)."""
    m = re.search(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"R{m.group(1)}.{m.group(2)}" if m else None


def parse_device_tree_model(text: str) -> str | None:
    model = text.replace("\x00", "").strip()
    return model if "jetson" in model.lower() or "nvidia" in model.lower() else None


def _read(root: Path, rel: str) -> str:
    try:
        return (root / rel).read_text(errors="replace")
    except OSError:
        return ""


def _nvidia_gpu(root: Path) -> str | None:
    gpus = root / "proc/driver/nvidia/gpus"
    if gpus.is_dir():
        for info in gpus.glob("*/information"):
            m = re.search(r"Model:\s*(.+)", info.read_text(errors="replace"))
            if m:
                return m.group(1).strip()
    if str(root) == "/" and shutil.which("nvidia-smi"):
        import subprocess  # here: importing it cost 4 ms of every load's cold start, on machines with no GPU too

        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=10)
            return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
        except (OSError, subprocess.TimeoutExpired):
            return None
    return None


def _openvino_devices() -> list[str]:
    try:
        import openvino as ov

        return list(ov.Core().available_devices)
    except Exception:  # noqa: BLE001 - absent or broken OpenVINO means no OpenVINO devices
        return []


def detect(root: str | Path = "/", arch: str | None = None, probe_openvino: bool = True) -> Machine:
    root = Path(root)
    model, isa, cores = parse_cpuinfo(_read(root, "proc/cpuinfo"))
    dt_model = parse_device_tree_model(_read(root, "proc/device-tree/model"))
    l4t = parse_tegra_release(_read(root, "etc/nv_tegra_release"))
    jetson = dt_model if dt_model and "jetson" in dt_model.lower() else ("NVIDIA Jetson" if l4t else None)
    return Machine(arch or platform.machine(), model, isa, cores, jetson, l4t, _nvidia_gpu(root),
                   _openvino_devices() if probe_openvino else [])


def match_profile(machine: Machine, profiles: dict[str, DeviceProfile]) -> str:
    """The most specific profile whose detection rule fits the machine."""
    if machine.jetson_model:
        for name, p in profiles.items():
            want = p.match.device_tree_model
            if want and want.lower() in machine.jetson_model.lower():
                return name
        return "jetson-orin-nano" if "orin" in machine.jetson_model.lower() else "jetson-xavier-nx"
    if machine.nvidia_gpu:
        return "nvidia-gpu"
    if "NPU" in machine.openvino_devices:
        return "intel-npu"
    return "arm64-cpu" if machine.arch.lower() in ("aarch64", "arm64") else "x86-cpu"


DEVICE_ALIASES = {"cpu", "auto", "jetson", "cuda", "gpu", "npu"}


def resolve_device(device: str, machine: Machine, profiles: dict[str, DeviceProfile]) -> DeviceProfile:
    """Map a user's device word (or profile name) to a profile, refusing what this machine is not."""
    detected = match_profile(machine, profiles)
    what = f"this machine is {machine.cpu_model} ({machine.arch}), profile {detected}"
    if device in profiles:
        name = device
    elif device in ("auto",):
        name = detected
    elif device == "cpu":
        name = "arm64-cpu" if machine.arch.lower() in ("aarch64", "arm64") and not machine.jetson_model else (
            "x86-cpu" if machine.arch.lower() in ("x86_64", "amd64") else detected)
    elif device == "jetson":
        if not machine.jetson_model:
            raise DeviceNotFound(f"device 'jetson' asked for, but no Jetson was detected: {what}",
                                     "use --device cpu (or auto), or run on the Jetson")
        name = detected
    elif device in ("cuda", "gpu"):
        if not (machine.nvidia_gpu or machine.jetson_model):
            raise DeviceNotFound(f"device {device!r} asked for, but no NVIDIA GPU was detected: {what}",
                                     "use --device cpu (or auto)")
        name = detected
    elif device == "npu":
        if "NPU" not in machine.openvino_devices:
            raise DeviceNotFound(f"device 'npu' asked for, but OpenVINO sees no NPU: {what}",
                                     "install the NPU driver, or use --device cpu")
        name = "intel-npu"
    else:
        raise DeviceNotFound(f"unknown device {device!r}",
                                 f"use one of {', '.join(sorted(DEVICE_ALIASES))} or a profile: {', '.join(profiles)}")
    return profiles[name]
