"""The device's TUF client: which bundles the repository offers, and downloads verified by signed metadata.

Everything is python-tuf's ``ngclient.Updater``: it walks root versions one by one from the trust anchor
the device was provisioned with (key rotation), refuses metadata that is expired (freeze attack), older than
what this device has already seen (rollback attack), or not signed by the threshold of keys root names
(wrong key), and checks each download's length and hashes against the signed targets metadata (tampered or
truncated files). This module maps each refusal to one line that says what the server did.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, TargetFile, Targets
from tuf.ngclient import Updater

from ..errors import EdgemedError, OptionError
from .versions import parse_version


class UpdateRefused(EdgemedError):
    """The repository's metadata or a download failed verification, or the repository cannot be reached."""


_FIX = "the device keeps serving its current version; check the repository (or its mirror) and retry"


def refusal(exc: BaseException, url: str) -> UpdateRefused:
    """One line naming what the server did wrong, from a TUF exception."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    kinds = [
        (tuf_errors.ExpiredMetadataError, "expired metadata from the repository (a frozen or stale server)"),
        (tuf_errors.EqualVersionNumberError, "the repository changed metadata without a new version"),
        (tuf_errors.BadVersionNumberError, "the repository offers older metadata than this device has already "
                                           "seen (a rollback or replay)"),
        (tuf_errors.UnsignedMetadataError, "metadata not signed by the keys this device trusts"),
        (tuf_errors.LengthOrHashMismatchError, "a download does not match its signed length and hashes "
                                               "(tampered or truncated)"),
        (tuf_errors.DownloadLengthMismatchError, "a download has another length than signed (truncated or "
                                                 "padded)"),
        (tuf_errors.SlowRetrievalError, f"the repository at {url} does not answer, or sends too slowly (timeout)"),
        (tuf_errors.DownloadHTTPError, f"the repository at {url} answered with an HTTP error"),
        (tuf_errors.DownloadError, f"cannot download from {url}"),
        (tuf_errors.RepositoryError, "the repository's metadata does not verify"),
    ]
    if isinstance(exc, urllib3.exceptions.HTTPError):
        return UpdateRefused(f"update refused: cannot reach the repository at {url}: {text}", _FIX)
    for kind, what in kinds:
        if isinstance(exc, kind):
            return UpdateRefused(f"update refused: {what}: {text}", _FIX)
    return UpdateRefused(f"update refused: {type(exc).__name__}: {text}", _FIX)


@dataclass(frozen=True)
class Offer:
    """A bundle the repository offers, as its signed targets metadata describes it."""

    target: TargetFile
    info: dict[str, Any]  # the custom "edgemed" metadata written at publish

    @property
    def model(self) -> str:
        return self.info["model"]

    @property
    def version(self) -> str:
        return self.info["version"]


class Client:
    """One update session against a repository URL (``URL/metadata/``, ``URL/targets/``)."""

    def __init__(self, url: str, metadata_dir: Path, trust_anchor: bytes, download_dir: Path) -> None:
        if not url.startswith(("http://", "https://")):
            raise OptionError(f"--repo {url!r} is not an http:// or https:// URL",
                              "serve the repository folder with a web server and give its URL")
        self.url = url.rstrip("/") + "/"
        self.metadata_dir = Path(metadata_dir)
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        self.download_dir = Path(download_dir)
        try:
            self.updater = Updater(str(self.metadata_dir), self.url + "metadata/", str(self.download_dir),
                                   self.url + "targets/", bootstrap=trust_anchor)
        except (tuf_errors.RepositoryError, ValueError) as exc:
            raise UpdateRefused(f"the device's trusted root metadata does not load ({exc})",
                                "provision the device again with the repository's root.json (--root)") from exc

    def refresh(self) -> None:
        try:
            self.updater.refresh()
        except (tuf_errors.RepositoryError, tuf_errors.DownloadError, urllib3.exceptions.HTTPError) as exc:
            raise refusal(exc, self.url) from exc

    def offers(self, model: str | None = None) -> list[Offer]:
        """Every edgemed bundle the verified targets metadata lists (of ``model``), oldest first."""
        self.refresh()
        # The updater has verified and stored targets.json; its entry for each name is read back through
        # get_targetinfo, the API that answers from verified metadata only.
        listed = Metadata[Targets].from_file(str(self.metadata_dir / "targets.json")).signed.targets
        out = []
        for name in listed:
            info = self.updater.get_targetinfo(name)
            custom = (info.custom or {}).get("edgemed") if info is not None else None
            if not isinstance(custom, dict) or not isinstance(custom.get("model"), str):
                continue
            if model is None or custom["model"] == model:
                parse_version(custom.get("version"))
                out.append(Offer(info, custom))
        return sorted(out, key=lambda o: parse_version(o.version))

    def download(self, offer: Offer, dest: Path) -> Path:
        """Download one target to ``dest``; the updater checks length and hashes before writing it."""
        try:
            return Path(self.updater.download_target(offer.target, str(dest)))
        except (tuf_errors.RepositoryError, tuf_errors.DownloadError, urllib3.exceptions.HTTPError) as exc:
            raise refusal(exc, self.url) from exc
