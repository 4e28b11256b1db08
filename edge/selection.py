"""Choosing which artifact of a bundle serves a request, on which device, with which engine options.

:func:`select` is the whole decision, apart from starting the engine: the device word is
resolved to a device profile, only artifacts that passed the drift gate and whose backend is
installed are eligible, explicit backend/precision requests narrow the choice, the profile's
preference orders what is left, and ``device="auto"`` measures instead of assuming. ``load``
composes it with :func:`open_engine`; ``bench`` asks it which artifact would serve without
building a pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .backends import PRECISIONS
from .backends import backend as backend_info
from .bundle import Bundle
from .errors import BackendUnavailable, NoEligibleArtifact, OptionError
from .manifest import Artifact


@dataclass(frozen=True)
class Selection:
    artifact: Artifact
    profile: Any  # edgemed.devices.profiles.DeviceProfile
    device: str  # the device word the engine is created with (cpu, cuda, npu, ...)
    threads: int | None
    reason: str
    options: dict[str, Any] = field(default_factory=dict)  # the backend engine's own settings


VERDICTS = ("passed", "uncertified", "failed")
ACCEPTABLE = VERDICTS[1:]  # every verdict but "passed": what an explicit accept= / --accept can let through


def describe_artifacts(artifacts: Sequence[Artifact]) -> str:
    return ", ".join(a.key + ("" if a.verdict == "passed" else f" ({a.verdict})") for a in artifacts)


def check_request(device: Any, backend: Any, precision: Any, threads: Any, accept: Any = None) -> str:
    """Refuse malformed requests before any work, the same way for every argument; returns the device word."""
    if not isinstance(device, str) or not device.strip():
        raise OptionError(f"device {device!r} is not a name", "use e.g. device='cpu' or 'auto'")
    if backend is not None:
        backend_info(backend)  # the table's refusal of a name it does not declare
    if precision is not None and precision not in PRECISIONS:
        raise OptionError(f"unknown precision {precision!r}", f"use one of {', '.join(PRECISIONS)}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 1024):
        raise OptionError(f"threads={threads!r} is not a thread count", "use a whole number >= 1, or None for the "
                                                                          "device profile's default")
    if accept is not None:
        if accept not in ACCEPTABLE:
            raise OptionError(f"accept={accept!r} is not a verdict one can accept", "use 'uncertified' or 'failed'")
        if backend is None or precision is None:
            raise OptionError(f"accept={accept!r} needs the exact artifact: an unproven artifact is never chosen "
                              "for you", "name it with backend= and precision= (--backend, --precision)")
    return device.strip().lower()


def eligible(artifacts: Sequence[Artifact], backend: str | None = None, precision: str | None = None,
             accept: str | None = None) -> list[Artifact]:
    """Artifacts matching the request whose verdict is passed (or no worse than ``accept``, which the
    caller may give only when naming one artifact exactly), in bundle order."""
    worst = VERDICTS.index(accept or "passed")
    matching = [a for a in artifacts if backend in (None, a.backend) and precision in (None, a.precision)]
    chosen = [a for a in matching if VERDICTS.index(a.verdict) <= worst]
    if not chosen:
        wanted = "/".join(x for x in (backend, precision) if x) or "any artifact"
        fix = f"available: {describe_artifacts(artifacts)}"
        if matching and backend and precision and accept is None:
            fix += (f"; to run {wanted} anyway, accept its {matching[0].verdict} verdict explicitly "
                    f"(accept='{matching[0].verdict}', --accept {matching[0].verdict})")
        raise NoEligibleArtifact(f"the bundle has no certified (drift-passed) artifact for {wanted}", fix)
    return chosen


def rank(candidates: Sequence[Artifact], preference: Sequence[tuple[str, str]]) -> list[Artifact]:
    """Order candidates by a device profile's preference list; unlisted ones go last."""
    order = {tuple(p): i for i, p in enumerate(preference)}
    return sorted(candidates, key=lambda a: order.get((a.backend, a.precision), len(order)))


