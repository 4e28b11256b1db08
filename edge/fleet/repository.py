"""The publishing side: a TUF repository on disk that any static web server can serve.

TUF (The Update Framework) splits trust over four roles, each with its own keys, threshold and expiry:
*root* says which keys may sign for every role (kept offline; rotating any key is a new root version
signed by the old and the new root keys); *targets* signs each published file's length, hashes and our
custom metadata (the publisher's key); *snapshot* and *timestamp* pin the current versions of all metadata
and expire quickly, so a server that stops publishing, or replays old files, is noticed by the devices
(these two keys are "online": the server may hold them). Metadata is written with python-tuf's Metadata
API through its ``Repository`` editing abstraction; this module only stores files and picks signers.
Imported only by the fleet commands: it needs ``tuf`` (``pip install "edgemed[fleet]"``).

Layout (consistent snapshots, so a publish never changes a file a device may be reading, except
``timestamp.json``, which is replaced atomically last)::

    REPO/metadata/1.root.json, 2.root.json, ..., root.json (the newest), N.targets.json, N.snapshot.json,
                  timestamp.json
    REPO/targets/<model>/<sha256>.<version>.tar   (one bundle archive per published version)
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import os
import re
import tempfile
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer
from tuf.repository import Repository

from .. import __version__
from ..atomic import write_atomic
from ..bundle import Bundle
from ..errors import EdgemedError, InputError, OptionError
from .archive import pack
from .keys import public_key, signer
from .versions import parse_version

METADATA = "metadata"
TARGETS = "targets"
ROLES = ("root", "targets", "snapshot", "timestamp")
# Root is re-signed rarely and offline; targets at each publish; snapshot and timestamp by the server's
# refresh (`edgemed repo refresh`, e.g. daily from cron): a device refuses metadata past its expiry, so a
# frozen server is noticed within a day.
DEFAULT_EXPIRY = {"root": timedelta(days=365), "targets": timedelta(days=180), "snapshot": timedelta(days=30),
                  "timestamp": timedelta(days=1)}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class RepositoryError(EdgemedError):
    """The repository on disk cannot be used as asked (missing, keys that cannot sign, a version taken)."""


def parse_expiry(items: tuple[str, ...] | list[str]) -> dict[str, timedelta]:
    """'timestamp=1d', 'snapshot=12h' -> {role: timedelta}."""
    out = {}
    for item in items:
        role, _, text = item.partition("=")
        m = _DURATION.match(text.strip())
        if role.strip() not in ROLES or not m or int(m.group(1)) == 0:
            raise OptionError(f"--expires {item!r} does not parse",
                              "write ROLE=DURATION with a role of root, targets, snapshot, timestamp and a "
                              "duration such as 90d, 12h, 30m")
        out[role.strip()] = timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    return out


def _new(role: str) -> Metadata:
    signed = {"root": Root, "targets": Targets, "snapshot": Snapshot, "timestamp": Timestamp}[role](version=1)
    signed.version = 0  # the first close() makes it version 1
    return Metadata(signed)


class FileRepository(Repository):
    """A TUF repository in a folder, signing with whichever given keys root lists for each role."""

    def __init__(self, path: str | Path, keys: list[Path] = (), expiry: dict[str, timedelta] | None = None,
                 create: bool = False) -> None:
        self.path = Path(path)
        self.meta = self.path / METADATA
        self.signers = [signer(k) for k in keys]
        self.expiry = {**DEFAULT_EXPIRY, **(expiry or {})}
        self._cache: dict[str, Metadata] = {}
        if not create and not (self.meta / "root.json").is_file():
            raise RepositoryError(f"{self.path}: no TUF repository here ({METADATA}/root.json is missing)",
                                  "create it with edgemed repo init")

    def _read(self, name: str) -> Metadata | None:
        if not (self.meta / name).is_file():
            return None
        try:
            return Metadata.from_file(str(self.meta / name))
        except Exception as exc:  # noqa: BLE001 - a damaged file is named, never a traceback
            raise RepositoryError(f"{self.meta / name}: not readable TUF metadata ({exc})",
                                  "restore the repository from its backup") from exc

    def open(self, role: str) -> Metadata:
        """The role's current metadata (a copy), found by following timestamp -> snapshot -> targets."""
        if role not in self._cache:
            md = None
            if role in ("root", "timestamp"):
                md = self._read(f"{role}.json")
            elif role == "snapshot":
                ts = self.open("timestamp")
                md = self._read(f"{ts.signed.snapshot_meta.version}.snapshot.json") if ts.signed.version else None
            elif role == "targets":
                snap = self.open("snapshot")
                meta = snap.signed.meta.get("targets.json")
                md = self._read(f"{meta.version}.targets.json") if snap.signed.version and meta else None
            self._cache[role] = md if md is not None else _new(role)
        return copy.deepcopy(self._cache[role])  # a copy: edits go through close()

    def close(self, role: str, md: Metadata) -> None:
        """Bump version and expiry, sign with the role's keys among those given, check the threshold, store."""
        previous = self._cache.get("root") if role == "root" else None
        prior = previous.signed if previous is not None and previous.signed.version else None
        md.signed.version += 1
        md.signed.expires = (datetime.now(timezone.utc) + self.expiry[role]).replace(microsecond=0)
        root = md.signed if role == "root" else self.root()
        wanted = set(root.roles[role].keyids)
        if prior is not None:
            wanted |= set(prior.roles["root"].keyids)  # a new root is signed by the old root keys too
        md.signatures.clear()
        for s in self.signers:
            if s.public_key.keyid in wanted:
                md.sign(s, append=True)
        if role == "root":
            ok = bool(root.get_root_verification_result(prior, md.signed_bytes, md.signatures))
        else:
            ok = bool(root.get_verification_result(role, md.signed_bytes, md.signatures))
        if not ok:
            need = root.roles[role].threshold
            raise RepositoryError(f"the {role} role needs {need} signature(s) by its keys in root.json"
                                  + (" (and the previous root's)" if prior is not None else "")
                                  + f"; the keys given make {len(md.signatures)}",
                                  f"pass the {role} private key(s) with --key")
        data = md.to_bytes(JSONSerializer(compact=False))
        if role == "root":
            write_atomic(self.meta / f"{md.signed.version}.root.json", data)
            write_atomic(self.meta / "root.json", data)
        elif role == "timestamp":
            write_atomic(self.meta / "timestamp.json", data)
        else:
            write_atomic(self.meta / f"{md.signed.version}.{role}.json", data)
        self._cache[role] = md

    def check_signers(self, roles: tuple[str, ...]) -> None:
        """Refuse early when the given keys cannot meet a role's threshold (rather than after writing)."""
        root = self.root()
        for role in roles:
            have = sum(s.public_key.keyid in root.roles[role].keyids for s in self.signers)
            if have < root.roles[role].threshold:
                raise RepositoryError(f"the {role} role needs {root.roles[role].threshold} signature(s) by its keys in "
                                      f"root.json; the keys given make {have}",
                                      f"pass the {role} private key(s) with --key")

    @property
    def targets_infos(self) -> dict[str, MetaFile]:
        return {"targets.json": MetaFile(self.open("targets").signed.version)}

    @property
    def snapshot_info(self) -> MetaFile:
        return MetaFile(self.open("snapshot").signed.version)


