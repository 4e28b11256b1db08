"""``edgemed update``: fetch, verify, install beside, canary, switch; or refuse and keep serving.

The order is what makes an update safe to interrupt at any point: TUF verification before anything is
written where a bundle could be loaded; unpacking into a hidden partial slot; the canary on the complete
slot; and only then the one rename of the pointer. A process killed anywhere leaves either the old pointer
(and litter that the next run's :meth:`Device.recover` removes) or the new pointer to a complete, verified
slot. A version that is not newer than the serving one is refused unless ``allow_downgrade`` is given;
TUF's own version checks on its metadata stop a server that replays old metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import write_atomic
from ..errors import OptionError
from .canary import CanaryReport, read_frames, run_canary
from .client import Client, Offer, UpdateRefused
from .slots import Device, DeviceError, pause_point
from .versions import parse_version

DEFAULT_TRIAL = 20  # predictions a new version must serve without failing before it is committed


@dataclass
class UpdateResult:
    model: str
    installed: str | None  # the version serving before
    offered: str | None
    serving: str | None
    changed: bool = False
    recovered: list[str] = field(default_factory=list)
    canary: CanaryReport | None = None
    message: str = ""


def store_reference(device: Device, source: Path) -> int:
    """Keep the device's reference frames (a folder of images or an .npz) in the device folder."""
    frames = read_frames(source)
    buf = device.reference.with_name(".frames-tmp.npz")
    device.reference.parent.mkdir(parents=True, exist_ok=True)
    np.savez(buf, **{f"frame_{i:03d}": f for i, f in enumerate(frames)})
    try:
        write_atomic(device.reference, buf.read_bytes())
    finally:
        buf.unlink(missing_ok=True)
    return len(frames)


def choose(offers: list[Offer], installed: str | None, version: str | None, allow_downgrade: bool,
           rolled_back: dict[str, str]) -> Offer | None:
    """The offer to install, None when the device is up to date; refuses downgrades and rolled-back versions."""
    if version is not None:
        chosen = next((o for o in offers if parse_version(o.version) == parse_version(version)), None)
        if chosen is None:
            raise UpdateRefused(f"the repository offers no version {version} "
                                f"(it offers {', '.join(o.version for o in offers) or 'none'})",
                                "choose one it offers")
    else:
        chosen = offers[-1]
    if installed is not None and parse_version(chosen.version) == parse_version(installed):
        return None
    if installed is not None and parse_version(chosen.version) < parse_version(installed) and not allow_downgrade:
        raise UpdateRefused(f"update refused: the repository's newest {chosen.model} is {chosen.version}, older than "
                            f"the installed {installed} (a stale server or a rollback)",
                            "the device keeps serving its version; pass --allow-downgrade to install an older one "
                            "on purpose")
    if chosen.version in rolled_back and version is None:
        raise UpdateRefused(f"update refused: {chosen.model} {chosen.version} was rolled back on this device "
                            f"({rolled_back[chosen.version]})",
                            "publish a fixed version, or name it with --version to try it again")
    return chosen


def update(url: str, into: str | Path, root: Path | None = None, model: str | None = None,
           version: str | None = None, canary: Path | None = None, allow_downgrade: bool = False,
           trial: int = DEFAULT_TRIAL, device: str = "cpu", echo: Callable[[str], None] = lambda s: None,
           backend: str | None = None, precision: str | None = None) -> UpdateResult:
    """Bring the device folder ``into`` to the repository's newest version of its model, or refuse."""
    if version is not None:
        parse_version(version)
    if trial < 0:
        raise OptionError(f"--trial {trial}", "give a number of predictions >= 0")
    dev = Device(into)
    with dev.lock():
        recovered = dev.recover()
        for line in recovered:
            echo(f"recovered: {line}")
        anchor = dev.trust_anchor(root)
        if canary is not None:
            echo(f"stored {store_reference(dev, canary)} reference frames in {dev.reference}")
        pointer = dev.pointer()
        if pointer is not None and model is not None and model != pointer.model:
            raise OptionError(f"--model {model}: this device serves {pointer.model}",
                              "use a separate device folder per model")
        model = pointer.model if pointer else model or dev.damaged_model
        installed = pointer.current if pointer else None
        client = Client(url, dev.metadata, anchor, dev.downloads)
        try:
            offers = client.offers(model)
        except UpdateRefused as exc:
            dev.log("refused", stage="metadata", reason=str(exc))
            raise
        dev.keep_trust_anchor(anchor)  # the repository verified against it: from now on it is the anchor
        if not offers:
            raise UpdateRefused(f"the repository offers no {model or 'edgemed'} bundle", "publish one first")
        if model is None and len({o.model for o in offers}) > 1:
            raise OptionError(f"the repository offers several models ({', '.join(sorted({o.model for o in offers}))})",
                              "choose one with --model")
        model = offers[-1].model
        pause_point("refreshed")
        try:
            offer = choose(offers, installed, version, allow_downgrade, pointer.rolled_back if pointer else {})
        except UpdateRefused as exc:
            dev.log("refused", stage="choice", reason=str(exc))
            raise
        if offer is None:
            return UpdateResult(model, installed, installed, installed, recovered=recovered,
                                message=f"{model} {installed} is the newest version: up to date")
        echo(f"{model}: installed {installed or 'none'}, offered {offer.version}")
        if pointer is not None and offer.version == pointer.previous:  # a downgrade to the slot still kept
            slot = dev.slot(offer.version)
        else:
            slot = _fetch_and_install(client, dev, offer)
        pause_point("installed")
        report = run_canary(slot, offer.version, read_frames(dev.reference),
                            dev.slot(installed) if installed else None, device, backend, precision)
        for line in report.lines:
            echo(f"canary: {line}")
        if not report.passed:
            if pointer is None or offer.version != pointer.previous:
                dev.discard(offer.version)
            dev.log("refused", stage="canary", version=offer.version, reason=report.reason)
            raise UpdateRefused(f"update refused: {model} {offer.version} failed its canary: {report.reason}",
                                f"the device keeps serving {installed or 'nothing'}")
        pause_point("canary")
        dev.switch(offer.version, model, trial)
        pause_point("switched")
        return UpdateResult(model, installed, offer.version, offer.version, changed=True, recovered=recovered,
                            canary=report,
                            message=f"{model} {offer.version} serves now (previous: {installed or 'none'}"
                                    + (f"; on trial for its first {trial} predictions)" if installed and trial
                                       else ")"))


def _fetch_and_install(client: Client, dev: Device, offer: Offer) -> Path:
    """Download (verified by TUF) and unpack into a new slot; every refusal is logged."""
    try:
        archive = client.download(offer, dev.downloads / f"{offer.target.hashes['sha256']}.tar")
        pause_point("downloaded")
        slot = dev.install(archive, offer.version, offer.model, offer.info.get("manifest_sha256"))
    except UpdateRefused as exc:
        dev.log("refused", stage="download", version=offer.version, reason=str(exc))
        raise
    except Exception as exc:
        dev.log("refused", stage="install", version=offer.version, reason=str(exc))
        raise
    finally:
        for leftover in dev.downloads.glob("*"):
            leftover.unlink(missing_ok=True)
    return slot


def rollback(into: str | Path, reason: str = "asked by the operator") -> str:
    """Serve the previous version again; returns the version now serving."""
    dev = Device(into)
    if dev.pointer() is None:
        raise DeviceError(f"{dev.path}: not a device folder with an installed version (current.json is missing)",
                          "pass the folder edgemed update --into installed into")
    with dev.lock():
        dev.recover()
        return dev.rollback(reason).current
