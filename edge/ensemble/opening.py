"""Opening an ensemble: its manifest, then every member as a verified bundle, and the rules members must meet.

``check_members`` is the one statement of what may be ensembled; ``make_ensemble`` applies it before writing and
``open_ensemble`` again at every load (a hand-edited folder gets the same refusal as a bad command line).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..bundle import MANIFEST, Bundle, _safe_member, read_manifest_file
from ..errors import BundleError
from ..hashing import sha256_file
from ..input_kinds import input_kind
from ..tasks import TASKS, task_named
from .files import ENSEMBLE
from .manifest import EnsembleManifest

GEOMETRY_OPS = ("resize", "center_crop")  # the preprocessing steps that decide where a mask's pixels lie


@dataclass
class OpenedEnsemble:
    path: Path
    manifest: EnsembleManifest
    members: list[Bundle]


def _geometry(bundle: Bundle) -> tuple:
    m = bundle.manifest
    return (tuple(m.input.static_shape[2:] if m.input.layout == "NCHW" else m.input.static_shape[1:3]),
            [op for op in m.preprocess if op.get("op") in GEOMETRY_OPS])


def check_members(members: Sequence[Bundle], combine: str) -> None:
    """Refuse members that cannot be combined, naming the first offender and the fix."""
    first = members[0]
    task = task_named(first.task)
    if task.ensemble_refusal:
        raise BundleError(f"{first.path}: {task.ensemble_refusal}",
                          f"ensemble {' or '.join(t.plural for t in TASKS.values() if not t.ensemble_refusal)}; "
                          f"run {task.plural} one by one")
    if not input_kind(first.manifest.model.input_kind).frames:
        raise BundleError(f"{first.path} takes signals: ensembles combine image models only",
                          "run signal models one by one")
    featured = next((b for b in members if b.manifest.features), None)
    if featured is not None:
        raise BundleError(f"{featured.path} reads inputs beside the image ({featured.manifest.features[0].name}): "
                          "ensembles combine one-input models only", "run it on its own")
    for b in members[1:]:
        if b.task != first.task:
            raise BundleError(f"{b.path} is a {b.task} bundle, {first.path} a {first.task} bundle",
                              "ensemble bundles of one task")
        if b.labels != first.labels:
            raise BundleError(f"{b.path} has labels {b.labels}, {first.path} has {first.labels}",
                              "ensemble bundles with the same labels in the same order (convert with --labels)")
        if not input_kind(b.manifest.model.input_kind).frames:
            raise BundleError(f"{b.path} takes signals: ensembles combine image models only",
                              "run signal models one by one")
    if task.spatial:
        for b in members[1:]:
            if _geometry(b) != _geometry(first):
                raise BundleError(f"{b.path} maps frames to the model differently from {first.path} (input size or "
                                  "resize/crop steps differ): their masks cannot be combined pixel by pixel",
                                  "ensemble segmenters converted with the same --input-shape and resize/crop steps "
                                  "(intensity steps may differ)")
    if combine == "mean-logits":
        kinds = {(b.manifest.output.kind, b.manifest.output.shape[1] if len(b.manifest.output.shape) > 1 else None)
                 for b in members}
        if len(kinds) > 1 or next(iter(kinds))[0] != "logits":
            raise BundleError("mean-logits needs every member to output logits with the same number of channels "
                              f"(the members output {sorted(map(str, kinds))})",
                              "use --combine mean-probabilities or vote")


def open_ensemble(path: str | Path, verify: bool = True, require_signature: str | Path | None = None,
                  certifiers: Sequence[str | Path] = ()) -> OpenedEnsemble:
    """The ensemble manifest, read and validated, and each member opened as a bundle after its manifest's hash
    matched the ensemble's record (then :class:`~edgemed.bundle.Bundle` checks every member file)."""
    root = Path(path)
    text = read_manifest_file(root, ENSEMBLE, "ensemble", "edgemed ensemble")
    manifest = EnsembleManifest.from_json(text, f"ensemble {root}: {ENSEMBLE}")
    members = []
    for i, member in enumerate(manifest.members):
        folder = _safe_member(root, member.folder, f"members[{i}].folder")
        inner = folder / MANIFEST
        if not inner.is_file():
            raise BundleError(f"ensemble {root}: member {member.folder} has no {MANIFEST}",
                              "copy the whole ensemble folder again")
        if verify and sha256_file(inner) != member.manifest_sha256:
            raise BundleError(f"ensemble {root}: {member.folder}/{MANIFEST} does not match its SHA-256 "
                              f"(members[{i}].manifest_sha256: changed or corrupt)",
                              "copy the ensemble again or rebuild it")
        try:
            members.append(Bundle.open(folder, verify=verify, require_signature=require_signature,
                                       certifiers=certifiers))
        except BundleError as exc:
            raise BundleError(f"ensemble {root}: member {member.folder}: {exc.problem}", exc.fix) from exc
    check_members(members, manifest.combine)
    for b in members:
        if b.task != manifest.task or b.labels != manifest.labels:
            raise BundleError(f"ensemble {root}: member {b.path.name} is {b.task} with labels {b.labels}, the "
                              f"ensemble says {manifest.task} with {manifest.labels}", "rebuild the ensemble")
    if verify and manifest.baked is not None:  # the one-graph form is vouched for like every member file
        _check_file(root, manifest.baked.file, "baked.file")
    return OpenedEnsemble(root, manifest, members)


def _check_file(root: Path, record, field: str) -> None:
    path = _safe_member(root, record.file, field)
    if not path.is_file() or path.stat().st_size != record.bytes or sha256_file(path) != record.sha256:
        raise BundleError(f"ensemble {root}: {record.file} does not match its size and SHA-256 ({field}: missing, "
                          "changed or corrupt)", "copy the ensemble again or rebuild it")
