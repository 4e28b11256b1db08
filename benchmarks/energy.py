"""Energy per inference where the device reports power; otherwise "not available", never a guess.

Sources: Linux RAPL (``/sys/class/powercap/*/energy_uj``, package energy counters on x86) and
Jetson ``tegrastats`` (the VDD_IN / POM_5V_IN input rail, in mW).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

NOT_AVAILABLE = "not available"
_RAIL = re.compile(r"\b(VDD_IN|POM_5V_IN)\s+(\d+)mW(?:/(\d+)mW)?|\b(VDD_IN|POM_5V_IN)\s+(\d+)/(\d+)")


def parse_tegrastats_power_mw(line: str) -> float | None:
    """Instantaneous input-rail power in mW from one tegrastats line (Orin and Xavier formats)."""
    m = _RAIL.search(line)
    if not m:
        return None
    return float(m.group(2) or m.group(5))


def rapl_counters(root: Path = Path("/sys/class/powercap")) -> list[Path]:
    if not root.is_dir():
        return []
    out = []
    for zone in sorted(root.glob("*rapl:*")):
        f = zone / "energy_uj"
        if ":" in zone.name and zone.name.count(":") == 1 and f.is_file():
            try:
                int(f.read_text())
                out.append(f)
            except (OSError, ValueError):
                continue
    return out


def measure_energy(run: Callable[[], None], calls: int, profile_telemetry: str = "rapl") -> dict:
    """Joules per inference for ``calls`` runs of ``run``, or a reason why it cannot be measured."""
    counters = rapl_counters()
    if counters:
        before = [int(f.read_text()) for f in counters]
        t0 = time.perf_counter()
        for _ in range(calls):
            run()
        seconds = time.perf_counter() - t0
        after = [int(f.read_text()) for f in counters]
        joules = sum((a - b) % (1 << 32) for a, b in zip(after, before)) / 1e6
        return {"source": "rapl (package, whole CPU)", "joules_per_inference": joules / calls,
                "average_watts": joules / seconds}
    if profile_telemetry == "tegrastats" and shutil.which("tegrastats"):
        samples: list[float] = []
        proc = subprocess.Popen(["tegrastats", "--interval", "100"], stdout=subprocess.PIPE, text=True)

        def read() -> None:
            for line in proc.stdout:  # type: ignore[union-attr]
                mw = parse_tegrastats_power_mw(line)
                if mw is not None:
                    samples.append(mw)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        t0 = time.perf_counter()
        for _ in range(calls):
            run()
        seconds = time.perf_counter() - t0
        proc.terminate()
        reader.join(timeout=2)
        if samples:
            watts = sum(samples) / len(samples) / 1e3
            return {"source": "tegrastats VDD_IN (board input)", "joules_per_inference": watts * seconds / calls,
                    "average_watts": watts}
    return {"source": NOT_AVAILABLE, "reason": "no readable RAPL counters or tegrastats on this machine"}
