"""edgemed's Ed25519 PEM keys as TUF signers and keys, so one key format serves bundles and the repository.

``edgemed keygen`` writes a PKCS#8 private key (mode 0600) and its SubjectPublicKeyInfo ``.pub``; both are
what securesystemslib's ``CryptoSigner`` and ``SSlibKey.from_crypto`` take, so a repository role key is made
the same way as a bundle signing key and nothing converts between formats.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..signing_keys import load_key


def _is_private(path: Path) -> bool:
    try:
        head = Path(path).read_bytes()[:64]
    except OSError as exc:
        raise InputError(f"{path}: cannot read the key ({exc.strerror})", "pass a key edgemed keygen wrote") from exc
    return b"PRIVATE KEY" in head


def public_key(path: str | Path):
    """The TUF public key (``SSlibKey``) of a .pub file, or of a private key file's public half."""
    from securesystemslib.signer import SSlibKey

    path = Path(path)
    key = load_key(path, private=_is_private(path))
    return SSlibKey.from_crypto(key.public_key() if _is_private(path) else key)


def signer(path: str | Path):
    """A TUF signer (``CryptoSigner``) for a private key file."""
    from securesystemslib.signer import CryptoSigner

    path = Path(path)
    if not _is_private(path):
        raise InputError(f"{path}: a public key cannot sign", "pass the private key (the file without .pub)")
    return CryptoSigner(load_key(path, private=True))
