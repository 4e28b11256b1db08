"""Ed25519 keys as standard PEM files (``cryptography``): made, read and fingerprinted in one place for bundle
signatures (:mod:`edgemed.signing`), site certifications (:mod:`edgemed.certification`) and fleet roles."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .errors import InputError


def crypto():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise InputError("bundle signing needs the cryptography package", "pip install 'edgemed[sign]'") from exc
    return serialization, ed25519, InvalidSignature


def fingerprint(public_bytes: bytes) -> str:
    return hashlib.sha256(public_bytes).hexdigest()[:16]


def generate_keypair(private_path: Path) -> Path:
    serialization, ed25519, _ = crypto()
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_path = private_path.with_suffix(".pub")
    public_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo))
    return public_path


def load_key(path: Path, private: bool):
    serialization, ed25519, _ = crypto()
    try:
        data = Path(path).read_bytes()
        key = (serialization.load_pem_private_key(data, password=None) if private
               else serialization.load_pem_public_key(data))
    except (OSError, ValueError, TypeError) as exc:
        kind = "private" if private else "public"
        raise InputError(f"{path}: not a readable PEM {kind} key ({exc})", "pass the key edgemed keygen wrote") from exc
    want = ed25519.Ed25519PrivateKey if private else ed25519.Ed25519PublicKey
    if not isinstance(key, want):
        raise InputError(f"{path}: not an Ed25519 key", "generate one with edgemed keygen")
    return key