def engine_options(artifact: Artifact, profile: Any) -> dict[str, Any]:
    """Backend settings for an artifact on a profile, all from data (the manifest and the profile)."""
    if artifact.backend == "onnxruntime":
        return {"spin": profile.ort_allow_spinning}
    if artifact.backend == "openvino":
        return {"static_batch": artifact.build.static_batch or (1 if profile.static_shapes else None)}
    from edgemed.runtimes.engine_cache import check_runnable_here

    check_runnable_here(artifact.build.tensorrt, profile.tensorrt, profile.name)
    return {"options": artifact.build.tensorrt}


def shared_by(selection: Selection, callers: int, cores: int | None = None) -> Selection:
    """Engine settings for a pipeline that ``callers`` threads call at once (a capture and a UI thread; a server's
    instance, whose front end and clients need cores too): each call gets an equal share of the cores as intra-op
    threads (unless ``threads`` was given) and no thread busy-waits for work. ONNX Runtime runs concurrent calls on
    one session in parallel, each on its caller's thread plus its share of the pool; spinning pools on shared cores
    take the cycles the other callers need. Measured on 2 cores (benchmarks/studies/concurrency.py): see the README's
    "Calling predict from several threads"."""
    import dataclasses
    import os

    if not isinstance(callers, int) or isinstance(callers, bool) or not 1 <= callers <= 1024:
        raise OptionError(f"callers={callers!r} is not a number of threads 1..1024",
                          "pass how many threads will call predict at once (1: one thread)")
    if callers == 1:
        return selection
    cores = cores or os.cpu_count() or 1
    options = {**selection.options, "spin": False} if "spin" in selection.options else selection.options
    return dataclasses.replace(selection, threads=selection.threads or max(1, cores // callers), options=options)


def candidate(artifact: Artifact, profile: Any, threads: int | None, reason: str = "") -> Selection:
    return Selection(artifact, profile, profile.engine_device(artifact.backend), threads or profile.threads, reason,
                     engine_options(artifact, profile))


def open_engine(bundle: Bundle, selection: Selection):
    """Start the selected artifact's engine."""
    from edgemed.runtimes import create_engine

    art = selection.artifact
    return create_engine(art.backend, bundle.file(art.file), device=selection.device, threads=selection.threads,
                         precision=art.precision, **selection.options)


def select(bundle: Bundle, device: str = "cpu", backend: str | None = None, precision: str | None = None,
           threads: int | None = None, accept: str | None = None) -> Selection:
    """Which artifact serves this request here, and why. Only passed artifacts, unless the caller names one
    exactly and accepts its verdict (``accept="uncertified"`` or ``"failed"``)."""
    from edgemed.devices.detect import detect, resolve_device
    from edgemed.devices.profiles import load_profiles
    from edgemed.runtimes import available_backends

    device = check_request(device, backend, precision, threads, accept)
    machine = detect(probe_openvino=device in ("auto", "npu"))
    profile = resolve_device(device, machine, load_profiles())
    candidates = eligible(bundle.artifacts_on(profile.engine_device), backend, precision, accept)
    installed = available_backends()
    runnable = [a for a in candidates if installed.get(a.backend, False)]
    if not runnable:
        raise BackendUnavailable(
            f"no installed backend can run the bundle's passed artifacts ({describe_artifacts(candidates)})",
            "install the backend (e.g. pip install 'edgemed[openvino]')")
    ranked = rank(runnable, profile.preference)
    requested = "/".join(x for x in (backend, precision) if x)
    if device == "auto" and len(ranked) > 1:
        from . import autoselect
        from .gate.probes import probe_feed

        artifact, reason = autoselect.choose(
            ranked, lambda a: open_engine(bundle, candidate(a, profile, threads)), probe_feed(bundle),
            bundle.manifest_sha256(), profile.name, machine.cpu_model, threads)
    else:
        artifact = ranked[0]
        reason = (f"requested {requested}; " if requested else "") + (
            f"first drift-passed artifact in profile {profile.name}'s preference")
    if artifact.verdict != "passed":
        reason = (f"requested {requested} and ACCEPTED its {artifact.verdict.upper()} verdict "
                  f"({'; '.join(artifact.drift.missed + (artifact.clinical.missed if artifact.clinical else []))})")
    return candidate(artifact, profile, threads, reason)
