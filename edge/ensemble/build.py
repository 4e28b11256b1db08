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

import msgspec

from .._version import __version__
from ..atomic import write_atomic
from ..bundle import MANIFEST, Bundle, atomic_directory
from ..errors import BundleError, OptionError
from ..hashing import sha256_file
from .files import ENSEMBLE, MEMBERS, is_ensemble
from .manifest import COMBINES, FLIPS, MAX_MEMBERS, EnsembleManifest, EnsembleMember
from .opening import check_members, open_ensemble

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
    :mod:`edgemed.ensemble.combine`); ``weights``: one per member; ``tta``: flips each member also sees
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
            write_atomic(tmp / ENSEMBLE, msgspec.structs.replace(manifest, gate=gate).to_json())
        open_ensemble(tmp)  # the folder as a device will read it, before it takes the name
    return Path(out)


def _judge(root: Path, members: Sequence[Bundle], eval: str | Path | None, eval_key: str | None, device: str,
           log: Callable[[str], None]):
    """The combination's verdict, or None (said in the log) where there is no FP32 combination to judge against
    or no frames."""
    from ..datasets import ImageSet
    from .gate import judge_combination

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
