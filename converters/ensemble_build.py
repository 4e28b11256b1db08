"""Writing an ensemble folder: members checked, copied whole, one manifest over them, all or nothing.

Members are copied (not linked) so the ensemble is one folder a device can receive, verify and sign like a bundle;
a member keeps everything it had (its artifacts and verdicts, reference probes, report, certifications).
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from edgemed._version import __version__
from edgemed.atomic import write_atomic
from edgemed.bundle import MANIFEST, Bundle, atomic_directory
from edgemed.ensemble.files import ENSEMBLE, MEMBERS, is_ensemble
from edgemed.ensemble.manifest import COMBINES, FLIPS, MAX_MEMBERS, EnsembleManifest, EnsembleMember
from edgemed.ensemble.opening import check_members, open_ensemble
from edgemed.errors import BundleError, OptionError
from edgemed.hashing import sha256_file

SAMPLES = "samples.npz"  # the frames convert keeps in a bundle (edgemed.converters.convert.SAMPLES)


def parse_weights(weights: Sequence[float] | str | None, count: int) -> list[float]:
    """One positive finite weight per member (``"2,1"`` or a sequence); None: equal weights."""
    if weights is None:
        return [1.0] * count
    if isinstance(weights, str):
        try:
            weights = [float(w) for w in weights.split(",") if w.strip()]
        except ValueError as exc:
            raise OptionError(f"--weights {weights!r} is not a list of numbers", "write e.g. --weights 2,1") from exc
    values = [float(w) for w in weights]
    if len(values) != count:
        raise OptionError(f"{len(values)} weights for {count} members", "give one weight per member, in order")
    if not all(0 < w < float("inf") for w in values):
        raise OptionError(f"weights {values} must all be positive and finite", "write e.g. --weights 2,1")
    return values


def parse_tta(tta: Sequence[str] | str | None) -> list[str]:
    names = [t.strip() for t in tta.split(",") if t.strip()] if isinstance(tta, str) else list(tta or ())
    unknown = [t for t in names if t not in FLIPS]
    if unknown:
        raise OptionError(f"--tta {','.join(unknown)}: not a flip edgemed knows", f"use {', '.join(FLIPS)}")
    if len(set(names)) != len(names):
        raise OptionError(f"--tta {','.join(names)} lists a flip twice", "list each flip once")
    return names


def _folder(index: int, name: str) -> str:
    return f"{MEMBERS}/{index}-{re.sub(r'[^A-Za-z0-9._-]+', '_', name)[:64] or 'member'}"


def make_ensemble(members: Sequence[str | Path], out: str | Path, combine: str = "mean-logits",
                  weights: Sequence[float] | str | None = None, tta: Sequence[str] | str | None = (),
                  force: bool = False, eval: str | Path | None = None, eval_key: str | None = None,
                  device: str = "cpu", log: Callable[[str], None] = lambda s: None) -> Path:
    """Write the ensemble of ``members`` (bundle folders of one task and labels) to ``out``.

    ``combine``: ``mean-logits`` (nnU-Net's choice), ``mean-probabilities`` or ``vote`` (see
    :mod:`edgemed.tasks.combine`); ``weights``: one per member; ``tta``: flips each member also sees
    (``hflip``, ``vflip``, ``hvflip``). Detectors are refused (box fusion is not implemented).

    The combination is then judged where it will serve (``device``) against the FP32 combination
    (:mod:`edgemed.ensemble.gate`) on ``eval`` (a folder or .npz of frames; default: the frames the first member
    stored at conversion, ``samples.npz``), and the verdict is written into the ensemble's manifest."""
    if combine not in COMBINES:
        raise OptionError(f"--combine {combine!r} is not a combination edgemed knows", f"use {', '.join(COMBINES)}")
    if not members:
        raise OptionError("no member bundles given", "pass at least one bundle (with --tta) or two")
    if len(members) > MAX_MEMBERS:
        raise OptionError(f"{len(members)} members; an ensemble holds at most {MAX_MEMBERS}", "pass fewer bundles")
    flips = parse_tta(tta)
    values = parse_weights(weights, len(members))
    if len(members) == 1 and not flips:
        raise OptionError("one member and no --tta is just that bundle", "pass two or more bundles, or add --tta")
    for p in members:
        if is_ensemble(p):
            raise BundleError(f"{p} is an ensemble; ensembles of ensembles are not supported",
                              "list its member bundles instead")
    opened = [Bundle.open(p) for p in members]
    check_members(opened, combine)
    records = []
    with atomic_directory(out, force=force) as tmp:
        for i, (b, w) in enumerate(zip(opened, values)):
            folder = _folder(i, b.name)
            shutil.copytree(b.path, tmp / folder, symlinks=False)
            Bundle.open(tmp / folder)  # the copy is what the source vouched for, file by file
            records.append(EnsembleMember(name=b.name, folder=folder, weight=w,
                                          manifest_sha256=sha256_file(tmp / folder / MANIFEST)))
        manifest = EnsembleManifest(format="edgemed-ensemble", schema_version=1, task=opened[0].task,
                                    labels=opened[0].labels, combine=combine, tta=flips, members=records,
                                    created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), edgemed=__version__)
        write_atomic(tmp / ENSEMBLE, manifest.to_json())
        gate = _judge(tmp, opened, eval, eval_key, device, log)
        if gate is not None:
            manifest = msgspec.structs.replace(manifest, gate=gate)
            write_atomic(tmp / ENSEMBLE, manifest.to_json())
        baked, note = _bake(tmp, manifest, eval, eval_key, log)
        write_atomic(tmp / ENSEMBLE, msgspec.structs.replace(manifest, baked=baked, bake_note=note).to_json())
        open_ensemble(tmp)  # the folder as a device will read it, before it takes the name
    return Path(out)


