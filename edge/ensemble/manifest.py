"""The ensemble manifest (``ensemble.json``) as typed records: its one reader and its one writer.

An ensemble folder holds its members as complete bundles under ``members/``. The ensemble manifest names each
member's folder and the SHA-256 of that member's own ``edgemed.json``; the member manifest in turn vouches for
every file of the member by SHA-256 and size (:mod:`edgemed.bundle`). So one chain of hashes covers every file,
a changed member file is refused at load, and ``edgemed sign`` (which signs every file of the folder) covers the
members too. Records follow :mod:`edgemed.manifest`: msgspec structs, unknown fields refused, every problem a
:class:`~edgemed.errors.BundleError` naming the field.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from ..errors import BundleError
from ..manifest import Count, DriftRecord, FileName, FileRecord, Name, Record, Sha256, Text, _field_message
from ..tasks import TASKS

FORMAT = "edgemed-ensemble"
SCHEMA_VERSION = 1
COMBINES = ("mean-logits", "mean-probabilities", "vote")
FLIPS = ("hflip", "vflip", "hvflip")
MAX_MEMBERS = 16

Combine = Literal["mean-logits", "mean-probabilities", "vote"]
Flip = Literal["hflip", "vflip", "hvflip"]


class EnsembleMember(Record, kw_only=True):
    """One member bundle: its folder inside the ensemble, the hash of its manifest, its weight."""

    name: Name
    folder: FileName  # e.g. "members/0-unet_busi"
    manifest_sha256: Sha256
    weight: Annotated[float, Meta(gt=0)] = 1.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.weight):
            raise ValueError(f"weight: {self.weight} is not a finite number")


class EnsembleGate(Record, kw_only=True):
    """The combination's verdict (:mod:`edgemed.ensemble.gate`): which artifact of each member served, where,
    and the drift record of the combined output against the FP32 combination."""

    served: Annotated[list[Name], Meta(min_length=1, max_length=MAX_MEMBERS)]
    device: Name
    drift: DriftRecord


class BakedGraph(Record, kw_only=True):
    """The ensemble as one graph (``edgemed.converters.ensemble_graph``): its file, how it compared with the members'
    combination when the ensemble was made (largest difference of the combined output, frames), the two p50s
    measured side by side, and whether it serves (only where it was faster; the runtime also needs every member
    on its ONNX Runtime FP32 artifact, which the graph is made of)."""

    file: FileRecord
    serves: bool
    baked_ms: Annotated[float, Meta(ge=0)]
    members_ms: Annotated[float, Meta(ge=0)]
    max_abs_diff: Annotated[float, Meta(ge=0)]
    frames: Count


# the tasks whose models combine (a detector's boxes would need box fusion: Detection.ensemble_refusal says so)
EnsembleTask = Literal[tuple(n for n, t in TASKS.items() if not t.ensemble_refusal)]  # type: ignore[valid-type]


class EnsembleManifest(Record, kw_only=True):
    format: Literal["edgemed-ensemble"]
    schema_version: Annotated[int, Meta(ge=SCHEMA_VERSION, le=SCHEMA_VERSION)]
    task: EnsembleTask
    labels: Annotated[list[Name], Meta(min_length=1, max_length=4096)]
    combine: Combine
    tta: Annotated[list[Flip], Meta(max_length=len(FLIPS))] = []
    members: Annotated[list[EnsembleMember], Meta(min_length=1, max_length=MAX_MEMBERS)]
    gate: EnsembleGate | None = None  # absent: the combination was not judged (no ONNX Runtime FP32 in a member)
    baked: BakedGraph | None = None  # absent: not bakeable (``bake_note`` says why) or an ensemble made before it
    bake_note: Text = ""
    created: Text = ""
    edgemed: Text = ""

    def __post_init__(self) -> None:
        if len(set(self.tta)) != len(self.tta):
            raise ValueError(f"tta: a flip is listed twice ({self.tta})")
        folders = [m.folder for m in self.members]
        if len(set(folders)) != len(folders):
            raise ValueError("members: two members share a folder")

    def combination_verdict(self, served: list[str]) -> str:
        """The verdict of the combination of exactly these member artifacts (``backend/precision`` keys, in member
        order): the recorded gate's where it judged this very combination, else ``uncertified`` (never judged, or
        judged on other artifacts, which says nothing about these)."""
        if self.gate is None or list(self.gate.served) != list(served):
            return "uncertified"
        return self.gate.drift.verdict

    @property
    def views(self) -> list[str]:
        """The input views each member sees: the frame itself, then each flip."""
        return ["none", *self.tta]

    @classmethod
    def from_json(cls, data: bytes | str, where: str = "ensemble.json") -> EnsembleManifest:
        fix = "rebuild the ensemble with edgemed ensemble"
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise BundleError(f"{where} is not valid JSON ({type(exc).__name__})", fix) from exc
        if not isinstance(raw, dict):
            raise BundleError(f"{where} is not a JSON object", fix)
        if raw.get("format") == FORMAT and isinstance(raw.get("schema_version"), int) \
                and raw["schema_version"] > SCHEMA_VERSION:
            raise BundleError(f"{where}: schema_version {raw['schema_version']} is newer than this edgemed reads "
                              f"({SCHEMA_VERSION})", "upgrade edgemed on this device")
        try:
            return msgspec.convert(raw, cls)
        except msgspec.ValidationError as exc:
            raise BundleError(f"{where}: {_field_message(exc, raw, cls)}", fix) from exc

    def to_json(self) -> bytes:
        """Indented JSON, read back and checked before it is returned (a writer bug never reaches a device)."""
        text = json.dumps(msgspec.to_builtins(self), indent=2, allow_nan=False) + "\n"
        EnsembleManifest.from_json(text, "the ensemble manifest being written")
        return text.encode("utf-8")