def open_repository(path: str | Path, keys: list[Path] = (), expiry: dict[str, timedelta] | None = None,
                    create: bool = False) -> FileRepository:
    return FileRepository(path, keys, expiry, create)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One writer at a time (released by the kernel if the writer dies)."""
    path.mkdir(parents=True, exist_ok=True)
    with open(path / ".edgemed-repo.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def init_repository(path: str | Path, root_keys: list[Path], role_keys: dict[str, list[Path]],
                    thresholds: dict[str, int] | None = None, expiry: dict[str, timedelta] | None = None) -> Path:
    """Create root.json v1 naming each role's public keys; signed by the root private keys.

    The other roles' metadata appears with the first publish (their private keys are not needed here)."""
    path = Path(path)
    if (path / METADATA / "root.json").exists():
        raise RepositoryError(f"{path}: a TUF repository is already here",
                              "rotate keys with edgemed repo rotate; never re-create a root devices trust")
    thresholds = {r: 1 for r in ROLES} | (thresholds or {})
    missing = [r for r in ROLES[1:] if not role_keys.get(r)]
    if missing or not root_keys:
        raise OptionError(f"no key given for the {', '.join((['root'] if not root_keys else []) + missing)} role(s)",
                          "pass --root-key, --targets-key, --snapshot-key and --timestamp-key")
    with _locked(path):
        repo = open_repository(path, root_keys, expiry, create=True)
        with repo.edit_root() as root:
            for role, files in [("root", root_keys), *role_keys.items()]:
                for f in files:
                    root.add_key(public_key(f), role)
                count = len(root.roles[role].keyids)
                if not 1 <= thresholds[role] <= count:
                    raise OptionError(f"threshold {thresholds[role]} for {role} with {count} key(s)",
                                      "a threshold is between 1 and the role's number of keys")
                root.roles[role].threshold = thresholds[role]
    (path / TARGETS).mkdir(exist_ok=True)
    return path / METADATA / "root.json"


def target_name(model: str, version: str) -> str:
    return f"{model}/{version}.tar"


def published(repo) -> dict[str, Any]:
    """Target path -> TargetFile of every bundle the repository's current targets role lists."""
    return dict(repo.targets().targets)