def _judge(root: Path, members: Sequence[Bundle], eval: str | Path | None, eval_key: str | None, device: str,
           log: Callable[[str], None]):
    """The combination's verdict, or None (said in the log) where there is no FP32 combination to judge against
    or no frames."""
    from edgemed.datasets import ImageSet
    from edgemed.ensemble.gate import judge_combination

    if not all((a := b.manifest.artifact("onnxruntime", "fp32")) is not None and a.verdict == "passed"
               for b in members):
        log("combination not judged: every member needs a passed ONNX Runtime FP32 artifact as the reference")
        return None
    source = Path(eval) if eval is not None else members[0].path / SAMPLES
    if not source.exists():
        log(f"combination not judged: no frames ({source.name} is missing; pass --eval)")
        return None
    frames = ImageSet.open(source, eval_key)
    return judge_combination(root, frames, device, f"{len(frames)} frames of {source.name}", log)


BAKE_FRAMES = 32  # frames the baked graph is compared and timed on when the ensemble is made
BAKE_ROUNDS = 5  # alternating rounds over them (p50 of every call)
BAKE_ATOL = 1e-4  # the one graph must give the members' combination to FP32 round-off


def _bake(root: Path, manifest: EnsembleManifest, eval: str | Path | None, eval_key: str | None,
          log: Callable[[str], None]) -> tuple[Any, str]:
    """Bake the members and flips into one graph where they can be (edgemed.converters.ensemble_graph), compare it
    with the members' FP32 combination on real frames, time both side by side, and record which is faster: the
    runtime serves the graph only where it won. Returns (the record or None, why not)."""
    from edgemed.datasets import ImageSet
    from edgemed.ensemble.manifest import BakedGraph
    from edgemed.ensemble.runtime import EnsemblePipeline, load_ensemble
    from edgemed.runtimes.onnxruntime import OnnxRuntimeEngine
    from edgemed.tasks.combine import normalised

    members = [Bundle.open(root / m.folder) for m in manifest.members]
    try:
        from .ensemble_graph import BAKED_FILE, bake, why_not
    except ImportError:  # the runtime-only install has no onnx: the ensemble runs member by member
        return None, "not baked: onnx is not installed (pip install 'edgemed[convert]')"
    reason = why_not(members, manifest.combine)
    if reason is not None:
        log(f"not baked into one graph: {reason}")
        return None, f"not baked: {reason}"
    bake(members, normalised([m.weight for m in manifest.members], len(manifest.views)), manifest.views,
         manifest.task, manifest.combine, root / BAKED_FILE)
    source = Path(eval) if eval is not None else members[0].path / SAMPLES
    frames = [f for _, f in ImageSet.open(source, eval_key).subset(BAKE_FRAMES)] if source.exists() else []
    if not frames:
        (root / BAKED_FILE).unlink()
        return None, f"not baked: no frames to compare it on ({source.name} is missing; pass --eval)"
    with load_ensemble(root, backend="onnxruntime", precision="fp32", form="members") as members_form, \
            OnnxRuntimeEngine(root / BAKED_FILE, device="cpu") as engine:
        baked_form = EnsemblePipeline(members_form.ensemble, members_form.members, engine)
        diff = 0.0
        for frame in frames:
            a, _ = members_form.combined_output(*members_form.member_outputs(frame))
            prepared = baked_form.prepare(frame)
            b, _ = baked_form.combined_output(prepared, baked_form.infer(prepared))
            diff = max(diff, float(np.abs(np.asarray(a, np.float64) - b).max()))
        times: dict[str, list[float]] = {"baked": [], "members": []}
        for r in range(BAKE_ROUNDS):
            order = (("baked", baked_form), ("members", members_form))
            for frame in frames:
                for name, pipe in order if r % 2 else order[::-1]:
                    t0 = time.perf_counter()
                    pipe.predict(frame)
                    times[name].append(time.perf_counter() - t0)
    p50 = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
    serves = diff <= BAKE_ATOL and p50["baked"] < p50["members"]
    log(f"baked into one graph: max |diff| {diff:.2e} from the members' combination on {len(frames)} frames; p50 "
        f"{p50['baked']:.3f} ms against {p50['members']:.3f} ms member by member: "
        + ("it serves" if serves else "the members serve"))
    from edgemed.bundle import file_record

    return BakedGraph(file=file_record(root, BAKED_FILE), serves=serves, baked_ms=round(p50["baked"], 4),
                      members_ms=round(p50["members"], 4), max_abs_diff=diff, frames=len(frames)), ""
