"""The bundle: a directory whose manifest ``edgemed.json`` describes and hashes every file.

Reading treats the manifest as untrusted data: it is parsed as JSON only, every path it names
must stay inside the bundle, and every listed file must match its SHA-256 and size before any
backend sees it. Writing happens in a temporary sibling directory renamed into place, so a
crash or a failed check never leaves a half-written bundle where a scanner could load it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from .errors import BundleError
from .hashing import sha256_file
from .manifest import Artifact, FileRecord, Manifest
from .owned_dirs import OWNER, make_owned, remove_abandoned
from .preprocess import Preprocessor
from .preprocessors import make_preprocessor

MANIFEST = "edgemed.json"
REFERENCE = "reference.npz"
REPORT = "report.json"
MAX_MANIFEST_BYTES = 4 << 20


def read_manifest_file(root: Path, name: str, what: str, made_by: str) -> bytes:
    """The bytes of a folder's manifest (a bundle's, an ensemble's), refused when missing or larger than any
    manifest edgemed writes (a huge file is hostile or not ours), before any parsing."""
    path = root / name
    if not path.is_file():
        raise BundleError(f"{what} {root}: {name} is missing", f"pass the folder {made_by} wrote (-o)")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{what} {root}: {name} is larger than {MAX_MANIFEST_BYTES} bytes",
                          f"refusing it; rebuild the {what}")
    return path.read_bytes()


def _safe_member(root: Path, name: Any, what: str) -> Path:
    if not isinstance(name, str) or not name or "\\" in name or "\x00" in name:
        raise BundleError(f"bundle {root}: {what} has an invalid file name {name!r}", "rebuild the bundle")
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts or name.startswith("~"):
        raise BundleError(f"bundle {root}: {what} names {name!r}, outside the bundle",
                          "refusing it; rebuild the bundle with edgemed convert")
    path = root / pure
    try:
        resolved = path.resolve(strict=False)
    except OSError as exc:
        raise BundleError(f"bundle {root}: cannot resolve {name!r} ({exc})", "rebuild the bundle") from exc
    if root.resolve() not in resolved.parents:
        raise BundleError(f"bundle {root}: {name!r} resolves outside the bundle (symlink?)",
                          "refusing it; rebuild the bundle with edgemed convert")
    return path


class Bundle:
    """A verified, read-only view of a bundle directory and its typed manifest, with the certifications of its
    artifacts that this opening trusts (:mod:`edgemed.certification`)."""

    def __init__(self, path: Path, manifest: Manifest) -> None:
        self.path = path
        self.manifest = manifest
        self.certifications: list = []  # edgemed.certification.Trusted
        self.certification_notes: list[str] = []

    @classmethod
    def open(cls, path: str | Path, verify: bool = True, require_signature: str | Path | None = None,
             certifiers: Sequence[str | Path] = ()) -> Bundle:
        root = Path(path)
        if not root.is_dir():
            raise BundleError(f"bundle {root}: not a directory", "pass the folder edgemed convert wrote (-o)")
        text = read_manifest_file(root, MANIFEST, "bundle", "edgemed convert")
        manifest = Manifest.from_json(text, f"bundle {root}: {MANIFEST}")
        bundle = cls(root, manifest)
        for where, record in manifest.listed_files():
            _safe_member(root, record.file, f"{where}.file")
        if verify:
            bundle.verify_files()
        from .certification import trusted

        bundle.certifications, bundle.certification_notes = trusted(
            root, bundle.manifest_sha256(), Path(require_signature) if require_signature else None,
            [Path(c) for c in certifiers])
        return bundle

    def verify_files(self) -> None:
        for where, entry in self.manifest.listed_files():
            path = _safe_member(self.path, entry.file, f"{where}.file")
            try:
                size = path.stat().st_size if path.is_file() else None
            except OSError as exc:  # e.g. a name the file system refuses
                raise BundleError(f"bundle {self.path}: {where}.file cannot be read ({exc.strerror})",
                                  "copy the bundle again or rebuild it") from exc
            if size is None:
                raise BundleError(f"bundle {self.path}: {entry.file} ({where}.file) is missing",
                                  "copy the whole bundle folder again")
            if size != entry.bytes:
                raise BundleError(
                    f"bundle {self.path}: {entry.file} is {size} bytes, the manifest says {entry.bytes} "
                    f"({where}.bytes: truncated or changed)",
                    "copy the bundle again or rebuild it",
                )
            if sha256_file(path) != entry.sha256:
                raise BundleError(f"bundle {self.path}: {entry.file} does not match its SHA-256 ({where}.sha256: "
                                  "changed or corrupt)", "copy the bundle again or rebuild it")

    def manifest_sha256(self) -> str:
        return sha256_file(self.path / MANIFEST)

    # -- accessors -------------------------------------------------------------------------
    @property
    def task(self) -> str:
        return self.manifest.model.task

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.model.labels)

    @property
    def name(self) -> str:
        return self.manifest.model.name

    @property
    def artifacts(self) -> list[Artifact]:
        """The artifacts with the verdicts that hold on the CPU once trusted certifications count."""
        return self.artifacts_on(lambda backend: "cpu")

    def artifacts_on(self, device_of: Callable[[str], str]) -> list[Artifact]:
        """The artifacts with the verdicts that hold where each backend runs (``device_of(backend)``): the
        certifications measured on that device count."""
        from .certification import effective

        return effective(self.manifest.artifacts, self.certifications, device_of)

    def file(self, name: str) -> Path:
        return _safe_member(self.path, name, "a file")

    def preprocessor(self) -> Preprocessor:
        spec = self.manifest.input
        return make_preprocessor(self.manifest.preprocess, spec.shape, spec.layout)

    def reference(self) -> dict[str, np.ndarray]:
        path = self.file(REFERENCE)
        if not path.is_file():
            raise BundleError(f"bundle {self.path}: {REFERENCE} is missing", "rebuild the bundle")
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except Exception as exc:  # noqa: BLE001 - object arrays (pickles) are refused, never loaded; a damaged
            # archive raises zipfile's BadZipFile, zlib's error, numpy's ValueError/EOFError... (found by fuzzing)
            raise BundleError(f"bundle {self.path}: {REFERENCE} is not a plain array archive "
                              f"({type(exc).__name__}: {str(exc)[:160]})", "rebuild the bundle") from exc

    def report(self) -> dict:
        path = self.file(REPORT)
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def file_record(root: Path, name: str) -> FileRecord:
    path = root / name
    return FileRecord(file=name, sha256=sha256_file(path), bytes=path.stat().st_size)


def recover_interrupted(target: Path) -> list[str]:
    """Clean up after a convert that was killed (SIGKILL, power loss) before it could clean up itself.

    A ``.NAME.partial-*`` directory whose writer is gone is removed. A ``.NAME.old-*`` directory is
    the previous bundle caught between the two renames of a replacement: if no bundle stands at
    ``target`` it is put back, otherwise it is removed. Returns what was done, for the log.
    """
    parent = target.parent if str(target.parent) else Path(".")
    done = []
    if not parent.is_dir():
        return done
    done += [f"removed interrupted {name}" for name in remove_abandoned(parent, f".{target.name}.partial-*")]
    for old in sorted(parent.glob(f".{target.name}.old-*")):
        if not target.exists() and (old / "edgemed.json").is_file():
            os.rename(old, target)
            done.append(f"restored the previous bundle from {old.name}")
        else:
            shutil.rmtree(old, ignore_errors=True)
    return done


@contextlib.contextmanager
def atomic_directory(target: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces ``target`` by renames.

    On any exception (including KeyboardInterrupt) the temporary directory is removed and the
    previous ``target``, if any, is untouched. A process killed outright leaves only hidden
    ``.partial``/``.old`` siblings, which the next conversion to the same target repairs.
    """
    target = Path(target)
    recover_interrupted(target)
    if target.exists() and not force:
        raise BundleError(f"{target} already exists", "pass --force to replace it, or choose another -o")
    if target.exists() and not target.is_dir():
        raise BundleError(f"{target} exists and is not a directory", "choose another -o")
    parent = target.parent if str(target.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    tmp = make_owned(f".{target.name}.partial-", parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; a bundle is meant to be shared like any folder
    try:
        yield tmp
        (tmp / OWNER).unlink()
        for p in tmp.rglob("*"):
            if p.is_file():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=parent))
            os.rmdir(old)
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
