"""Certifications: verdicts taken on a site's own data after conversion, kept beside the bundle, never inside it.

``edgemed certify`` judges a bundle's artifacts again on more (site) data without rebuilding anything: an
artifact that conversion left *uncertified* for want of cases becomes *passed* or *failed*. Each run is one
record, ``BUNDLE/certifications/NNNN.json``, written atomically and never rewritten, so the history of
verdicts is kept. A record is bound to the bundle (the manifest's SHA-256) and to each artifact's own SHA-256:
a rebuilt bundle or a changed file leaves old records unused. Records may be signed (Ed25519, the keys
``edgemed keygen`` makes); the bundle's own signature (``edgemed.sig``) does not cover this folder, so a
hospital can certify a vendor-signed bundle with its own key, and ``verify`` says which verdict it trusts and
who signed it.

Which records count: without a required signature, every record bound to this bundle (they are as
trustworthy as the unsigned bundle itself); with ``require_signature`` (and any ``certifiers``), only records
signed by one of those keys. How verdicts combine, per artifact: a failure on any data set sticks (the flips
were seen); otherwise one passing verdict certifies; otherwise the artifact stays uncertified. A record
measured on another device does not decide for this one (an NPU computes an FP32 IR at f16).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from .errors import BundleError
from .manifest import Artifact, ClinicalRecord, Count, DriftRecord, Name, Record, Sha256, Text

FOLDER = "certifications"
SCHEMA = "edgemed-certification/1"
MAX_RECORD_BYTES = 4 << 20


class DataRecord(Record, kw_only=True):
    """The cases a certification rests on."""

    source: Text
    sha256: Sha256
    cases: Count
    unit: Name = "cases"


class ArtifactCertification(Record, kw_only=True):
    file: Name
    sha256: Sha256
    backend: Name
    precision: Name
    drift: DriftRecord
    clinical: ClinicalRecord | None = None

    @property
    def verdict(self) -> str:
        from .manifest import VERDICT_ORDER

        verdicts = [self.drift.verdict] + ([self.clinical.verdict] if self.clinical else [])
        return max(verdicts, key=VERDICT_ORDER.__getitem__)


class Signature(Record, kw_only=True):
    algorithm: Literal["ed25519"] = "ed25519"
    key_fingerprint: Annotated[str, Meta(pattern="^[0-9a-f]{16}$")]
    value: Annotated[str, Meta(max_length=256)]


class Certification(Record, kw_only=True):
    schema: Literal["edgemed-certification/1"] = SCHEMA
    bundle_manifest_sha256: Sha256
    created: Text
    host: Text = ""
    device: Name = "cpu"
    edgemed: Name
    tools: dict[Name, Text] = {}
    reference: Text  # what the candidates were compared with
    data: DataRecord
    labelled: DataRecord | None = None
    budget: Text | None = None  # None: each artifact's conversion budget
    artifacts: list[ArtifactCertification]
    signature: Signature | None = None

    def payload(self) -> bytes:
        """The bytes a signature covers: the record without its signature, canonical JSON."""
        body = msgspec.to_builtins(msgspec.structs.replace(self, signature=None))
        return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()

    def to_json(self) -> bytes:
        return (json.dumps(msgspec.to_builtins(self), indent=2, allow_nan=False) + "\n").encode()


def sign(record: Certification, private_key: Path) -> Certification:
    from cryptography.hazmat.primitives import serialization

    from .signing_keys import fingerprint, load_key

    key = load_key(private_key, private=True)
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    value = base64.b64encode(key.sign(record.payload())).decode()
    return msgspec.structs.replace(record, signature=Signature(key_fingerprint=fingerprint(public), value=value))


def signer(record: Certification, public_keys: Sequence[Path]) -> str | None:
    """The fingerprint of the key among ``public_keys`` whose signature the record carries, else None."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization

    from .signing_keys import fingerprint, load_key

    if record.signature is None:
        return None
    try:
        signature = base64.b64decode(record.signature.value, validate=True)
    except ValueError:
        return None
    for path in public_keys:
        key = load_key(Path(path), private=False)
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        if fingerprint(raw) != record.signature.key_fingerprint:
            continue
        try:
            key.verify(signature, record.payload())
            return fingerprint(raw)
        except InvalidSignature:
            return None
    return None


def records(bundle: Path) -> list[tuple[str, Certification]]:
    """Every certification record in the bundle's folder, oldest first; a malformed one is an error naming it."""
    folder = Path(bundle) / FOLDER
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob("*.json")):
        if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_RECORD_BYTES:
            raise BundleError(f"bundle {bundle}: {FOLDER}/{path.name} is not a plain certification record",
                              "remove it, or certify again (edgemed certify)")
        try:
            out.append((path.name, msgspec.json.decode(path.read_bytes(), type=Certification)))
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise BundleError(f"bundle {bundle}: {FOLDER}/{path.name} is not a valid certification record ({exc})",
                              "remove it, or certify again (edgemed certify)") from exc
    return out


def write(bundle: Path, record: Certification) -> Path:
    """Add the record as the next numbered file, atomically; returns its path."""
    from .atomic import write_atomic

    folder = Path(bundle) / FOLDER
    folder.mkdir(exist_ok=True)
    taken = [int(p.stem) for p in folder.glob("*.json") if p.stem.isdigit()]
    target = folder / f"{max(taken, default=0) + 1:04d}.json"
    return write_atomic(target, record.to_json())


class Trusted(msgspec.Struct, frozen=True):
    """A certification record this load trusts, with who signed it."""

    name: str
    record: Certification
    signed_by: str | None


def trusted(bundle: Path, manifest_sha256: str, require_signature: Path | None = None,
            certifiers: Iterable[Path] = ()) -> tuple[list[Trusted], list[str]]:
    """The records bound to this bundle that count, and a note for each one left unused (and why)."""
    keys = [Path(k) for k in ([require_signature] if require_signature else []) + list(certifiers)]
    kept, notes = [], []
    for name, record in records(bundle):
        if record.bundle_manifest_sha256 != manifest_sha256:
            notes.append(f"{name}: certifies another build of this bundle; not used")
            continue
        who = signer(record, keys) if keys else None
        if keys and who is None:
            notes.append(f"{name}: not signed by a trusted key; not used")
            continue
        kept.append(Trusted(name, record, who))
    return kept, notes


def effective(artifacts: Sequence[Artifact], certifications: Sequence[Trusted],
              device_of: Callable[[str], str] | None = None) -> list[Artifact]:
    """The artifacts with the verdict that holds once certifications count (the manifest itself is never changed):
    a failure on any data set sticks; otherwise one pass certifies; records from another device do not decide."""
    out = []
    for art in artifacts:
        device = device_of(art.backend) if device_of else None
        mine = [(t, c) for t in certifications for c in t.record.artifacts
                if c.file == art.file and c.sha256 == art.sha256
                and (device is None or t.record.device == device)]
        failed = [(t, c) for t, c in mine if c.verdict == "failed"]
        passed = [(t, c) for t, c in mine if c.verdict == "passed"]
        deciding = failed[-1] if failed else (passed[-1] if passed and art.verdict != "failed" else None)
        if deciding is None:
            out.append(art)
            continue
        t, c = deciding
        where = f"{c.drift.evaluated_on}, certification {t.name}" + (f" signed by key {t.signed_by}" if t.signed_by
                                                                     else "")
        out.append(msgspec.structs.replace(art, drift=msgspec.structs.replace(c.drift, evaluated_on=where),
                                           clinical=c.clinical if c.clinical is not None else art.clinical))
    return out
