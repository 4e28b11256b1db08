"""The device folder's pointer: which installed version serves, which one came before, and its trial.

A device folder (``edgemed update --into DIR``) holds complete bundles in ``DIR/slots/<version>/`` and one
small JSON file, ``DIR/current.json``, naming the version that serves. Switching versions is replacing that
file (one ``os.replace``): a reader sees the old pointer or the new one, never a mix, and the slot it names
was complete and verified before the pointer could name it. This module only reads: it is on the runtime
path (``edgemed.load(DIR)`` follows the pointer) and imports nothing beyond the standard library.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import BundleError

POINTER = "current.json"
SLOTS = "slots"


@dataclass(frozen=True)
class Pointer:
    model: str
    current: str
    previous: str | None = None
    # A version on trial: {"version", "left": predictions still to succeed, "starts": runtimes that opened it}.
    trial: dict[str, Any] | None = None
    rolled_back: dict[str, str] = field(default_factory=dict)  # version -> why it was rolled back
    since: str = ""

    @classmethod
    def read(cls, device: Path) -> Pointer | None:
        path = Path(device) / POINTER
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return cls(**raw)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            raise BundleError(f"{path}: the device pointer is unreadable ({exc})",
                              "run edgemed update or edgemed rollback on the device folder to repair it") from exc

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    def on_trial(self) -> bool:
        return bool(self.trial) and self.trial.get("version") == self.current


def is_device(path: str | Path) -> bool:
    """A device folder (pointer and slots) rather than a bundle."""
    path = Path(path)
    return path.is_dir() and not (path / "edgemed.json").exists() and ((path / POINTER).exists()
                                                                        or (path / SLOTS).is_dir())


def serving_bundle(device: str | Path) -> Path:
    """The slot the pointer names: the bundle this device serves."""
    device = Path(device)
    pointer = Pointer.read(device)
    if pointer is None:
        raise BundleError(f"{device}: device folder with no installed version ({POINTER} is missing)",
                          "install one with edgemed update --into this folder")
    return device / SLOTS / pointer.current