def publish(bundle: str | Path, repo_path: str | Path, keys: list[Path], version: str,
            expiry: dict[str, timedelta] | None = None, allow_older: bool = False):
    """Add a verified bundle as a TUF target and sign new targets, snapshot and timestamp metadata.

    Returns the TargetFile. A model version can be published once, and (unless ``allow_older``) only above
    the newest version of the same model already published."""
    b = Bundle.open(bundle)  # never publish a bundle whose files do not match its own manifest
    parse_version(version)
    if not _NAME.match(b.name):
        raise InputError(f"bundle model name {b.name!r} cannot name a target",
                         "convert with --name using letters, digits, '.', '_' or '-'")
    path = Path(repo_path)
    with _locked(path):
        repo = open_repository(path, keys, expiry)
        repo.check_signers(("targets", "snapshot", "timestamp"))  # before a byte is written
        name = target_name(b.name, version)
        mine = {k: v for k, v in published(repo).items() if (v.custom or {}).get("edgemed", {}).get("model") == b.name}
        if name in mine:
            raise RepositoryError(f"{b.name} {version} is already published in {path}",
                                  "publish the new bundle under a higher --version")
        newest = max((v.custom["edgemed"]["version"] for v in mine.values()), key=parse_version, default=None)
        if newest is not None and parse_version(version) <= parse_version(newest) and not allow_older:
            raise RepositoryError(f"{b.name} {version} is not above the newest published version {newest}",
                                  "publish under a higher --version (devices refuse downgrades)")
        folder = path / TARGETS / b.name
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".publish-", suffix=".tar", dir=folder)
        os.close(fd)
        try:
            pack(b.path, Path(tmp))
            target = TargetFile.from_file(name, tmp, ["sha256"])
            target.unrecognized_fields["custom"] = {"edgemed": custom_metadata(b, version)}
            os.replace(tmp, folder / f"{target.hashes['sha256']}.{version}.tar")
        finally:
            Path(tmp).unlink(missing_ok=True)
        # Order matters for a device fetching meanwhile: the target file, then targets, snapshot and last the
        # timestamp that points at them (replaced atomically); before it, devices see the previous state.
        with repo.edit_targets() as targets:
            targets.targets[name] = target
        repo.do_snapshot()
        repo.do_timestamp()
    return target


def custom_metadata(b: Bundle, version: str) -> dict[str, Any]:
    """What a device (and a person reading targets.json) learns about a target before downloading it."""
    m = b.manifest
    return {"model": b.name, "version": version, "task": b.task, "labels": b.labels,
            "input": {"shape": list(m.input.shape), "layout": m.input.layout, "kind": m.model.input_kind},
            "verdicts": {a.key: a.verdict for a in b.artifacts}, "manifest_sha256": b.manifest_sha256(),
            "edgemed_version": __version__,
            "published": datetime.now(timezone.utc).replace(microsecond=0).isoformat()}


def refresh(repo_path: str | Path, keys: list[Path], expiry: dict[str, timedelta] | None = None) -> int:
    """New snapshot and timestamp versions with fresh expiry (the server's periodic job). Returns the
    timestamp version."""
    path = Path(repo_path)
    with _locked(path):
        repo = open_repository(path, keys, expiry)
        repo.do_snapshot(force=True)
        repo.do_timestamp(force=True)
        return repo.timestamp().version


def rotate(repo_path: str | Path, role: str, add: list[Path], remove: list[Path], keys: list[Path],
           threshold: int | None = None, expiry: dict[str, timedelta] | None = None) -> int:
    """Replace keys of ``role`` in a new root version, then re-sign the metadata that role signs.

    The new root is signed by the previous root's keys (threshold) and, for a root rotation, by the new
    ones too: devices walk the root versions one by one and accept each only so. ``keys`` must hold those
    root keys and, for targets/snapshot/timestamp, the new keys of every role that is re-signed.
    Returns the new root version."""
    if role not in ROLES:
        raise OptionError(f"--role {role!r}", f"use one of {', '.join(ROLES)}")
    path = Path(repo_path)
    with _locked(path):
        repo = open_repository(path, keys, expiry)
        with repo.edit_root() as root:
            for f in remove:
                keyid = public_key(f).keyid
                if keyid not in root.roles[role].keyids:
                    raise RepositoryError(f"{f} is not a {role} key of this repository", "name a key root lists")
                root.revoke_key(keyid, role)
            for f in add:
                root.add_key(public_key(f), role)
            if threshold is not None:
                root.roles[role].threshold = threshold
            count = len(root.roles[role].keyids)
            if not 1 <= root.roles[role].threshold <= count:
                raise OptionError(f"{role} would have {count} key(s) for a threshold of {root.roles[role].threshold}",
                                  "add a key or lower --threshold")
        version = repo.root().version
        if role == "targets":
            with repo.edit_targets():
                pass
        if role in ("targets", "snapshot"):
            repo.do_snapshot(force=True)
        if role != "root":
            repo.do_timestamp(force=True)
        return version
