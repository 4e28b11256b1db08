"""Ed25519 bundle signatures: who built this bundle, and is it exactly what they built?

The signature (``edgemed.sig``) covers the list of every file in the bundle with its SHA-256,
the manifest included. Verification therefore names a file that was changed, added or
removed, before checking the signature itself. Keys are standard PEM files
(``cryptography``'s Ed25519); the private key never enters the bundle.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from .atomic import write_atomic
from .errors import BundleError
from .hashing import sha256_file
from .signing_keys import crypto, fingerprint, load_key

SIGNATURE = "edgemed.sig"
ALGORITHM = "ed25519"


def bundle_files(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every regular file in the bundle except the signature itself and the
    certification records (each carries its own signature: a site certifies a vendor-signed bundle with its own
    key, see :mod:`edgemed.certification`)."""
    from .certification import FOLDER

    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel == SIGNATURE or path.is_dir() or rel.split("/")[0] == FOLDER:
            continue
        if path.is_symlink() or not path.is_file():
            raise BundleError(f"bundle {root}: {rel} is not a regular file", "bundles hold plain files only")
        out[rel] = sha256_file(path)
    return out


def _payload(files: dict[str, str]) -> bytes:
    return json.dumps({"algorithm": ALGORITHM, "files": files}, sort_keys=True, separators=(",", ":")).encode()


def sign_bundle(root: Path, private_key: Path) -> Path:
    """Write ``edgemed.sig`` (atomically) over the bundle's current files."""
    serialization, _, _ = crypto()
    from .bundle import Bundle
    from .ensemble.files import is_ensemble

    if is_ensemble(root):  # an ensemble: its manifest, each member's, every member file
        from .ensemble.opening import open_ensemble

        open_ensemble(root)
    else:
        Bundle.open(root)  # never sign a bundle that does not verify against its own manifest
    key = load_key(private_key, private=True)
    files = bundle_files(root)
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    record = {"algorithm": ALGORITHM, "key_fingerprint": fingerprint(public), "files": files,
              "signature": base64.b64encode(key.sign(_payload(files))).decode()}
    return write_atomic(root / SIGNATURE, json.dumps(record, indent=2) + "\n")


def verify_signature(root: Path, public_key: Path) -> str:
    """Raise BundleError naming what changed; return the signer's key fingerprint on success."""
    serialization, _, invalid = crypto()
    root = Path(root)
    sig_path = root / SIGNATURE
    if not sig_path.is_file():
        raise BundleError(f"bundle {root} is not signed ({SIGNATURE} missing)",
                          "sign it with edgemed sign, or load without require_signature")
    try:
        record = json.loads(sig_path.read_text())
        signed = dict(record["files"])
        signature = base64.b64decode(record["signature"], validate=True)
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"bundle {root}: {SIGNATURE} is malformed ({exc})", "re-sign the bundle") from exc
    current = bundle_files(root)
    gained = sorted(set(current) - set(signed))
    lost = sorted(set(signed) - set(current))
    changed = sorted(k for k in set(signed) & set(current) if signed[k] != current[k])
    if gained or lost or changed:
        parts = [f"{label}: {', '.join(names)}" for label, names in
                 (("changed", changed), ("added", gained), ("removed", lost)) if names]
        raise BundleError(f"bundle {root} differs from what was signed ({'; '.join(parts)})",
                          "refusing it; get the bundle again from its signer")
    key = load_key(public_key, private=False)
    try:
        key.verify(signature, _payload(signed))
    except invalid as exc:
        raise BundleError(f"bundle {root}: signature does not match the public key {public_key}",
                          "the bundle was signed by someone else or altered; refusing it") from exc
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return fingerprint(raw)
